"""The stack as a whole: `Stack(root).up(...)`, `.down()`, `.status()`, and one member at a
time: `.stop(member)`, `.start(member)`, `.restart(member)`, `.roll(member)`.

A service runs as one member (`kafka`) or as a cluster of members (`kafka-1`..`kafka-3`, see
layout.py). Where each part lives:

- options.py: `StackOptions`, the cluster sizes and members `up` selects, `depends_on`
  (adding a service starts there);
- factory.py: the `Service` object that runs each member;
- runner.py: the `.onex-dev/` files, the lock, starting one process and waiting for it;
- bring_up.py, teardown.py, status.py, member_control.py: the operations below.

The names tests, benchmarks and the CLI import from here stay importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from onex_scaffold.devstack.bring_up import bring_up
from onex_scaffold.devstack.factory import ServiceFactory, build_service
from onex_scaffold.devstack.member_control import (
    restart_member,
    roll_member,
    start_member,
    stop_member,
)
from onex_scaffold.devstack.options import (
    MAX_SIZE,
    SERVICE_ORDER,
    KafkaKind,
    StackOptions,
    depends_on,
    layout_for,
    wanted_services,
)
from onex_scaffold.devstack.runner import DEV_DIR_NAME, StackRunner
from onex_scaffold.devstack.status import ServiceStatus, stack_status
from onex_scaffold.devstack.teardown import DATA_FOLDERS, tear_down

__all__ = [
    "DATA_FOLDERS",
    "DEV_DIR_NAME",
    "MAX_SIZE",
    "SERVICE_ORDER",
    "KafkaKind",
    "ServiceFactory",
    "ServiceStatus",
    "Stack",
    "StackOptions",
    "build_service",
    "depends_on",
    "layout_for",
    "wanted_services",
]


class Stack(StackRunner):
    """The local stack of one project folder; runtime files live in `<root>/.onex-dev/`."""

    def up(
        self, options: StackOptions | None = None, environ: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Start what is not running yet, wait until everything answers; returns the env."""
        return bring_up(self, options or StackOptions(), os.environ if environ is None else environ)

    def down(self, purge: bool = False) -> list[str]:
        """Stop exactly the processes `up` started; returns one line per member."""
        return tear_down(self, purge)

    def status(self) -> list[ServiceStatus]:
        """What runs where, and whether it answers a real request now."""
        return stack_status(self)

    def stop(self, name: str, kill: bool = False) -> bool:
        """Stop one member (SIGKILL with `kill`), keeping its record so `start` brings it back
        on the same ports. True when it was running."""
        return stop_member(self, name, kill)

    def start(self, name: str, options: StackOptions | None = None) -> dict[str, str]:
        """Start one stopped member on its recorded ports and wait until it answers."""
        return start_member(self, name, options or StackOptions())

    def restart(self, name: str, options: StackOptions | None = None) -> dict[str, str]:
        """Stop one member (if ours) and start it again on the same ports."""
        return restart_member(self, name, options or StackOptions())

    def roll(self, name: str, options: StackOptions | None = None) -> None:
        """Replace one pipeline stage node with a new instance without a gap (see
        `member_control.roll_member`)."""
        roll_member(self, name, options or StackOptions())
