"""One member at a time: `stop` (or kill), `start`, `restart`, and `roll` (a pipeline stage
replaced without a gap). A stopped member keeps its record, so it comes back on its ports."""

from __future__ import annotations

import signal

from onex_scaffold.devstack import procs, rolling
from onex_scaffold.devstack.consul import CONSUL_VAR
from onex_scaffold.devstack.errors import DevStackError, UnknownServiceError
from onex_scaffold.devstack.kafka import KAFKA_VAR
from onex_scaffold.devstack.layout import service_of
from onex_scaffold.devstack.options import SERVICE_ORDER, StackOptions, depends_on
from onex_scaffold.devstack.pipeline import PIPELINE_SERVICES, PipelineStageService
from onex_scaffold.devstack.runner import StackRunner, process_of
from onex_scaffold.devstack.state import ServiceRecord, StackState, merged_env


def our_member(runner: StackRunner, state: StackState, name: str) -> ServiceRecord:
    """The record of member `name`, which this stack started (not an external service)."""
    record = state.services.get(name)
    if record is None:
        known = ", ".join(sorted(state.services, key=runner.order_key)) or "none"
        raise UnknownServiceError(
            f"no member {name!r} in this stack (members: {known}); "
            "`onex-node dev up` starts the stack"
        )
    if record.external:
        raise DevStackError(f"{name} is external ({record.env}); manage it where it runs")
    return record


def stop_member(runner: StackRunner, name: str, kill: bool = False) -> bool:
    """Stop one member (SIGKILL with `kill`), keeping its record so `start` brings it back
    on the same ports. True when it was running."""
    with runner.locked():
        state = runner.store.load()
        record = our_member(runner, state, name)
        info = process_of(record)
        if info is None:
            return False
        sig = signal.SIGKILL if kill else runner.stop_signal(runner.factory(state), name, record)
        stopped = procs.stop(info, sig)
        runner.log(f"{name}: {'killed' if kill else 'stopped'} (pid {record.pid})")
        return stopped


def start_member(runner: StackRunner, name: str, options: StackOptions) -> dict[str, str]:
    """Start one stopped member on its recorded ports and wait until it answers."""
    with runner.locked():
        state = runner.store.load()
        record = our_member(runner, state, name)
        if procs.recorded_alive(record.pid, record.start_ticks):
            runner.log(f"{name}: already running (pid {record.pid})")
            return merged_env(state)
        _launch_member(runner, name, state, options)
        return merged_env(state)


def restart_member(runner: StackRunner, name: str, options: StackOptions) -> dict[str, str]:
    """Stop one member (if ours) and start it again on the same ports."""
    with runner.locked():
        state = runner.store.load()
        if name not in state.services and name not in SERVICE_ORDER:
            our_member(runner, state, name)  # raises: names the members there are
        record = state.services.get(name)
        if record is not None and record.external:
            raise DevStackError(f"{name} is external ({record.env}); restart it where it runs")
        info = process_of(record) if record is not None else None
        if record is not None and info is not None:
            sig = runner.stop_signal(runner.factory(state, options), name, record)
            procs.stop(info, sig)
            runner.log(f"{name}: stopped (pid {info.pid})")
        _launch_member(runner, name, state, options)
        return merged_env(state)


def roll_member(runner: StackRunner, name: str, options: StackOptions) -> None:
    """Replace one pipeline stage node with a new instance without a gap: start the new
    one beside it, wait until it is ready, passing in Consul and in the stage's consumer
    group, then stop the old one (see `devstack.rolling`)."""
    with runner.locked():
        state = runner.store.load()
        record = our_member(runner, state, name)
        if name not in PIPELINE_SERVICES:
            raise DevStackError(
                f"--rolling replaces pipeline stage nodes ({', '.join(PIPELINE_SERVICES)}); "
                f"restart {name} without it"
            )
        old = process_of(record)
        ctx = runner.context(state, None)  # a port of its own: both run for a while
        ctx.used_ports.update(record.ports.values())
        service = PipelineStageService(name, instance_id=None, ran_from=record.cwd)
        service.prepare(ctx)
        plan = service.plan(ctx)
        assert service.instance_id is not None
        group = plan.env.get("KAFKA_CONSUMER_GROUP") or service.service_name
        servers, consul = ctx.env[KAFKA_VAR], ctx.env[CONSUL_VAR]
        watch = rolling.ConsumerGroup(servers, group)
        members_before, _ = watch.members()
        observable = watch.reports_members()
        if not observable:
            runner.log(
                f"{name}: this broker does not report group members; not waiting for the join"
            )
        limit = options.timeout_s or service.start_timeout_s
        runner.launch(name, plan, state)  # the record now names the new instance
        try:
            runner.await_ready(name, service, state, options)
            rolling.wait_passing(consul, service.service_name, service.instance_id, limit)
            if observable:
                watch.wait_joined(members_before + 1, limit)
        except DevStackError:
            launched = state.services.get(name)
            new = process_of(launched) if launched is not None else None
            if new is not None and launched is not record:
                procs.stop(new, signal.SIGTERM)
            state.services[name] = record  # the old instance goes on serving
            runner.store.save(state)
            raise
        if old is not None:
            procs.stop(old, signal.SIGTERM)
            runner.log(f"{name}: old instance stopped (pid {record.pid})")


def _launch_member(
    runner: StackRunner, name: str, state: StackState, options: StackOptions
) -> None:
    factory = runner.factory(state, options)
    record = state.services.get(name)
    service = factory.build(name, record)
    service.prepare(runner.context(state, record))
    for dependency in depends_on(name):
        if not any(service_of(n) == dependency for n in state.services):
            raise DevStackError(f"{name} needs {dependency}; run `onex-node dev up` first")
    plan = service.plan(runner.context(state, record))
    runner.launch(name, plan, state)
    runner.await_ready(name, service, state, options)
