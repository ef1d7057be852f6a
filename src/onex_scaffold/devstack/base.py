"""What a service of the stack is, and the context it starts in.

To add a service (the registry, for example): subclass `Service`, implement `prepare`, `plan`
and `probe`, and add it in `options.SERVICE_ORDER` and `factory.ServiceFactory.build`. Services
start in list order and each sees the variables of the ones before it in `StartContext.env`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from onex_scaffold.devstack.state import ServiceRecord


@dataclass
class StartContext:
    """Where and with what a service starts."""

    dev_dir: Path
    log_dir: Path
    env: dict[str, str]
    previous: ServiceRecord | None
    used_ports: set[int]
    log: LogFn
    #: Every member's record in state.json (a cluster member needs its peers' ports).
    records: dict[str, ServiceRecord] = field(default_factory=dict)


class LogFn:
    """Progress messages to the user (stderr in the CLI, silent in tests unless asked)."""

    def __init__(self, verbose: bool = True) -> None:
        self.verbose = verbose

    def __call__(self, message: str) -> None:
        if self.verbose:
            print(message, file=sys.stderr, flush=True)


@dataclass
class LaunchPlan:
    """The process to start and what it will provide once it answers."""

    argv: list[str]
    ports: dict[str, int]
    provides: dict[str, str]
    version: str
    kind: str
    cwd: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    user: str | None = None


class Service(ABC):
    """A process of the stack that `up` starts, `down` stops and `status` probes."""

    name: ClassVar[str]
    # The variable that, when it names a reachable instance, makes `up` use it and start none.
    external_var: ClassVar[str | None] = None
    start_timeout_s: ClassVar[float] = 60.0
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def external(self, environ: Mapping[str, str]) -> ServiceRecord | None:
        """A record for an instance already given in the environment, when it answers."""
        if self.external_var is None or not environ.get(self.external_var):
            return None
        value = environ[self.external_var]
        record = ServiceRecord(
            name=self.name, kind="external", env={self.external_var: value}, external=True
        )
        return record if self.probe(record) is None else None

    @abstractmethod
    def prepare(self, ctx: StartContext) -> None:
        """Check the tools it needs and fetch/build what is missing. Raise MissingToolError."""

    @abstractmethod
    def plan(self, ctx: StartContext) -> LaunchPlan:
        """Choose ports, write configuration, return the command to run."""

    @abstractmethod
    def probe(self, record: ServiceRecord) -> str | None:
        """None when the service answers a real request; otherwise why not (one line)."""

    def probe_before(self, record: ServiceRecord, deadline: float) -> str | None:
        """`probe`, for services whose probe can block: answer by `deadline` (monotonic)."""
        return self.probe(record)

    def after_ready(self, record: ServiceRecord) -> None:  # noqa: B027 - optional hook
        """Work to do once the service answers (create a database, ...)."""

    def wait_ready(
        self, record: ServiceRecord, alive: Callable[[], bool], timeout_s: float
    ) -> str | None:
        """Probe until it answers, the process dies or the limit passes. None = ready."""
        deadline = time.monotonic() + timeout_s
        reason: str | None = "not probed"
        delay = 0.1
        while time.monotonic() < deadline:
            reason = self.probe_before(record, deadline)
            if reason is None:
                return None
            if not alive():
                return f"the process exited ({reason})"
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        return f"no answer within {timeout_s:g} s ({reason})"
