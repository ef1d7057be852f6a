"""Publishing with confirmed delivery, bounded retries, a circuit breaker and a dead-letter topic.

``EventPublisher`` builds each event's envelope and record (its ``EventRecords`` side,
``event_records``), publishes it through its ``ConfirmedProducer`` side (``producer``:
one attempt, awaited until the broker acknowledged it, never blocking the event loop),
retries what failed with backoff and dead-letters what never got through. Beside it:
``publish_errors`` (what a failed publish raises), ``cloudevents`` (the ``ce_*``
headers), ``published_events`` (what ``publish_many`` returns) and ``delivery_reports``
(from librdkafka's thread to the event loop). The names in ``__all__`` are importable
from here, as they always were.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import naming
from .cloudevents import cloudevents_headers, cloudevents_source
from .event_records import EventRecords, correlation_pair, trace_of_new_event
from .events import (
    DEAD_LETTER_MAX_ORIGINAL,
    ModelDeadLetter,
    ModelEventEnvelope,
    metadata_text,
    new_id_int,
    timestamp_text,
    utc_now,
    uuid_from_int,
    uuid_text,
)
from .metrics import Metrics
from .producer import ConfirmedProducer, Headers
from .publish_errors import (
    BrokerUnavailableError,
    DeliveryError,
    PublisherClosedError,
    PublishError,
    PublishManyError,
)
from .published_events import PublishedEvents
from .resilience import CircuitBreaker, CircuitOpenError, backoff_delay
from .tracing import new_span_id

__all__ = [
    "BrokerUnavailableError",
    "DeliveryError",
    "EventPublisher",
    "Headers",
    "KafkaClient",
    "PublishError",
    "PublishManyError",
    "PublishedEvents",
    "PublisherClosedError",
    "cloudevents_headers",
    "cloudevents_source",
]

log = logging.getLogger(__name__)


class EventPublisher(EventRecords, ConfirmedProducer):
    """Publishes ``ModelEventEnvelope`` events to Kafka and awaits the broker's confirmation."""

    def __init__(
        self,
        bootstrap_servers: str,
        service_name: str,
        instance_id: str,
        max_retries: int = 3,
        enable_dlq: bool = True,
        *,
        default_topic: str | None = None,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
        breaker: CircuitBreaker | None = None,
        delivery_timeout_ms: int = 30_000,
        producer_config: Mapping[str, Any] | None = None,
        metrics: Metrics | None = None,
        emit_cloudevents_headers: bool = True,
        environment: str = "dev",
    ) -> None:
        ConfirmedProducer.__init__(
            self,
            bootstrap_servers,
            service_name,
            instance_id,
            breaker=breaker,
            delivery_timeout_ms=delivery_timeout_ms,
            producer_config=producer_config,
            metrics=metrics,
        )
        EventRecords.__init__(
            self,
            service_name,
            instance_id,
            environment=environment,
            default_topic=default_topic,
            emit_cloudevents_headers=emit_cloudevents_headers,
        )
        self.max_retries = max_retries
        self.enable_dlq = enable_dlq
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s

    # -- publishing --------------------------------------------------------------------

    async def publish(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        correlation_id: uuid.UUID | None = None,
        topic: str | None = None,
        key: str | bytes | None = None,
        causation_id: uuid.UUID | None = None,
        *,
        dead_letter: bool | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ModelEventEnvelope:
        """Wrap ``payload`` in an envelope, publish it, and return the envelope once confirmed.

        Without ``topic`` (and no ``default_topic``) the topic is derived from
        ``event_type`` (``naming.event_topic``; ``ValueError`` when it cannot be). The
        envelope's ``metadata`` joins the trace of the event being handled (if any) and
        carries ``extra``.

        Raises ``PublishError`` when every retry failed; the event was then sent to
        ``naming.dead_letter_topic(topic)`` if ``enable_dlq`` (see ``.dead_lettered``).
        Raises ``BrokerUnavailableError`` (a ``PublishError``) at once while the circuit
        breaker is open: nothing was sent or dead-lettered; publish again later.
        """
        target = topic or self.default_topic or self._derive_topic(event_type)
        envelope, value, headers = self._encode(
            event_type, payload, correlation_pair(correlation_id), causation_id, extra
        )
        try:
            await self.produce(target, value, key=key, headers=headers)
        except (DeliveryError, CircuitOpenError) as exc:
            await self._retry(envelope, target, value, key, headers, exc, dead_letter)
        self.metrics.counters["onex_events_published_total"] += 1
        return envelope

    async def publish_envelope(
        self,
        envelope: ModelEventEnvelope,
        topic: str | None = None,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        *,
        dead_letter: bool | None = None,
    ) -> ModelEventEnvelope:
        """Publish a ready envelope; ``dead_letter=False`` skips the DLQ for events whose
        loss is harmless (heartbeats), ``None`` follows ``enable_dlq``."""
        target = self._target(topic, envelope.event_type)
        all_headers = cloudevents_headers(envelope) if self.emit_cloudevents_headers else []
        all_headers += headers or []
        value = envelope.to_bytes()
        try:
            await self.produce(target, value, key=key, headers=all_headers)
        except (DeliveryError, CircuitOpenError) as exc:
            await self._retry(envelope, target, value, key, all_headers, exc, dead_letter)
        self.metrics.counters["onex_events_published_total"] += 1
        return envelope

    async def _retry(
        self,
        envelope: ModelEventEnvelope,
        target: str,
        value: bytes,
        key: str | bytes | None,
        headers: Headers,
        first_error: DeliveryError | CircuitOpenError,
        dead_letter: bool | None,
    ) -> None:
        """Attempts 2.. of a publish whose first attempt failed; returns once confirmed."""
        last_error: DeliveryError | CircuitOpenError = first_error
        attempts = 1
        while True:
            if isinstance(last_error, CircuitOpenError):
                self.metrics.inc("onex_events_publish_failed_total")
                raise BrokerUnavailableError(
                    f"not publishing {envelope.event_type} to {target}: {last_error}",
                    topic=target,
                    retry_after_s=self.breaker.retry_after_s,
                    attempts=attempts - 1,  # the refused call was no attempt
                ) from last_error
            self._note_delivery_failure(last_error)
            if not last_error.retriable or attempts > self.max_retries or self._closed:
                break
            self.metrics.inc("onex_publish_retries_total")
            delay = backoff_delay(attempts, self.backoff_s, self.backoff_max_s)
            log.warning(
                "publish to %s failed (attempt %d/%d): %s; retrying in %.2fs",
                target,
                attempts,
                self.max_retries + 1,
                last_error,
                delay,
            )
            await asyncio.sleep(delay)
            attempts += 1
            try:
                await self.produce(target, value, key=key, headers=headers)
            except (DeliveryError, CircuitOpenError) as exc:
                last_error = exc
            else:
                return
        self.metrics.inc("onex_events_publish_failed_total")
        dead_lettered = False
        if self.enable_dlq if dead_letter is None else dead_letter:
            dead_lettered = await self.dead_letter(
                source_topic=target,
                original=value,
                error=str(last_error),
                attempts=attempts,
                key=key,
                correlation_id=envelope.correlation_id,
                causation_id=envelope.event_id,
            )
        raise PublishError(
            f"could not publish {envelope.event_type} to {target} after {attempts} attempt(s): "
            f"{last_error}" + (" (dead-lettered)" if dead_lettered else ""),
            topic=target,
            attempts=attempts,
            dead_lettered=dead_lettered,
            retriable=last_error.retriable,
        ) from last_error

    async def publish_many(
        self,
        event_type: str,
        payloads: Iterable[Mapping[str, Any]],
        *,
        topic: str | None = None,
        keys: Sequence[str | bytes | None] | None = None,
        correlation_id: uuid.UUID | None = None,
        causation_id: uuid.UUID | None = None,
        dead_letter: bool | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> PublishedEvents:
        """Publish one event per payload and await all the broker's confirmations at once.

        For bulk producers: one await (and one breaker decision) per attempt of the whole
        batch instead of per event, with the same guarantees as ``publish`` per event
        (acks=all, idempotence, retries of the failed ones with backoff, dead-letter topic).
        ``keys`` (same length as ``payloads``) are the record keys. The events of one call
        are one operation: they share one creation time and one correlation id (new unless
        ``correlation_id`` is given), one trace and ``extra``; each has its own event id and
        span id. Without ``topic`` it is derived from ``event_type``. Returns their envelopes in
        order (built when read); raises ``PublishManyError`` naming the failed indices (the
        rest were confirmed), or ``BrokerUnavailableError`` when the breaker is open before
        anything was sent.
        """
        target = self._target(topic, event_type)
        bodies = [dict(payload) for payload in payloads]
        if keys is not None and len(keys) != len(bodies):
            raise ValueError(f"publish_many got {len(bodies)} payloads but {len(keys)} keys")
        now = utc_now()
        correlation = correlation_pair(correlation_id)
        if correlation is None:
            number = new_id_int()
            correlation = (number, uuid_text(number))
        trace_id, parent = trace_of_new_event()
        extras = dict(extra) if extra else {}
        events = PublishedEvents(
            self._encoder,
            event_type,
            correlation[0],
            causation_id,
            now,
            bodies,
            (trace_id, parent, extras),
        )
        if not bodies:
            return events
        when = timestamp_text(now)
        ids = events.ids
        spans = events.spans
        records: list[tuple[bytes, str | bytes | None, Headers]] = []
        for index, body in enumerate(bodies):
            span_id = new_span_id()
            event_id, value, headers = self._record(
                event_type,
                body,
                correlation,
                causation_id,
                when,
                metadata_text(trace_id, span_id, parent, extras),
            )
            ids.append(event_id)
            spans.append(span_id)
            records.append((value, keys[index] if keys is not None else None, headers))
        pending = list(range(len(records)))
        errors: dict[int, DeliveryError] = {}
        attempts = 0
        while True:
            attempts += 1
            try:
                failed = await self._produce_batch(target, records, pending)
            except CircuitOpenError as exc:
                if attempts == 1:
                    self.metrics.inc("onex_events_publish_failed_total", len(bodies))
                    raise BrokerUnavailableError(
                        f"not publishing {len(bodies)} {event_type} events to {target}: {exc}",
                        topic=target,
                        retry_after_s=self.breaker.retry_after_s,
                    ) from exc
                failed = {index: DeliveryError(str(exc)) for index in pending}
            errors.update(failed)
            for index in pending:
                if index not in failed:
                    errors.pop(index, None)
            pending = [index for index, error in failed.items() if error.retriable]
            if not pending or attempts > self.max_retries or self._closed:
                break
            for error in failed.values():
                self._note_delivery_failure(error)
            self.metrics.inc("onex_publish_retries_total", len(pending))
            delay = backoff_delay(attempts, self.backoff_s, self.backoff_max_s)
            log.warning(
                "publish_many to %s: %d of %d events failed (attempt %d/%d): %s; "
                "retrying them in %.2fs",
                target,
                len(pending),
                len(records),
                attempts,
                self.max_retries + 1,
                next(iter(failed.values())),
                delay,
            )
            await asyncio.sleep(delay)
        self.metrics.inc("onex_events_published_total", len(records) - len(errors))
        if not errors:
            return events
        self.metrics.inc("onex_events_publish_failed_total", len(errors))
        use_dlq = self.enable_dlq if dead_letter is None else dead_letter
        failures: dict[int, tuple[str, bool]] = {}
        for index, error in sorted(errors.items()):
            dead_lettered = False
            if use_dlq:
                dead_lettered = await self.dead_letter(
                    source_topic=target,
                    original=records[index][0],
                    error=str(error),
                    attempts=attempts,
                    key=records[index][1],
                    correlation_id=uuid_from_int(correlation[0]),
                    causation_id=uuid_from_int(ids[index]),
                )
            failures[index] = (str(error), dead_lettered)
        first = next(iter(failures.values()))[0]
        raise PublishManyError(
            f"{len(errors)} of {len(records)} {event_type} events not published to {target} "
            f"after {attempts} attempt(s), first error: {first}",
            topic=target,
            attempts=attempts,
            failures=failures,
            delivered=len(records) - len(errors),
            retriable=all(error.retriable for error in errors.values()),
        )

    async def publish_tombstone(self, topic: str, key: str | bytes) -> None:
        """A null value for ``key`` on a compacted topic: the key's record is deleted."""
        await self.produce(topic, None, key=key)

    async def dead_letter(
        self,
        *,
        source_topic: str,
        original: bytes | None,
        error: str,
        attempts: int,
        key: str | bytes | None = None,
        partition: int | None = None,
        offset: int | None = None,
        correlation_id: uuid.UUID | None = None,
        causation_id: uuid.UUID | None = None,
    ) -> bool:
        """Send a ``ModelDeadLetter`` to ``naming.dead_letter_topic(source_topic)``; True if confirmed."""
        text_key = key.decode(errors="replace") if isinstance(key, bytes) else key
        raw = original or b""
        letter = ModelDeadLetter(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=text_key,
            original=raw[:DEAD_LETTER_MAX_ORIGINAL].decode("utf-8", errors="replace"),
            original_truncated=len(raw) > DEAD_LETTER_MAX_ORIGINAL,
            original_size=len(raw),
            error=error[:4000],
            attempts=attempts,
        )
        _, value, headers = self._encode(
            naming.EVENT_DEAD_LETTER,
            letter.model_dump(mode="json"),
            correlation_pair(correlation_id),
            causation_id,
        )
        dlq = naming.dead_letter_topic(source_topic)
        try:
            await self.produce(dlq, value, key=key, headers=headers)
        except (DeliveryError, CircuitOpenError) as exc:
            log.error("could not dead-letter a record from %s to %s: %s", source_topic, dlq, exc)
            return False
        self.metrics.inc("onex_events_dead_lettered_total")
        log.warning("dead-lettered a record from %s to %s: %s", source_topic, dlq, error)
        return True


class KafkaClient:
    """The small client orchestrator steps use: ``await kafka.publish_event(topic, type, payload)``."""

    def __init__(self, publisher: EventPublisher) -> None:
        self.publisher = publisher

    async def publish_event(
        self,
        topic: str,
        event_type: str,
        payload: Mapping[str, Any],
        correlation_id: uuid.UUID | None = None,
        key: str | None = None,
    ) -> ModelEventEnvelope:
        return await self.publisher.publish(
            event_type, payload, correlation_id=correlation_id, topic=topic, key=key
        )
