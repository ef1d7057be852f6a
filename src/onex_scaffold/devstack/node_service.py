"""Our own nodes (the registry, the pipeline's stage nodes) as services of the stack.

Each runs from its folder under nodes/, pointed at the stack's Kafka and Consul, listens on
loopback, and answers when its ``/health`` says ready.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import urllib.error
import urllib.request
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import yaml

from onex_scaffold._template import template_root
from onex_scaffold.devstack.base import Service, StartContext
from onex_scaffold.devstack.consul import CONSUL_VAR
from onex_scaffold.devstack.errors import MissingToolError
from onex_scaffold.devstack.kafka import KAFKA_VAR
from onex_scaffold.devstack.ports import choose_port

#: Runs our nodes (registry, stage nodes) from another folder of nodes: a clone being upgraded.
NODES_DIR_VAR = "ONEX_DEV_NODES_DIR"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


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


def node_version(source: Path) -> str:
    """The template version a node folder was rendered from (its answers file)."""
    try:
        answers = yaml.safe_load((source / ".copier-answers.yml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return "unknown"
    return str(answers.get("version", "unknown"))


def probe_node(url: str) -> str | None:
    """None when the node's /health answers 200 (ready); otherwise its reasons."""
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


def node_launch_env(ctx: StartContext, who: str, port: int, instance_id: str) -> dict[str, str]:
    """The environment one of our nodes starts with: this process's, the stack's addresses
    (KAFKA_BOOTSTRAP_SERVERS, CONSUL_HTTP_ADDR, ...), and its own address, on loopback.
    `who` names the node in the error when Kafka or Consul is missing."""
    for var in (KAFKA_VAR, CONSUL_VAR):
        if var not in ctx.env:
            raise MissingToolError(f"{who} needs {var}; start kafka and consul first")
    env = dict(os.environ)
    env.update(ctx.env)
    env.update(
        SERVICE_HOST="127.0.0.1",
        # Loopback only: the node's own default (all interfaces) suits containers, not a
        # development machine.
        SERVICE_BIND_HOST="127.0.0.1",
        SERVICE_PORT=str(port),
        INSTANCE_ID=instance_id,
        PYTHONUNBUFFERED="1",
    )
    return env


class NodeService(Service):
    """One of our nodes: `prepare` finds its folder and the Python packages it imports."""

    #: Modules the node imports beyond the standard library.
    needs: ClassVar[tuple[str, ...]]
    #: The error when some are missing; {missing} and {python} are filled in.
    missing_packages: ClassVar[str]
    _source: Path | None = None
    #: The folder this member ran from before (its state.json record), if it did.
    ran_from: str | None = None

    @abstractmethod
    def find_source(self) -> Path:
        """The node's folder (see :func:`node_source`)."""

    @property
    def source(self) -> Path:
        assert self._source is not None, "prepare() first"
        return self._source

    def prepare(self, ctx: StartContext) -> None:
        self._source = self._previous_folder() or self.find_source()
        missing = [name for name in self.needs if importlib.util.find_spec(name) is None]
        if missing:
            raise MissingToolError(
                self.missing_packages.format(missing=", ".join(missing), python=sys.executable)
            )

    def _previous_folder(self) -> Path | None:
        """The folder it ran from before, while that still holds the node and
        $ONEX_DEV_NODES_DIR names no other: a restart runs the same node (with its new code),
        even from a shell that lacks the variable `up` had."""
        if self.ran_from is None or os.environ.get(NODES_DIR_VAR):
            return None
        folder = Path(self.ran_from)
        return folder if (folder / "start_node.py").is_file() else None

    def claim_http_port(self, ctx: StartContext) -> int:
        """Its HTTP port: the one it had before when still free, else a free one."""
        previous = ctx.previous.ports.get("http") if ctx.previous else None
        port = choose_port(self.name, None, previous, ctx.used_ports, "")
        ctx.used_ports.add(port)
        return port
