"""What every stack operation shares: the project folder's `.onex-dev/` files, one lock, and
starting one member's process and waiting until it answers.

`Stack` (stack.py) is this plus the operations: `up` (bring_up.py), `down` (teardown.py),
`status` (status.py) and one member at a time (member_control.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from onex_scaffold.devstack import procs
from onex_scaffold.devstack.base import LaunchPlan, LogFn, Service, StartContext
from onex_scaffold.devstack.errors import ServiceStartError, UnknownServiceError
from onex_scaffold.devstack.factory import ServiceFactory
from onex_scaffold.devstack.layout import layout_of, order_key
from onex_scaffold.devstack.options import SERVICE_ORDER, StackOptions
from onex_scaffold.devstack.state import ServiceRecord, StackState, StateStore, merged_env

DEV_DIR_NAME = ".onex-dev"


def process_of(record: ServiceRecord) -> procs.ProcessInfo | None:
    """The process `up` started for `record`; None for an external service or no PID."""
    if record.external or record.pid is None or record.start_ticks is None:
        return None
    return procs.ProcessInfo(pid=record.pid, start_ticks=record.start_ticks)


class StackRunner:
    """The local stack of one project folder; runtime files live in `<root>/.onex-dev/`."""

    def __init__(self, root: str | Path = ".", verbose: bool = False) -> None:
        self.root = Path(root).resolve()
        self.dev_dir = self.root / DEV_DIR_NAME
        self.log_dir = self.dev_dir / "logs"
        self.store = StateStore(self.dev_dir)
        self.log = LogFn(verbose)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One `up`/`down`/`stop`/`start`/`restart` at a time per project folder."""
        self.dev_dir.mkdir(parents=True, exist_ok=True)
        with (self.dev_dir / "lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def context(self, state: StackState, previous: ServiceRecord | None) -> StartContext:
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
    def order_key(member: str) -> tuple[int, int, str]:
        return order_key(member, SERVICE_ORDER)

    def factory(self, state: StackState, options: StackOptions | None = None) -> ServiceFactory:
        """Members as they run now (the layout of state.json)."""
        return ServiceFactory(options or StackOptions(), layout_of(list(state.services)))

    def stop_signal(
        self, factory: ServiceFactory, name: str, record: ServiceRecord
    ) -> signal.Signals:
        try:
            return factory.build(name, record).stop_signal
        except UnknownServiceError:
            return signal.SIGTERM

    def env(self) -> dict[str, str]:
        """The variables of the running stack (what `.onex-dev/env` holds)."""
        return merged_env(self.store.load())

    def launch(self, name: str, plan: LaunchPlan, state: StackState) -> None:
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
            cwd=str(plan.cwd),
        )
        # Saved before waiting: if waiting fails, `down` still knows the PID.
        self.store.save(state)

    def await_ready(
        self, name: str, service: Service, state: StackState, options: StackOptions
    ) -> None:
        record = state.services[name]
        info = process_of(record)
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
