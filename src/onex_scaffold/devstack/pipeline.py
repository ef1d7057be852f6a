"""The seven stage nodes of the generation pipeline (nodes/<stage>) as services of the stack.

Each runs ``python -m onex_scaffold.pipeline.launch nodes/<stage>`` (which creates the
pipeline's topics, then runs the node's ``start_node.py``) after Kafka and Consul answer,
and answers when its ``/health`` says ready (announced, consumers running). The registry
puts them in Consul like any other node.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from onex_scaffold.devstack.base import LaunchPlan, Service, StartContext
from onex_scaffold.devstack.consul import CONSUL_VAR
from onex_scaffold.devstack.errors import MissingToolError
from onex_scaffold.devstack.kafka import KAFKA_VAR
from onex_scaffold.devstack.ports import choose_port
from onex_scaffold.devstack.registry import node_source, probe_registry, registry_version
from onex_scaffold.devstack.state import ServiceRecord

#: Stage folder under nodes/ by service name of the stack (``pipeline-<folder>``).
STAGE_FOLDERS: tuple[str, ...] = (
    "prd-analyzer",
    "intelligence-gatherer",
    "contract-builder",
    "code-generator",
    "validator",
    "code-refiner",
    "file-writer",
)
SERVICE_PREFIX = "pipeline-"
PIPELINE_SERVICES: tuple[str, ...] = tuple(SERVICE_PREFIX + f for f in STAGE_FOLDERS)
INSTANCE_ID = "dev"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Modules the stages import beyond the standard library (the validator runs the tools).
_NEEDS = ("pydantic", "pydantic_settings", "confluent_kafka", "copier", "ruff", "mypy", "pytest")


def stage_source(folder: str) -> Path:
    """nodes/<folder> (see :func:`onex_scaffold.devstack.registry.node_source`)."""
    try:
        return node_source(folder)
    except MissingToolError as error:
        raise MissingToolError(f"{error}, or start the stack with --no-pipeline") from None


def url_var(folder: str) -> str:
    return f"ONEX_PIPELINE_{folder.upper().replace('-', '_')}_URL"


class PipelineStageService(Service):
    """One stage node, pointed at the stack's Kafka and Consul."""

    start_timeout_s = 90.0

    def __init__(self, name: str, instance_id: str | None = INSTANCE_ID) -> None:
        if not name.startswith(SERVICE_PREFIX) or name not in PIPELINE_SERVICES:
            raise ValueError(f"unknown pipeline service {name!r}")
        self.name = name  # type: ignore[misc]
        self.folder = name[len(SERVICE_PREFIX) :]
        #: A rolling restart starts the new instance beside the old one under another id
        #: (None: ``dev-<port>``, set by `plan`).
        self.instance_id = instance_id
        self._source: Path | None = None

    @property
    def service_name(self) -> str:
        """The stage node's SERVICE_NAME (its answers), as Consul and Kafka know it."""
        from onex_scaffold._answers import read_answers

        assert self._source is not None, "prepare() first"
        return str(read_answers(self._source)["service_name"])

    def prepare(self, ctx: StartContext) -> None:
        self._source = stage_source(self.folder)
        missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
        if missing:
            raise MissingToolError(
                f"the pipeline stages need the Python packages {', '.join(missing)} in "
                f"{sys.executable}: pip install 'onex-node-template[dev]', or --no-pipeline"
            )

    def plan(self, ctx: StartContext) -> LaunchPlan:
        assert self._source is not None, "prepare() first"
        previous = ctx.previous.ports.get("http") if ctx.previous else None
        port = choose_port(self.name, None, previous, ctx.used_ports, "")
        ctx.used_ports.add(port)
        if self.instance_id is None:
            self.instance_id = f"{INSTANCE_ID}-{port}"
        for var in (KAFKA_VAR, CONSUL_VAR):
            if var not in ctx.env:
                raise MissingToolError(f"{self.name} needs {var}; start kafka and consul first")
        env = dict(os.environ)
        env.update(ctx.env)
        env.update(
            SERVICE_HOST="127.0.0.1",
            # Like the registry: the dev stack listens on loopback only.
            SERVICE_BIND_HOST="127.0.0.1",
            SERVICE_PORT=str(port),
            INSTANCE_ID=self.instance_id,
            PYTHONUNBUFFERED="1",
            # A killed stage's partitions move to a live instance within seconds, not 45 s.
            KAFKA_SESSION_TIMEOUT_MS=os.environ.get("KAFKA_SESSION_TIMEOUT_MS", "6000"),
        )
        return LaunchPlan(
            argv=[sys.executable, "-m", "onex_scaffold.pipeline.launch", str(self._source)],
            ports={"http": port},
            provides={url_var(self.folder): f"http://127.0.0.1:{port}"},
            version=registry_version(self._source),
            kind="onex-pipeline-stage",
            cwd=self._source,
            env=env,
        )

    def probe(self, record: ServiceRecord) -> str | None:
        url = record.env.get(url_var(self.folder))
        if not url:
            return "no address recorded"
        return probe_registry(url)
