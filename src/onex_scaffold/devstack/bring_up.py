"""`up`: adopt what already runs, check every tool and port, then start the rest in order.

A failed or interrupted `up` stops what it started itself and leaves what ran before running.
"""

from __future__ import annotations

from collections.abc import Mapping

from onex_scaffold.devstack import procs
from onex_scaffold.devstack.base import LaunchPlan, Service
from onex_scaffold.devstack.errors import DevStackError, ServiceStartError
from onex_scaffold.devstack.factory import ServiceFactory
from onex_scaffold.devstack.layout import members_of, service_of
from onex_scaffold.devstack.options import StackOptions, depends_on, layout_for, wanted_services
from onex_scaffold.devstack.runner import StackRunner, process_of
from onex_scaffold.devstack.state import StackState, merged_env


def bring_up(
    runner: StackRunner, options: StackOptions, environ: Mapping[str, str]
) -> dict[str, str]:
    """Start what is not running yet, wait until everything answers; returns the env."""
    runner.log_dir.mkdir(parents=True, exist_ok=True)
    with runner.locked():
        state = runner.store.load()
        layout = layout_for(options, state)
        if layout.kafka > 1 and (options.kafka or "apache") == "tansu":
            raise DevStackError(
                "--kafka-brokers above 1 needs Apache Kafka: Tansu has no replication; "
                "drop --kafka tansu"
            )
        # Keep records of services from an earlier `up` that are not asked for now: they
        # are still ours to stop.
        names = wanted_services(options, state, layout)
        _drop_other_layout(names, state)
        factory = ServiceFactory(options, layout)
        services = {name: factory.build(name, state.services.get(name)) for name in names}
        to_start: list[str] = []
        for name in names:
            if not _adopt(runner, name, services[name], state, options, environ):
                to_start.append(name)
        runner.store.save(state)
        # Check every tool and choose every port before starting anything, so a missing
        # java or a busy port leaves nothing behind.
        env = merged_env(state)
        plans: dict[str, LaunchPlan] = {}
        used_ports: set[int] = set()
        for name in to_start:
            ctx = runner.context(state, state.services.get(name))
            services[name].prepare(ctx)
        for name in to_start:
            ctx = runner.context(state, state.services.get(name))
            ctx.used_ports |= used_ports
            ctx.env = dict(env)
            plans[name] = services[name].plan(ctx)
            used_ports |= set(plans[name].ports.values())
            env.update(plans[name].provides)
        pending: dict[str, Service] = {}
        launched: list[str] = []
        try:
            for name in to_start:
                needs = depends_on(name)
                for other in list(pending):
                    if service_of(other) in needs:
                        runner.await_ready(other, pending.pop(other), state, options)
                runner.launch(name, plans[name], state)
                launched.append(name)
                pending[name] = services[name]
            for name, service in list(pending.items()):
                runner.await_ready(name, service, state, options)
        except BaseException as error:
            # A failed or interrupted `up` leaves nothing of its own running; services
            # that ran before it keep running.
            stopped = _stop_launched(runner, launched, state, factory)
            if isinstance(error, DevStackError) and stopped:
                error.args = (f"{error}; stopped what this `up` started: {stopped}",)
            raise
        return merged_env(state)


def _drop_other_layout(names: list[str], state: StackState) -> None:
    """Records of members another layout started: refuse while they run, else forget."""
    wanted = set(names)
    for name, record in list(state.services.items()):
        if name in wanted or service_of(name) not in {service_of(n) for n in names}:
            continue
        if record.external:
            continue  # replaced by our own members only when it stops answering
        if procs.recorded_alive(record.pid, record.start_ticks):
            service = service_of(name)
            running = sorted(n for n in state.services if service_of(n) == service)
            raise DevStackError(
                f"{service} runs as {', '.join(running)}; run `onex-node dev down` first "
                "to change how many members it has"
            )
        del state.services[name]


def _stop_launched(
    runner: StackRunner, launched: list[str], state: StackState, factory: ServiceFactory
) -> str:
    names: list[str] = []
    for name in reversed(launched):
        record = state.services.pop(name, None)
        info = process_of(record) if record is not None else None
        if record is None or info is None:
            continue
        procs.stop(info, runner.stop_signal(factory, name, record))
        names.append(name)
    runner.store.save(state)
    return ", ".join(names)


def _adopt(
    runner: StackRunner,
    name: str,
    service: Service,
    state: StackState,
    options: StackOptions,
    environ: Mapping[str, str],
) -> bool:
    """True when `name` already runs (ours and answering, or external): nothing to start."""
    record = state.services.get(name)
    if record is not None and record.external:
        if service.probe(record) is None:
            runner.log(f"{name}: using {record.env} (external)")
            return True
        del state.services[name]
        record = None
    info = process_of(record) if record is not None else None
    if record is not None and info is not None and procs.is_running(info):
        limit = options.timeout_s or service.start_timeout_s
        reason = service.wait_ready(record, lambda: procs.is_running(info), limit)
        if reason is not None:
            raise ServiceStartError(
                f"{name}: running as pid {record.pid} but not answering: {reason}; "
                f"log {record.log}; try `onex-node dev restart {name}`"
            )
        runner.log(f"{name}: already running (pid {record.pid})")
        wanted_kind = {"apache": "apache-kafka", "tansu": "tansu"}.get(options.kafka or "")
        if service_of(name) == "kafka" and wanted_kind and record.kind != wanted_kind:
            runner.log(
                f"kafka: kept the running {record.kind}; run `onex-node dev down` first "
                f"to switch to --kafka {options.kafka}"
            )
        return True
    # Only a service of one member can be replaced by one the environment names.
    single = members_of(service_of(name), 1) == [name]
    if options.use_environment and single:
        external = service.external(environ)
        if external is not None:
            runner.log(f"{name}: using {external.env} from the environment; starting none")
            state.services[name] = external
            return True
    return False
