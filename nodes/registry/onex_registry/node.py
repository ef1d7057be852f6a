"""NodeRegistryEffect: wires the answers given at generation time into the runtime.

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
    node_name="Registry",
    node_type="effect",
    service_name="onex-registry",
    domain="discovery",
    version="0.1.0",
    description="The ONEX registry: keeps Consul in step with the nodes that announce themselves on the event bus.",
    actions=(
        "list_nodes",
        "reconcile",
    ),
    tags=(
        "registry",
        "consul",
        "discovery",
    ),
    http_port=8095,
    kafka_bootstrap_servers="127.0.0.1:9092",
    kafka_environment="dev",
)


class NodeRegistryEffect(
    EffectNode,
):
    """The onex-registry effect node: runs commands through ``handlers.Handlers``."""

    def __init__(self, settings: NodeSettings | None = None) -> None:
        super().__init__(
            ANSWERS,
            handlers.Handlers(),
            settings,
            use_postgres=False,
        )
