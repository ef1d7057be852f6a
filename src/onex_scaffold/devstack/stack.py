"""The stack as a whole: `Stack(root).up(...)`, `.down()`, `.status()`, and one member at a
time: `.stop(member)`, `.start(member)`, `.restart(member)`.

A service runs as one member (`kafka`) or as a cluster of members (`kafka-1`..`kafka-3`, see
layout.py). Adding a service (the pipeline, for example) takes three steps here: its name in
`layout.SERVICE_ORDER`, a branch in `ServiceFactory.build`, and (if optional) a flag in
`StackOptions` read by `wanted_services`. `depends_on` names the services whose members must
answer before it starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from onex_scaffold.devstack import procs, rolling
from onex_scaffold.devstack.base import LaunchPlan, LogFn, Service, StartContext
from onex_scaffold.devstack.consul import CONSUL_VAR, ConsulCluster, ConsulService, consul_leader
from onex_scaffold.devstack.errors import DevStackError, ServiceStartError, UnknownServiceError
from onex_scaffold.devstack.kafka import KAFKA_VAR, KafkaCluster, KafkaService
from onex_scaffold.devstack.layout import (
    Layout,
    index_of,
    layout_of,
    members_of,
    order_key,
    service_of,
)
from onex_scaffold.devstack.pipeline import PIPELINE_SERVICES, PipelineStageService
from onex_scaffold.devstack.postgres import PostgresService
from onex_scaffold.devstack.registry import RegistryService
from onex_scaffold.devstack.state import (
    CreatedFolders,
    ServiceRecord,
    StackState,
    StateStore,
    merged_env,
)
from onex_scaffold.devstack.tansu import TansuService

DEV_DIR_NAME = ".onex-dev"
#: Services in start order; `down` stops them in reverse.
SERVICE_ORDER: tuple[str, ...] = ("kafka", "consul", "postgres", "registry", *PIPELINE_SERVICES)
# Data folders of the services inside .onex-dev (what `down --purge` deletes there).
DATA_FOLDERS = ("kafka", "consul", "postgres")
#: Most members a clustered service may have.
MAX_SIZE = {"kafka": 5, "consul": 5, "registry": 3}

KafkaKind = Literal["apache", "tansu"]


@dataclass
class StackOptions:
    """What `up` should run. `kafka=None` keeps what ran before (Apache Kafka the first time)."""

    kafka: KafkaKind | None = None
    postgres: bool = False
    # The ONEX registry (nodes/registry): Kafka introspection -> Consul.
    registry: bool = True
    # The seven stage nodes of the generation pipeline (nodes/<stage>).
    pipeline: bool = True
    kafka_port: int | None = None
    consul_port: int | None = None
    postgres_port: int | None = None
    # Use KAFKA_BOOTSTRAP_SERVERS / CONSUL_HTTP_ADDR / DATABASE_URL when they name a live service.
    use_environment: bool = True
    # Per-service start limit in seconds; None = each service's own default.
    timeout_s: float | None = None
    # Cluster sizes; None keeps what ran before (one of each the first time).
    kafka_brokers: int | None = None
    consul_servers: int | None = None
    registries: int | None = None


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


class ServiceFactory:
    """Builds the members of one stack; members of a cluster share one cluster object."""

    def __init__(self, options: StackOptions, layout: Layout) -> None:
        self.options = options
        self.layout = layout
        self.kafka_cluster = KafkaCluster(layout.kafka, options.kafka_port)
        self.consul_cluster = (
            ConsulCluster(layout.consul, options.consul_port) if layout.consul > 1 else None
        )

    def build(self, name: str, previous: ServiceRecord | None) -> Service:
        """The service object for member `name`, honouring what ran before where options
        leave it open."""
        service, index = service_of(name), index_of(name)
        if name not in members_of(service, self.layout.size(service)):
            raise UnknownServiceError(
                f"unknown member {name!r}; this stack has: {', '.join(self.all_members())}"
            )
        if service == "kafka":
            kind = self.options.kafka
            if kind is None:
                kind = "tansu" if previous is not None and previous.kind == "tansu" else "apache"
            if kind == "tansu":
                return TansuService(port=self.options.kafka_port)
            return KafkaService(
                port=self.options.kafka_port, cluster=self.kafka_cluster, index=index
            )
        if service == "consul":
            return ConsulService(
                port=self.options.consul_port, cluster=self.consul_cluster, index=index
            )
        if name == "postgres":
            return PostgresService(port=self.options.postgres_port)
        if service == "registry":
            return RegistryService(index=index, size=self.layout.registry)
        if name in PIPELINE_SERVICES:
            return PipelineStageService(name)
        raise UnknownServiceError(
            f"unknown service {name!r}; known services: {', '.join(SERVICE_ORDER)}"
        )

    def all_members(self) -> list[str]:
        names: list[str] = []
        for service in SERVICE_ORDER:
            names += members_of(service, self.layout.size(service))
        return names


def build_service(
    name: str, options: StackOptions, previous: ServiceRecord | None, layout: Layout | None = None
) -> Service:
    """The service object for member `name` (see `ServiceFactory.build`)."""
    return ServiceFactory(options, layout or Layout()).build(name, previous)


def layout_for(options: StackOptions, state: StackState) -> Layout:
    """Cluster sizes for `up`: as asked, else as the members in state.json, else one each."""
    before = layout_of(list(state.services))
    sizes: dict[str, int] = {}
    for service, asked, flag in (
        ("kafka", options.kafka_brokers, "--kafka-brokers"),
        ("consul", options.consul_servers, "--consul-servers"),
        ("registry", options.registries, "--registries"),
    ):
        size = asked if asked is not None else before.size(service)
        if not 1 <= size <= MAX_SIZE[service]:
            raise DevStackError(f"{flag} must be between 1 and {MAX_SIZE[service]}, got {size}")
        sizes[service] = size
    if sizes["consul"] % 2 == 0:
        raise DevStackError(
            f"--consul-servers must be odd (1, 3 or 5), got {sizes['consul']}: an even raft "
            "cluster tolerates no more failures than the odd one below it"
        )
    return Layout(**sizes)


def wanted_services(
    options: StackOptions, state: StackState, layout: Layout | None = None
) -> list[str]:
    """Members `up` brings up: the always-on ones, the optional ones asked for or already up."""
    layout = layout or Layout()
    present = {service_of(name) for name in state.services}
    wanted = {"kafka", "consul"}
    if options.postgres or "postgres" in present:
        wanted.add("postgres")
    if options.registry or "registry" in present:
        wanted.add("registry")
    for name in PIPELINE_SERVICES:
        if options.pipeline or name in present:
            wanted.add(name)
    names: list[str] = []
    for service in SERVICE_ORDER:
        if service in wanted:
            names += members_of(service, layout.size(service))
    return names


def depends_on(name: str) -> tuple[str, ...]:
    """Services whose members must answer before `name` starts (Kafka, Consul, PostgreSQL
    need none)."""
    service = service_of(name)
    return ("kafka", "consul") if service == "registry" or service in PIPELINE_SERVICES else ()


def _info(record: ServiceRecord) -> procs.ProcessInfo | None:
    if record.external or record.pid is None or record.start_ticks is None:
        return None
    return procs.ProcessInfo(pid=record.pid, start_ticks=record.start_ticks)


class Stack:
    """The local stack of one project folder; runtime files live in `<root>/.onex-dev/`."""

    def __init__(self, root: str | Path = ".", verbose: bool = False) -> None:
        self.root = Path(root).resolve()
        self.dev_dir = self.root / DEV_DIR_NAME
        self.log_dir = self.dev_dir / "logs"
        self.store = StateStore(self.dev_dir)
        self.log = LogFn(verbose)

    # -- helpers ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up`/`down`/`stop`/`start`/`restart` at a time per project folder."""
        self.dev_dir.mkdir(parents=True, exist_ok=True)
        with (self.dev_dir / "lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _context(self, state: StackState, previous: ServiceRecord | None) -> StartContext:
        used: set[int] = set()
        for record in state.services.values():
            # The service's own previous ports stay eligible: a restart keeps its address.
            if not record.external and (previous is None or record.name != previous.name):
                used.update(record.ports.values())
        return StartContext(
            dev_dir=self.dev_dir,
            log_dir=self.log_dir,
            env=merged_env(state),
            previous=previous,
            used_ports=used,
            log=self.log,
            records=dict(state.services),
        )

    @staticmethod
    def _order_key(member: str) -> tuple[int, int, str]:
        return order_key(member, SERVICE_ORDER)

    def _factory(self, state: StackState, options: StackOptions | None = None) -> ServiceFactory:
        """Members as they run now (the layout of state.json)."""
        return ServiceFactory(options or StackOptions(), layout_of(list(state.services)))

    def _stop_signal(
        self, factory: ServiceFactory, name: str, record: ServiceRecord
    ) -> signal.Signals:
        try:
            return factory.build(name, record).stop_signal
        except UnknownServiceError:
            return signal.SIGTERM

    def env(self) -> dict[str, str]:
        """The variables of the running stack (what `.onex-dev/env` holds)."""
        return merged_env(self.store.load())

    # -- up ----------------------------------------------------------------------------------
    def up(
        self, options: StackOptions | None = None, environ: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Start what is not running yet, wait until everything answers; returns the env."""
        options = options or StackOptions()
        environ = os.environ if environ is None else environ
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            state = self.store.load()
            layout = layout_for(options, state)
            if layout.kafka > 1 and (options.kafka or "apache") == "tansu":
                raise DevStackError(
                    "--kafka-brokers above 1 needs Apache Kafka: Tansu has no replication; "
                    "drop --kafka tansu"
                )
            # Keep records of services from an earlier `up` that are not asked for now: they
            # are still ours to stop.
            names = wanted_services(options, state, layout)
            self._drop_other_layout(names, state)
            factory = ServiceFactory(options, layout)
            services = {name: factory.build(name, state.services.get(name)) for name in names}
            to_start: list[str] = []
            for name in names:
                if not self._adopt(name, services[name], state, options, environ):
                    to_start.append(name)
            self.store.save(state)
            # Check every tool and choose every port before starting anything, so a missing
            # java or a busy port leaves nothing behind.
            env = merged_env(state)
            plans: dict[str, LaunchPlan] = {}
            used_ports: set[int] = set()
            for name in to_start:
                ctx = self._context(state, state.services.get(name))
                services[name].prepare(ctx)
            for name in to_start:
                ctx = self._context(state, state.services.get(name))
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
                            self._await(other, pending.pop(other), state, options)
                    self._launch(name, plans[name], state)
                    launched.append(name)
                    pending[name] = services[name]
                for name, service in list(pending.items()):
                    self._await(name, service, state, options)
            except BaseException as error:
                # A failed or interrupted `up` leaves nothing of its own running; services
                # that ran before it keep running.
                stopped = self._stop_launched(launched, state, factory)
                if isinstance(error, DevStackError) and stopped:
                    error.args = (f"{error}; stopped what this `up` started: {stopped}",)
                raise
            return merged_env(state)

    def _drop_other_layout(self, names: list[str], state: StackState) -> None:
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
        self, launched: list[str], state: StackState, factory: ServiceFactory
    ) -> str:
        names: list[str] = []
        for name in reversed(launched):
            record = state.services.pop(name, None)
            info = _info(record) if record is not None else None
            if record is None or info is None:
                continue
            procs.stop(info, self._stop_signal(factory, name, record))
            names.append(name)
        self.store.save(state)
        return ", ".join(names)

    def _adopt(
        self,
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
                self.log(f"{name}: using {record.env} (external)")
                return True
            del state.services[name]
            record = None
        info = _info(record) if record is not None else None
        if record is not None and info is not None and procs.is_running(info):
            limit = options.timeout_s or service.start_timeout_s
            reason = service.wait_ready(record, lambda: procs.is_running(info), limit)
            if reason is not None:
                raise ServiceStartError(
                    f"{name}: running as pid {record.pid} but not answering: {reason}; "
                    f"log {record.log}; try `onex-node dev restart {name}`"
                )
            self.log(f"{name}: already running (pid {record.pid})")
            wanted_kind = {"apache": "apache-kafka", "tansu": "tansu"}.get(options.kafka or "")
            if service_of(name) == "kafka" and wanted_kind and record.kind != wanted_kind:
                self.log(
                    f"kafka: kept the running {record.kind}; run `onex-node dev down` first "
                    f"to switch to --kafka {options.kafka}"
                )
            return True
        # Only a service of one member can be replaced by one the environment names.
        single = members_of(service_of(name), 1) == [name]
        if options.use_environment and single:
            external = service.external(environ)
            if external is not None:
                self.log(f"{name}: using {external.env} from the environment; starting none")
                state.services[name] = external
                return True
        return False

    def _launch(self, name: str, plan: LaunchPlan, state: StackState) -> None:
        log_path = self.log_dir / f"{name}.log"
        self.log(f"{name}: starting {plan.kind} {plan.version} on {plan.ports}")
        info = procs.spawn(plan.argv, log_path, plan.env, plan.cwd, plan.user)
        state.services[name] = ServiceRecord(
            name=name,
            kind=plan.kind,
            version=plan.version,
            pid=info.pid,
            start_ticks=info.start_ticks,
            ports=plan.ports,
            env=plan.provides,
            log=str(log_path),
        )
        # Saved before waiting: if waiting fails, `down` still knows the PID.
        self.store.save(state)

    def _await(self, name: str, service: Service, state: StackState, options: StackOptions) -> None:
        record = state.services[name]
        info = _info(record)
        assert info is not None
        limit = options.timeout_s or service.start_timeout_s
        started = time.monotonic()
        reason = service.wait_ready(record, lambda: procs.is_running(info), limit)
        if reason is not None:
            # The log's tail from before the stop: why it did not answer, not how it shut down.
            log_tail = procs.tail(Path(record.log or ""), 5).replace("\n", " | ")
            procs.stop(info, service.stop_signal, grace_s=5.0)
            del state.services[name]
            self.store.save(state)
            raise ServiceStartError(
                f"{name} did not come up within {limit:g} s: {reason}; log: {record.log}"
                + (f" (last lines: {log_tail[-300:]})" if log_tail else "")
            )
        service.after_ready(record)
        self.log(f"{name}: answering after {time.monotonic() - started:.1f} s")

    # -- down --------------------------------------------------------------------------------
    def down(self, purge: bool = False) -> list[str]:
        """Stop exactly the processes `up` started; returns one line per member."""
        lines: list[str] = []
        with self._locked():
            state = self.store.load()
            factory = self._factory(state)
            for name in sorted(state.services, key=self._order_key, reverse=True):
                record = state.services[name]
                info = _info(record)
                if info is None:
                    lines.append(f"{name}: external ({record.env}), left running")
                    continue
                if procs.stop(info, self._stop_signal(factory, name, record)):
                    lines.append(f"{name}: stopped (pid {record.pid})")
                else:
                    lines.append(f"{name}: was not running")
            self.store.clear()
            if purge:
                lines.append(self._purge())
        return lines

    def _purge(self) -> str:
        """Delete the data `up` created: recorded folders, and the data folders in .onex-dev.

        Links are removed, never followed: the PostgreSQL cluster may live in a private temp
        folder that .onex-dev/postgres links to, and that folder is deleted only because
        created.json records it (and it is still a real folder of the recorded owner).
        """
        removed = CreatedFolders(self.dev_dir).purge()
        for sub in DATA_FOLDERS:
            path = self.dev_dir / sub
            if path.is_symlink():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
        outside = [p for p in removed if not Path(p).is_relative_to(self.dev_dir)]
        return f"removed the Kafka, Consul and PostgreSQL data under {self.dev_dir}" + (
            f" and {', '.join(outside)}" if outside else ""
        )

    # -- status ------------------------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        """What runs where, and whether it answers a real request now."""
        state = self.store.load()
        factory = self._factory(state)
        result: list[ServiceStatus] = []
        leader = self._consul_leader(state)
        for name in sorted(state.services, key=self._order_key):
            record = state.services[name]
            info = _info(record)
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
                ServiceStatus(
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
                    leader=is_leader,
                )
            )
        return result

    def _consul_leader(self, state: StackState) -> int | None:
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

    # -- one member --------------------------------------------------------------------------
    def _member(self, state: StackState, name: str) -> ServiceRecord:
        record = state.services.get(name)
        if record is None:
            known = ", ".join(sorted(state.services, key=self._order_key)) or "none"
            raise UnknownServiceError(
                f"no member {name!r} in this stack (members: {known}); "
                "`onex-node dev up` starts the stack"
            )
        if record.external:
            raise DevStackError(f"{name} is external ({record.env}); manage it where it runs")
        return record

    def stop(self, name: str, kill: bool = False) -> bool:
        """Stop one member (SIGKILL with `kill`), keeping its record so `start` brings it back
        on the same ports. True when it was running."""
        with self._locked():
            state = self.store.load()
            record = self._member(state, name)
            info = _info(record)
            if info is None:
                return False
            sig = signal.SIGKILL if kill else self._stop_signal(self._factory(state), name, record)
            stopped = procs.stop(info, sig)
            self.log(f"{name}: {'killed' if kill else 'stopped'} (pid {record.pid})")
            return stopped

    def start(self, name: str, options: StackOptions | None = None) -> dict[str, str]:
        """Start one stopped member on its recorded ports and wait until it answers."""
        options = options or StackOptions()
        with self._locked():
            state = self.store.load()
            record = self._member(state, name)
            if procs.recorded_alive(record.pid, record.start_ticks):
                self.log(f"{name}: already running (pid {record.pid})")
                return merged_env(state)
            self._start_member(name, state, options)
            return merged_env(state)

    def restart(self, name: str, options: StackOptions | None = None) -> dict[str, str]:
        """Stop one member (if ours) and start it again on the same ports."""
        options = options or StackOptions()
        with self._locked():
            state = self.store.load()
            if name not in state.services and name not in SERVICE_ORDER:
                self._member(state, name)  # raises: names the members there are
            record = state.services.get(name)
            if record is not None and record.external:
                raise DevStackError(f"{name} is external ({record.env}); restart it where it runs")
            info = _info(record) if record is not None else None
            if record is not None and info is not None:
                sig = self._stop_signal(self._factory(state, options), name, record)
                procs.stop(info, sig)
                self.log(f"{name}: stopped (pid {info.pid})")
            self._start_member(name, state, options)
            return merged_env(state)

    def roll(self, name: str, options: StackOptions | None = None) -> None:
        """Replace one pipeline stage node with a new instance without a gap: start the new
        one beside it, wait until it is ready, passing in Consul and in the stage's consumer
        group, then stop the old one (see `devstack.rolling`)."""
        options = options or StackOptions()
        with self._locked():
            state = self.store.load()
            record = self._member(state, name)
            if name not in PIPELINE_SERVICES:
                raise DevStackError(
                    f"--rolling replaces pipeline stage nodes ({', '.join(PIPELINE_SERVICES)}); "
                    f"restart {name} without it"
                )
            old = _info(record)
            ctx = self._context(state, None)  # a port of its own: both run for a while
            ctx.used_ports.update(record.ports.values())
            service = PipelineStageService(name, instance_id=None)
            service.prepare(ctx)
            plan = service.plan(ctx)
            assert service.instance_id is not None
            group = plan.env.get("KAFKA_CONSUMER_GROUP") or service.service_name
            servers, consul = ctx.env[KAFKA_VAR], ctx.env[CONSUL_VAR]
            watch = rolling.ConsumerGroup(servers, group)
            members_before, _ = watch.members()
            observable = watch.reports_members()
            if not observable:
                self.log(f"{name}: this broker does not report group members; not waiting "
                         "for the join")  # fmt: skip
            limit = options.timeout_s or service.start_timeout_s
            self._launch(name, plan, state)  # the record now names the new instance
            try:
                self._await(name, service, state, options)
                rolling.wait_passing(consul, service.service_name, service.instance_id, limit)
                if observable:
                    watch.wait_joined(members_before + 1, limit)
            except DevStackError:
                launched = state.services.get(name)
                new = _info(launched) if launched is not None else None
                if new is not None and launched is not record:
                    procs.stop(new, signal.SIGTERM)
                state.services[name] = record  # the old instance goes on serving
                self.store.save(state)
                raise
            if old is not None:
                procs.stop(old, signal.SIGTERM)
                self.log(f"{name}: old instance stopped (pid {record.pid})")

    def _start_member(self, name: str, state: StackState, options: StackOptions) -> None:
        factory = self._factory(state, options)
        record = state.services.get(name)
        service = factory.build(name, record)
        service.prepare(self._context(state, record))
        for dependency in depends_on(name):
            if not any(service_of(n) == dependency for n in state.services):
                raise DevStackError(f"{name} needs {dependency}; run `onex-node dev up` first")
        plan = service.plan(self._context(state, record))
        self._launch(name, plan, state)
        self._await(name, service, state, options)
