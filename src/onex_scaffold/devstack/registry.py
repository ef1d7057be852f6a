"""The ONEX registry (nodes/registry) as a service of the dev stack.

It is one of our own nodes, run with ``python start_node.py`` from its folder, after Kafka
and Consul answer. It answers when its ``/health`` says ready: topics exist, the view has
been rebuilt from the compacted introspection topic, and Consul has been reached.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from onex_scaffold.devstack.base import LaunchPlan, StartContext
from onex_scaffold.devstack.consul import CONSUL_VAR
from onex_scaffold.devstack.node_service import (
    NODES_DIR_VAR,
    NodeService,
    node_launch_env,
    node_source,
    node_version,
    probe_node,
)
from onex_scaffold.devstack.state import ServiceRecord

# The registry's names for the shared node helpers (tests and benchmarks probe it by them).
probe_registry = probe_node
registry_version = node_version

# Importable from here as before (tests, benchmarks and the pipeline's stages use them).
__all__ = [
    "ALLOWED_NETWORKS_VAR",
    "DEV_ALLOWED_NETWORKS",
    "NODES_DIR_VAR",
    "REGISTRY_VAR",
    "RegistryService",
    "consul_http_addr",
    "node_launch_env",
    "node_source",
    "probe_registry",
    "registry_source",
    "registry_version",
]

REGISTRY_VAR = "ONEX_REGISTRY_URL"
#: The registry's allow-list of networks health endpoints may point at (see docs/security.md).
ALLOWED_NETWORKS_VAR = "REGISTRY_ALLOWED_NETWORKS"
DEV_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128"
INSTANCE_ID = "dev"


def registry_source() -> Path:
    """nodes/registry (see :func:`node_source`)."""
    return node_source("registry")


def consul_http_addr(root: str | Path | None = None) -> str | None:
    """CONSUL_HTTP_ADDR of the dev stack in ``root`` (default: $ONEX_DEV_ROOT or .), if up."""
    from onex_scaffold.devstack.stack import Stack

    folder = root if root is not None else os.environ.get("ONEX_DEV_ROOT", ".")
    try:
        return Stack(folder).env().get(CONSUL_VAR)
    except (OSError, ValueError):  # no stack here, or an unreadable state file
        return None


class RegistryService(NodeService):
    """``python start_node.py`` in nodes/registry, pointed at the stack's Kafka and Consul."""

    name = "registry"
    start_timeout_s = 60.0
    needs = ("pydantic", "pydantic_settings", "confluent_kafka", "consul")
    missing_packages = (
        "the registry needs the Python packages {missing} in {python}: "
        "pip install onex-node-template"
    )

    def __init__(self, index: int = 1, size: int = 1, *, ran_from: str | None = None) -> None:
        # Several instances share one consumer group and write the same registrations to
        # Consul (idempotent); each has its own INSTANCE_ID and port.
        self.index = index
        self.size = size
        self.ran_from = ran_from
        self._source: Path | None = None

    def find_source(self) -> Path:
        return registry_source()

    def plan(self, ctx: StartContext) -> LaunchPlan:
        source = self.source
        port = self.claim_http_port(ctx)
        instance_id = INSTANCE_ID if self.size == 1 else f"{INSTANCE_ID}-{self.index}"
        env = node_launch_env(ctx, "the registry", port, instance_id)
        # Nodes of the dev stack run on this machine: health endpoints on loopback only
        # (an explicit REGISTRY_ALLOWED_NETWORKS in the environment wins, "" = any address).
        env.setdefault(ALLOWED_NETWORKS_VAR, DEV_ALLOWED_NETWORKS)
        url = f"http://127.0.0.1:{port}"
        # ONEX_REGISTRY_URL names the first instance; the others are ONEX_REGISTRY_URL_2, ...
        var = REGISTRY_VAR if self.index == 1 else f"{REGISTRY_VAR}_{self.index}"
        return LaunchPlan(
            argv=[sys.executable, "start_node.py"],
            ports={"http": port},
            provides={var: url},
            version=node_version(source),
            kind="onex-registry",
            cwd=source,
            env=env,
        )

    def probe(self, record: ServiceRecord) -> str | None:
        if "http" in record.ports:
            return probe_node(f"http://127.0.0.1:{record.ports['http']}")
        return probe_node(record.env[REGISTRY_VAR])
