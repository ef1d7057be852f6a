"""The envelopes and Kafka records of a node's new events, built without a validation pass.

Each new event gets its ids, its place in the current trace, its JSON (``EnvelopeEncoder``)
and its CloudEvents headers; a topic is derived from the event type when the caller
names none. ``EventPublisher`` publishes what ``EventRecords`` builds.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from . import naming
from .cloudevents import CE_SPECVERSION, cloudevents_source
from .events import (
    EnvelopeEncoder,
    ModelEventEnvelope,
    ModelEventSource,
    json_payload,
    metadata_model,
    metadata_text,
    new_id_int,
    timestamp_text,
    utc_now,
    uuid_text,
)
from .producer import Headers
from .tracing import current_trace, new_span_id, new_trace_id


def trace_of_new_event() -> tuple[str, str | None]:
    """(trace id, parent span id) for a new event: the handled event's, or a new trace."""
    context = current_trace.get()
    if context is None:
        return new_trace_id(), None
    return context.trace_id, context.span_id


def correlation_pair(correlation_id: uuid.UUID | None) -> tuple[int, str] | None:
    """(id, text) of ``correlation_id``; None stays None (a new one is made per event)."""
    return None if correlation_id is None else (correlation_id.int, str(correlation_id))


class EventRecords:
    """Builds the envelopes and records of the events of one node instance."""

    def __init__(
        self,
        service_name: str,
        instance_id: str,
        *,
        environment: str = "dev",
        default_topic: str | None = None,
        emit_cloudevents_headers: bool = True,
    ) -> None:
        #: ``KAFKA_ENVIRONMENT``: the prefix of topics derived from event types.
        self.environment = environment
        self._derived_topics: dict[str, str] = {}
        self.default_topic = default_topic
        self.emit_cloudevents_headers = emit_cloudevents_headers
        self.source = ModelEventSource(service=service_name, instance_id=instance_id)
        self._encoder = EnvelopeEncoder(self.source)
        self._ce_source = ("ce_source", cloudevents_source(service_name, instance_id).encode())
        self._ce_types: dict[str, tuple[str, str]] = {}

    def envelope(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        correlation_id: uuid.UUID | None = None,
        causation_id: uuid.UUID | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> ModelEventEnvelope:
        """A new envelope from this publisher (for ``publish_envelope``), in the current trace."""
        self._encoder.event_type_json(event_type)  # the model's length rule, without a pass
        trace_id, parent = trace_of_new_event()
        return self._encoder.envelope(
            new_id_int(),
            event_type,
            correlation_id.int if correlation_id is not None else new_id_int(),
            causation_id,
            utc_now(),
            metadata_model(trace_id, new_span_id(), parent, dict(extra or {})),
            dict(payload),
        )

    def _derive_topic(self, event_type: str) -> str:
        """The topic of ``event_type`` when the caller names none (``naming.event_topic``)."""
        derived = self._derived_topics.get(event_type)
        if derived is None:
            derived = naming.event_topic(self.environment, event_type)
            if len(self._derived_topics) < 4096:  # a node has a handful; never grow unbounded
                self._derived_topics[event_type] = derived
        return derived

    def _target(self, topic: str | None, event_type: str) -> str:
        return topic or self.default_topic or self._derive_topic(event_type)

    def _encode(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        correlation: tuple[int, str] | None,
        causation_id: uuid.UUID | None,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[ModelEventEnvelope, bytes, Headers]:
        """The envelope, its JSON and its headers, built without a validation pass.
        ``correlation`` is (id, text), or None for a new one."""
        body = dict(payload)
        if correlation is None:
            number = new_id_int()
            correlation = (number, uuid_text(number))
        now = utc_now()
        trace_id, parent = trace_of_new_event()
        extras = dict(extra) if extra else {}
        span_id = new_span_id()
        event_id, value, headers = self._record(
            event_type,
            body,
            correlation,
            causation_id,
            timestamp_text(now),
            metadata_text(trace_id, span_id, parent, extras),
        )
        envelope = self._encoder.envelope(
            event_id,
            event_type,
            correlation[0],
            causation_id,
            now,
            metadata_model(trace_id, span_id, parent, extras),
            body,
        )
        return envelope, value, headers

    def _record(
        self,
        event_type: str,
        body: Mapping[str, Any],
        correlation: tuple[int, str],
        causation_id: uuid.UUID | None,
        when: str,
        metadata_json: str,
    ) -> tuple[int, bytes, Headers]:
        """(event id, record value, headers) of one new event."""
        event_id = new_id_int()
        id_text = uuid_text(event_id)
        value = self._encoder.encode(
            id_text,
            event_type,
            correlation[1],
            causation_id,
            when,
            metadata_json,
            json_payload(body),
        )
        headers: Headers = (
            [
                CE_SPECVERSION,
                ("ce_id", id_text),
                self._ce_source,
                self._ce_type(event_type),
                ("ce_time", when),
            ]
            if self.emit_cloudevents_headers
            else []
        )
        return event_id, value, headers

    def _ce_type(self, event_type: str) -> tuple[str, str]:
        header = self._ce_types.get(event_type)
        if header is None:
            header = ("ce_type", event_type)
            if len(self._ce_types) < 4096:  # a node has a handful; never grow unbounded
                self._ce_types[event_type] = header
        return header
