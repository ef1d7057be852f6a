"""Trace context that flows from a consumed event to the events its handler publishes.

The consumer sets ``current_trace`` around each handler call (``handling``); the
publisher reads it for every event it writes: the event joins the consumed event's
trace (same ``trace_id``), gets a span id of its own and records the consumed event's
span as its ``parent_span_id``. Outside a handler each publish starts a new trace.
Ids use the W3C Trace Context sizes (32 and 16 lower-case hex digits), so they can be
handed to OpenTelemetry as they are.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

_getrandbits = random.getrandbits

TRACE_ID_PATTERN: Final = r"^[0-9a-f]{32}$"
SPAN_ID_PATTERN: Final = r"^[0-9a-f]{16}$"


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The trace an event being handled belongs to, and that event's span."""

    trace_id: str
    #: The handled event's span: the parent of every span published while handling it.
    span_id: str | None


#: Set by the consumer while a handler runs; ``None`` outside handlers.
current_trace: ContextVar[TraceContext | None] = ContextVar("onex_current_trace", default=None)


def new_trace_id() -> str:
    """32 hex digits, never all zero (W3C: an all-zero trace id is invalid)."""
    return f"{_getrandbits(128) | 1:032x}"


def new_span_id() -> str:
    """16 hex digits, never all zero."""
    return f"{_getrandbits(64) | 1:016x}"


@contextlib.contextmanager
def handling(trace_id: str | None, span_id: str | None) -> Iterator[TraceContext]:
    """Make events published inside the block children of the event (``trace_id``,
    ``span_id``) being handled. An event without trace context (from an older node or
    another producer) starts a new trace, so everything its handler publishes shares one."""
    context = TraceContext(trace_id, span_id) if trace_id else TraceContext(new_trace_id(), None)
    token = current_trace.set(context)
    try:
        yield context
    finally:
        current_trace.reset(token)
