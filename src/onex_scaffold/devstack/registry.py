"""The ONEX registry (nodes/registry) as a service of the dev stack.

It is one of our own nodes, run with ``python start_node.py`` from its folder, after Kafka
and Consul answer. It answers when its ``/health`` says ready: topics exist, the view has
been rebuilt from the compacted introspection topic, and Consul has been reached.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from onex_scaffold._template import template_root
from onex_scaffold.devstack.base import LaunchPlan, Service, StartContext
from onex_scaffold.devstack.consul import CONSUL_VAR
from onex_scaffold.devstack.errors import MissingToolError
from onex_scaffold.devstack.kafka import KAFKA_VAR
from onex_scaffold.devstack.ports import choose_port
from onex_scaffold.devstack.state import ServiceRecord

REGISTRY_VAR = "ONEX_REGISTRY_URL"
#: The registry's allow-list of networks health endpoints may point at (see docs/security.md).
ALLOWED_NETWORKS_VAR = "REGISTRY_ALLOWED_NETWORKS"
DEV_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128"
INSTANCE_ID = "dev"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Modules the registry imports beyond the standard library.
_NEEDS = ("pydantic", "pydantic_settings", "confluent_kafka", "consul")


#: Runs our nodes (registry, stage nodes) from another folder of nodes: a clone being upgraded.
NODES_DIR_VAR = "ONEX_DEV_NODES_DIR"


def node_source(folder: str) -> Path:
    """One of our nodes, ``nodes/<folder>``: under $ONEX_DEV_NODES_DIR when set (and only
    there), else in the checkout, else the copy packaged in the wheel."""
    if os.environ.get(NODES_DIR_VAR):
        candidates = [Path(os.environ[NODES_DIR_VAR]).expanduser().resolve() / folder]
    else:
        candidates = [_PACKAGE_DIR / "_nodes" / folder]
        with contextlib.suppress(FileNotFoundError):  # no checkout: the packaged copy
            candidates.insert(0, template_root() / "nodes" / folder)
    for candidate in candidates:
        if (candidate / "start_node.py").is_file():
            return candidate
    raise MissingToolError(
        f"the node nodes/{folder} was not found ({', '.join(map(str, candidates))}); "
        f"reinstall onex-node-template or check {NODES_DIR_VAR}"
    )


def registry_source() -> Path:
    """nodes/registry (see :func:`node_source`)."""
    return node_source("registry")


def registry_version(source: Path) -> str:
    try:
        answers = yaml.safe_load((source / ".copier-answers.yml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return "unknown"
    return str(answers.get("version", "unknown"))


def probe_registry(url: str) -> str | None:
    """None when the registry's /health answers 200 (ready); otherwise its reasons."""
    health = url.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=2.0) as response:
            if response.status == 200:
                return None
            body = response.read()
    except urllib.error.HTTPError as error:
        body = error.read()
    except (urllib.error.URLError, OSError) as error:
        return f"GET {health} failed: {error}"
    try:
        reasons = json.loads(body).get("reasons") or []
    except (ValueError, AttributeError):
        reasons = []
    return f"not ready: {'; '.join(map(str, reasons)) or 'GET ' + health + ' not 200'}"


def consul_http_addr(root: str | Path | None = None) -> str | None:
    """CONSUL_HTTP_ADDR of the dev stack in ``root`` (default: $ONEX_DEV_ROOT or .), if up."""
    from onex_scaffold.devstack.stack import Stack

    folder = root if root is not None else os.environ.get("ONEX_DEV_ROOT", ".")
    try:
        return Stack(folder).env().get(CONSUL_VAR)
    except (OSError, ValueError):  # no stack here, or an unreadable state file
        return None


class RegistryService(Service):
    """``python start_node.py`` in nodes/registry, pointed at the stack's Kafka and Consul."""

    name = "registry"
    start_timeout_s = 60.0

    def __init__(self, index: int = 1, size: int = 1) -> None:
        # Several instances share one consumer group and write the same registrations to
        # Consul (idempotent); each has its own INSTANCE_ID and port.
        self.index = index
        self.size = size
        self._source: Path | None = None

    def prepare(self, ctx: StartContext) -> None:
        self._source = registry_source()
        missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
        if missing:
            raise MissingToolError(
                f"the registry needs the Python packages {', '.join(missing)} in "
                f"{sys.executable}: pip install onex-node-template"
            )

    def plan(self, ctx: StartContext) -> LaunchPlan:
        assert self._source is not None, "prepare() first"
        previous = ctx.previous.ports.get("http") if ctx.previous else None
        port = choose_port("registry", None, previous, ctx.used_ports, "")
        ctx.used_ports.add(port)
        env = dict(os.environ)
        env.update(ctx.env)  # KAFKA_BOOTSTRAP_SERVERS, CONSUL_HTTP_ADDR of this stack
        for var in (KAFKA_VAR, CONSUL_VAR):
            if var not in ctx.env:
                raise MissingToolError(f"the registry needs {var}; start kafka and consul first")
        env.update(
            SERVICE_HOST="127.0.0.1",
            # Loopback only: the node's own default (all interfaces) suits containers, not a
            # development machine.
            SERVICE_BIND_HOST="127.0.0.1",
            SERVICE_PORT=str(port),
            INSTANCE_ID=INSTANCE_ID if self.size == 1 else f"{INSTANCE_ID}-{self.index}",
            PYTHONUNBUFFERED="1",
        )
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
            version=registry_version(self._source),
            kind="onex-registry",
            cwd=self._source,
            env=env,
        )

    def probe(self, record: ServiceRecord) -> str | None:
        if "http" in record.ports:
            return probe_registry(f"http://127.0.0.1:{record.ports['http']}")
        return probe_registry(record.env[REGISTRY_VAR])
