"""`status`: what runs where, and whether it answers a real request now."""

from __future__ import annotations

from dataclasses import dataclass

from onex_scaffold.devstack import procs
from onex_scaffold.devstack.consul import consul_leader
from onex_scaffold.devstack.errors import DevStackError
from onex_scaffold.devstack.runner import StackRunner, process_of
from onex_scaffold.devstack.state import ServiceRecord, StackState


@dataclass(frozen=True)
class ServiceStatus:
    """One line of `status`."""

    name: str
    kind: str
    version: str | None
    pid: int | None
    running: bool
    answering: bool
    detail: str
    env: dict[str, str]
    ports: dict[str, int]
    log: str | None
    #: Consul servers: True for the raft leader, False for followers; None for other members.
    leader: bool | None = None

    @classmethod
    def of(
        cls,
        name: str,
        record: ServiceRecord,
        *,
        running: bool,
        answering: bool,
        detail: str,
        leader: bool | None,
    ) -> ServiceStatus:
        """The line of member `name`: what state.json records, and what was seen just now."""
        return cls(
            name=name,
            kind=record.kind,
            version=record.version,
            pid=record.pid,
            running=running,
            answering=answering,
            detail=detail,
            env=dict(record.env),
            ports=dict(record.ports),
            log=record.log,
            leader=leader,
        )


def stack_status(runner: StackRunner) -> list[ServiceStatus]:
    """What runs where, and whether it answers a real request now."""
    state = runner.store.load()
    factory = runner.factory(state)
    result: list[ServiceStatus] = []
    leader = consul_leader_port(state)
    for name in sorted(state.services, key=runner.order_key):
        record = state.services[name]
        info = process_of(record)
        running = record.external or (info is not None and procs.is_running(info))
        answering = False
        detail = "not running"
        if running:
            try:
                reason = factory.build(name, record).probe(record)
            except DevStackError as error:
                reason = str(error)
            answering = reason is None
            detail = "answering" if answering else reason or ""
        is_leader: bool | None = None
        if record.kind == "consul-server":
            is_leader = running and leader == record.ports.get("server")
            if is_leader:
                detail += " (raft leader)"
        result.append(
            ServiceStatus.of(
                name, record, running=running, answering=answering, detail=detail, leader=is_leader
            )
        )
    return result


def consul_leader_port(state: StackState) -> int | None:
    """Server port of the Consul raft leader, asked of the running members in turn."""
    for record in state.services.values():
        if record.kind not in ("consul-server", "consul-agent") or "http" not in record.ports:
            continue
        if not procs.recorded_alive(record.pid, record.start_ticks):
            continue
        leader = consul_leader(f"127.0.0.1:{record.ports['http']}", timeout_s=1.0)
        if leader:
            return int(leader.rpartition(":")[2])
    return None
