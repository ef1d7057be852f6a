"""NodeIntelligenceGathererEffect: wires the answers given at generation time into the runtime.

Template-owned: `copier update` refreshes this file. Business logic lives in
handlers.py; every deployment setting can be overridden by environment variables
(runtime/config.py).
"""

from __future__ import annotations

from . import handlers
from .runtime.base import NodeAnswers
from .runtime.config import NodeSettings
from .runtime.effect import EffectNode

ANSWERS = NodeAnswers(
    node_name="IntelligenceGatherer",
    node_type="effect",
    service_name="intelligence-gatherer",
    domain="generation",
    version="0.1.0",
    description="Stage 2 of the generation pipeline: asks Consul which services exist (same service, same domain, name clashes).",
    actions=("gather_intelligence",),
    tags=(
        "pipeline",
        "generation",
    ),
    http_port=8102,
    kafka_bootstrap_servers="127.0.0.1:9092",
    kafka_environment="dev",
)


class NodeIntelligenceGathererEffect(
    EffectNode,
):
    """The intelligence-gatherer effect node: runs commands through ``handlers.Handlers``."""

    def __init__(self, settings: NodeSettings | None = None) -> None:
        super().__init__(
            ANSWERS,
            handlers.Handlers(),
            settings,
            use_postgres=False,
        )
