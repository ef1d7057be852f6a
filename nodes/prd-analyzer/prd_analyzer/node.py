"""NodePRDAnalyzerCompute: wires the answers given at generation time into the runtime.

Template-owned: `copier update` refreshes this file. Business logic lives in
handlers.py; every deployment setting can be overridden by environment variables
(runtime/config.py).
"""

from __future__ import annotations

from . import handlers
from .runtime.base import NodeAnswers
from .runtime.compute import ComputeNode
from .runtime.config import NodeSettings

ANSWERS = NodeAnswers(
    node_name="PRDAnalyzer",
    node_type="compute",
    service_name="prd-analyzer",
    domain="generation",
    version="0.1.0",
    description="Stage 1 of the generation pipeline: turns a PRD (Markdown, parsed_data or prose) into parsed_data.",
    actions=("analyze_prd",),
    tags=(
        "pipeline",
        "generation",
    ),
    http_port=8101,
    kafka_bootstrap_servers="127.0.0.1:9092",
    kafka_environment="dev",
)


class NodePRDAnalyzerCompute(
    ComputeNode,
):
    """The prd-analyzer compute node: ``handlers.execute_compute`` in-process and over HTTP."""

    def __init__(self, settings: NodeSettings | None = None) -> None:
        super().__init__(
            ANSWERS,
            handlers.execute_compute,
            settings,
            event_bus_enabled=True,
        )
