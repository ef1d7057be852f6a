"""CloudEvents 1.0 attributes of our records, in Kafka binary mode (``ce_*`` headers).

The record value (the CloudEvent's data) is the whole JSON envelope; the headers let
CloudEvents consumers read our events without knowing the envelope.
"""

from __future__ import annotations

from .events import ModelEventEnvelope, timestamp_text
from .producer import Headers

#: The first header of every event record.
CE_SPECVERSION = ("ce_specversion", b"1.0")


def cloudevents_source(service: str, instance_id: str) -> str:
    """The ``ce_source`` of the events of one node instance."""
    return f"/onex/{service}/{instance_id}"


def cloudevents_headers(envelope: ModelEventEnvelope) -> Headers:
    """CloudEvents 1.0 Kafka binary-mode attributes, so CloudEvents consumers can read our
    events; the record value (the CloudEvent's data) is the whole JSON envelope. The
    required attributes plus ``time`` (without it, CloudEvents SDKs report the time of
    reading as the event's time). Tombstones carry no headers: they are no events."""
    source = envelope.source
    return [
        CE_SPECVERSION,
        ("ce_id", str(envelope.event_id)),
        ("ce_source", cloudevents_source(source.service, source.instance_id)),
        ("ce_type", envelope.event_type),
        ("ce_time", timestamp_text(envelope.timestamp)),
    ]
