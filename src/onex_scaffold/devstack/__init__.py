"""A real local stack for ONEX nodes: Kafka (or Tansu), Consul and PostgreSQL on loopback.

`onex-node dev up|down|status|restart` is the command line; `Stack` is the Python API used by
tests and benchmarks.
"""

from __future__ import annotations

from onex_scaffold.devstack.errors import (
    DevStackError,
    MissingToolError,
    PortBusyError,
    ServiceStartError,
)
from onex_scaffold.devstack.stack import Stack, StackOptions

__all__ = [
    "DevStackError",
    "MissingToolError",
    "PortBusyError",
    "ServiceStartError",
    "Stack",
    "StackOptions",
]
