"""Reading one record of the discovery topics: its envelope, headers and time.

A record that cannot be read raises ``PoisonRecordError``; the consumer
dead-letters it with the message, which says what was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message
from pydantic import ValidationError

from .runtime.events import ModelEventEnvelope

#: The registry's own expiry tombstones carry the expired record's announcement time, so a
#: newer announcement that crossed the tombstone is not removed with it.
EXPIRED_HEADER: Final = "onex_expired_announced_at"


class PoisonRecordError(ValueError):
    """A record that can never be processed: it goes to the dead-letter topic."""


def decode_envelope(message: Message, event_type: str) -> ModelEventEnvelope:
    """The record's event envelope, which must carry ``event_type``."""
    value = message.value()
    if value is None:
        raise PoisonRecordError("empty record (no value) where an event was expected")
    try:
        envelope = ModelEventEnvelope.from_bytes(value)
    except ValidationError as error:
        raise PoisonRecordError(f"not an event envelope: {validation_summary(error)}") from error
    if envelope.event_type != event_type:
        raise PoisonRecordError(
            f"event_type {envelope.event_type!r} on {message.topic()}; expected {event_type!r}"
        )
    return envelope


def header(message: Message, name: str) -> str | None:
    """The text of the record's header ``name`` (None when it has none)."""
    headers = message.headers() or []
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    for key, value in items:
        if key == name and value is not None:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def expired_announced_at(message: Message) -> float | None:
    """The announcement time an expiry tombstone names (None: not one of ours, or unreadable)."""
    expired = header(message, EXPIRED_HEADER)
    try:
        return float(expired) if expired is not None else None
    except ValueError:
        return None


def message_time(message: Message, default: float) -> float:
    """The record's timestamp in epoch seconds (the broker's or the producer's)."""
    kind, millis = message.timestamp()
    return millis / 1000 if kind != TIMESTAMP_NOT_AVAILABLE and millis > 0 else default


def record_key(message: Message) -> str | None:
    """The record's key as text (undecodable bytes replaced), None when it has none."""
    key = message.key()
    return key.decode(errors="replace") if key is not None else None


def validation_summary(error: ValidationError) -> str:
    """A validation error in one line: field path and message for each problem."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "(root)"
        parts.append(f"{where}: {item.get('msg', '')}")
    more = len(error.errors()) - 5
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
