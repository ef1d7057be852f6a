"""NodeFileWriterEffect: wires the answers given at generation time into the runtime.

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
    node_name="FileWriter",
    node_type="effect",
    service_name="file-writer",
    domain="generation",
    version="0.1.0",
    description="Stage 7 of the generation pipeline: installs the validated node atomically into the requested folder.",
    actions=("write_files",),
    tags=(
        "pipeline",
        "generation",
    ),
    http_port=8107,
    kafka_bootstrap_servers="127.0.0.1:9092",
    kafka_environment="dev",
)


class NodeFileWriterEffect(
    EffectNode,
):
    """The file-writer effect node: runs commands through ``handlers.Handlers``."""

    def __init__(self, settings: NodeSettings | None = None) -> None:
        super().__init__(
            ANSWERS,
            handlers.Handlers(),
            settings,
            use_postgres=False,
        )
