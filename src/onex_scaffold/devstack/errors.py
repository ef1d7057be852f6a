"""Errors of the dev stack. Each carries the exit code the CLI returns and a one-line message."""

from __future__ import annotations

from onex_scaffold._exceptions import OnexError


class DevStackError(OnexError):
    """Base error: the message is shown to the user as one line, without a traceback."""

    exit_code = 1


class MissingToolError(DevStackError):
    """A program the stack needs (java, mvn, go, initdb, ...) is not installed."""

    exit_code = 2


class PortBusyError(DevStackError):
    """A port asked for explicitly is already taken by another process."""


class ServiceStartError(DevStackError):
    """A service did not start or did not answer within its time limit."""


class UnknownServiceError(DevStackError):
    """A service name that the stack does not know."""

    exit_code = 2
