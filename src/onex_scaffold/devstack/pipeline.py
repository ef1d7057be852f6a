"""The seven stage nodes of the generation pipeline (nodes/<stage>) as services of the stack.

Each runs ``python -m onex_scaffold.pipeline.launch nodes/<stage>`` (which creates the
pipeline's topics, then runs the node's ``start_node.py``) after Kafka and Consul answer,
and answers when its ``/health`` says ready (announced, consumers running). The registry
puts them in Consul like any other node.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from onex_scaffold.devstack.base import LaunchPlan, StartContext
from onex_scaffold.devstack.errors import MissingToolError
from onex_scaffold.devstack.node_service import (
    NodeService,
    node_launch_env,
    node_source,
    node_version,
    probe_node,
)
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


def stage_source(folder: str) -> Path:
    """nodes/<folder> (see :func:`onex_scaffold.devstack.node_service.node_source`)."""
    try:
        return node_source(folder)
    except MissingToolError as error:
        raise MissingToolError(f"{error}, or start the stack with --no-pipeline") from None


def url_var(folder: str) -> str:
    return f"ONEX_PIPELINE_{folder.upper().replace('-', '_')}_URL"


class PipelineStageService(NodeService):
    """One stage node, pointed at the stack's Kafka and Consul."""

    start_timeout_s = 90.0
    # Beyond the standard library (the validator runs the tools).
    needs = ("pydantic", "pydantic_settings", "confluent_kafka", "copier", "ruff", "mypy", "pytest")
    missing_packages = (
        "the pipeline stages need the Python packages {missing} in {python}: "
        "pip install 'onex-node-template[dev]', or --no-pipeline"
    )

    def __init__(
        self, name: str, instance_id: str | None = INSTANCE_ID, *, ran_from: str | None = None
    ) -> None:
        if not name.startswith(SERVICE_PREFIX) or name not in PIPELINE_SERVICES:
            raise ValueError(f"unknown pipeline service {name!r}")
        self.name = name  # type: ignore[misc]
        self.folder = name[len(SERVICE_PREFIX) :]
        #: A rolling restart starts the new instance beside the old one under another id
        #: (None: ``dev-<port>``, set by `plan`).
        self.instance_id = instance_id
        self.ran_from = ran_from
        self._source: Path | None = None

    @property
    def service_name(self) -> str:
        """The stage node's SERVICE_NAME (its answers), as Consul and Kafka know it."""
        from onex_scaffold._answers import read_answers

        return str(read_answers(self.source)["service_name"])

    def find_source(self) -> Path:
        return stage_source(self.folder)

    def plan(self, ctx: StartContext) -> LaunchPlan:
        source = self.source
        port = self.claim_http_port(ctx)
        if self.instance_id is None:
            self.instance_id = f"{INSTANCE_ID}-{port}"
        env = node_launch_env(ctx, self.name, port, self.instance_id)
        # A killed stage's partitions move to a live instance within seconds, not 45 s.
        env["KAFKA_SESSION_TIMEOUT_MS"] = os.environ.get("KAFKA_SESSION_TIMEOUT_MS", "6000")
        return LaunchPlan(
            argv=[sys.executable, "-m", "onex_scaffold.pipeline.launch", str(source)],
            ports={"http": port},
            provides={url_var(self.folder): f"http://127.0.0.1:{port}"},
            version=node_version(source),
            kind="onex-pipeline-stage",
            cwd=source,
            env=env,
        )

    def probe(self, record: ServiceRecord) -> str | None:
        url = record.env.get(url_var(self.folder))
        if not url:
            return "no address recorded"
        return probe_node(url)
