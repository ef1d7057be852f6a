"""The stack as a whole: `Stack(root).up(...)`, `.down()`, `.status()`, `.restart(name)`.

Adding a service (the registry, for example) takes three lines here: its name in
`SERVICE_ORDER`, a branch in `build_service`, and (if optional) a flag in `StackOptions` read
by `wanted_services`. Its `depends_on` names the services that must answer before it starts.
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

from onex_scaffold.devstack import procs
from onex_scaffold.devstack.base import LaunchPlan, LogFn, Service, StartContext
from onex_scaffold.devstack.consul import ConsulService
from onex_scaffold.devstack.errors import DevStackError, ServiceStartError, UnknownServiceError
from onex_scaffold.devstack.kafka import KafkaService
from onex_scaffold.devstack.pipeline import PIPELINE_SERVICES, PipelineStageService
from onex_scaffold.devstack.postgres import PostgresService
from onex_scaffold.devstack.registry import RegistryService
from onex_scaffold.devstack.state import ServiceRecord, StackState, StateStore, merged_env
from onex_scaffold.devstack.tansu import TansuService

DEV_DIR_NAME = ".onex-dev"
SERVICE_ORDER: tuple[str, ...] = ("kafka", "consul", "postgres", "registry", *PIPELINE_SERVICES)

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


def build_service(name: str, options: StackOptions, previous: ServiceRecord | None) -> Service:
    """The service object for `name`, honouring what ran before when options leave it open."""
    if name == "kafka":
        kind = options.kafka
        if kind is None:
            kind = "tansu" if previous is not None and previous.kind == "tansu" else "apache"
        if kind == "tansu":
            return TansuService(port=options.kafka_port)
        return KafkaService(port=options.kafka_port)
    if name == "consul":
        return ConsulService(port=options.consul_port)
    if name == "postgres":
        return PostgresService(port=options.postgres_port)
    if name == "registry":
        return RegistryService()
    if name in PIPELINE_SERVICES:
        return PipelineStageService(name)
    raise UnknownServiceError(
        f"unknown service {name!r}; known services: {', '.join(SERVICE_ORDER)}"
    )


def wanted_services(options: StackOptions, state: StackState) -> list[str]:
    """Services `up` brings up: the always-on ones, the optional ones asked for or already up."""
    wanted = {"kafka", "consul"}
    if options.postgres or "postgres" in state.services:
        wanted.add("postgres")
    if options.registry or "registry" in state.services:
        wanted.add("registry")
    for name in PIPELINE_SERVICES:
        if options.pipeline or name in state.services:
            wanted.add(name)
    return [name for name in SERVICE_ORDER if name in wanted]


def depends_on(name: str) -> tuple[str, ...]:
    """Services that must answer before `name` starts (Kafka, Consul, PostgreSQL need none)."""
    return ("kafka", "consul") if name == "registry" or name in PIPELINE_SERVICES else ()


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
        """One `up`/`down`/`restart` at a time per project folder."""
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
        )

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
            # Keep records of services from an earlier `up` that are not asked for now: they
            # are still ours to stop.
            names = wanted_services(options, state)
            services = {
                name: build_service(name, options, state.services.get(name)) for name in names
            }
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
                    for dependency in depends_on(name):
                        if dependency in pending:
                            self._await(dependency, pending.pop(dependency), state, options)
                    self._launch(name, plans[name], state)
                    launched.append(name)
                    pending[name] = services[name]
                for name, service in list(pending.items()):
                    self._await(name, service, state, options)
            except BaseException as error:
                # A failed or interrupted `up` leaves nothing of its own running; services
                # that ran before it keep running.
                stopped = self._stop_launched(launched, state)
                if isinstance(error, DevStackError) and stopped:
                    error.args = (f"{error}; stopped what this `up` started: {stopped}",)
                raise
            return merged_env(state)

    def _stop_launched(self, launched: list[str], state: StackState) -> str:
        names: list[str] = []
        for name in reversed(launched):
            record = state.services.pop(name, None)
            info = _info(record) if record is not None else None
            if info is None:
                continue
            try:
                sig = build_service(name, StackOptions(), record).stop_signal
            except UnknownServiceError:
                sig = signal.SIGTERM
            procs.stop(info, sig)
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
            if name == "kafka" and wanted_kind and record.kind != wanted_kind:
                self.log(
                    f"kafka: kept the running {record.kind}; run `onex-node dev down` first "
                    f"to switch to --kafka {options.kafka}"
                )
            return True
        if options.use_environment:
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
        """Stop exactly the processes `up` started; returns one line per service."""
        lines: list[str] = []
        with self._locked():
            state = self.store.load()
            order = [n for n in reversed(SERVICE_ORDER) if n in state.services]
            order += [n for n in state.services if n not in order]
            for name in order:
                record = state.services[name]
                info = _info(record)
                if info is None:
                    lines.append(f"{name}: external ({record.env}), left running")
                    continue
                try:
                    sig = build_service(name, StackOptions(), record).stop_signal
                except UnknownServiceError:
                    sig = signal.SIGTERM
                if procs.stop(info, sig):
                    lines.append(f"{name}: stopped (pid {record.pid})")
                else:
                    lines.append(f"{name}: was not running")
            self.store.clear()
            if purge:
                for sub in ("kafka", "postgres"):
                    path = self.dev_dir / sub
                    if path.is_symlink():  # the PostgreSQL cluster may live in the temp dir
                        shutil.rmtree(path.resolve(), ignore_errors=True)
                        path.unlink()
                    else:
                        shutil.rmtree(path, ignore_errors=True)
                lines.append(f"removed the Kafka and PostgreSQL data under {self.dev_dir}")
        return lines

    # -- status ------------------------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        """What runs where, and whether it answers a real request now."""
        state = self.store.load()
        result: list[ServiceStatus] = []
        order = [n for n in SERVICE_ORDER if n in state.services]
        order += [n for n in state.services if n not in order]
        for name in order:
            record = state.services[name]
            info = _info(record)
            running = record.external or (info is not None and procs.is_running(info))
            answering = False
            detail = "not running"
            if running:
                try:
                    service = build_service(name, StackOptions(), record)
                    reason = service.probe(record)
                except DevStackError as error:
                    reason = str(error)
                answering = reason is None
                detail = "answering" if answering else reason or ""
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
                )
            )
        return result

    # -- restart -----------------------------------------------------------------------------
    def restart(self, name: str, options: StackOptions | None = None) -> dict[str, str]:
        """Stop one service (if ours) and start it again on the same ports."""
        options = options or StackOptions()
        if name not in SERVICE_ORDER:
            raise UnknownServiceError(
                f"unknown service {name!r}; known services: {', '.join(SERVICE_ORDER)}"
            )
        with self._locked():
            state = self.store.load()
            record = state.services.get(name)
            if record is not None and record.external:
                raise DevStackError(f"{name} is external ({record.env}); restart it where it runs")
            service = build_service(name, options, record)
            service.prepare(self._context(state, record))
            info = _info(record) if record is not None else None
            if info is not None:
                procs.stop(info, service.stop_signal)
                self.log(f"{name}: stopped (pid {info.pid})")
            for dependency in depends_on(name):
                if dependency not in state.services:
                    raise DevStackError(f"{name} needs {dependency}; run `onex-node dev up` first")
            plan = service.plan(self._context(state, state.services.get(name)))
            self._launch(name, plan, state)
            self._await(name, service, state, options)
            return merged_env(state)
