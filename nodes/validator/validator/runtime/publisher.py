"""Publishing with confirmed delivery, bounded retries, a circuit breaker and a dead-letter topic.

confluent-kafka's ``Producer`` is driven by one background thread that calls
``poll()``; delivery reports resolve asyncio futures through
``loop.call_soon_threadsafe``, so ``await publish(...)`` returns only once the
broker has acknowledged the record (acks=all) and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, overload

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from . import naming
from .events import (
    DEAD_LETTER_MAX_ORIGINAL,
    EnvelopeEncoder,
    ModelDeadLetter,
    ModelEventEnvelope,
    ModelEventSource,
    json_payload,
    metadata_model,
    metadata_text,
    new_id_int,
    timestamp_text,
    utc_now,
    uuid_from_int,
    uuid_text,
)
from .metrics import Metrics
from .resilience import BreakerState, CircuitBreaker, CircuitOpenError, backoff_delay
from .signing import DiscoverySigner
from .tracing import current_trace, new_span_id, new_trace_id

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


class PublishError(RuntimeError):
    """An event could not be published after all retries (it may have been dead-lettered).

    ``retriable`` is True when the broker could not be reached (timeouts, breaker open):
    publishing the same event later may succeed. False when the broker refused the record
    itself (too large, not authorised): it never will.
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        attempts: int,
        dead_lettered: bool,
        retriable: bool = True,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.attempts = attempts
        self.dead_lettered = dead_lettered
        self.retriable = retriable


class BrokerUnavailableError(PublishError):
    """The circuit breaker is open: nothing was sent, and nothing was dead-lettered either
    (the dead-letter topic lives on the same unreachable broker). Publish again after
    ``retry_after_s``; the consumer loop does that for handlers and leaves the input
    record uncommitted meanwhile."""

    def __init__(
        self, message: str, *, topic: str, retry_after_s: float, attempts: int = 0
    ) -> None:
        super().__init__(
            message, topic=topic, attempts=attempts, dead_lettered=False, retriable=True
        )
        self.retry_after_s = retry_after_s


class PublishManyError(PublishError):
    """Some events of a ``publish_many`` call failed after all retries; the others were
    confirmed. ``failures`` maps each failed event's index to (error text, dead-lettered)."""

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        attempts: int,
        failures: dict[int, tuple[str, bool]],
        delivered: int,
        retriable: bool,
    ) -> None:
        super().__init__(
            message,
            topic=topic,
            attempts=attempts,
            dead_lettered=all(dead for _, dead in failures.values()),
            retriable=retriable,
        )
        self.failures = failures
        self.delivered = delivered


class PublisherClosedError(RuntimeError):
    """``publish`` was called after ``close()``."""


class DeliveryError(RuntimeError):
    """The broker did not confirm one produce attempt."""

    def __init__(self, error: KafkaError | str) -> None:
        super().__init__(str(error))
        self.kafka_error = error if isinstance(error, KafkaError) else None

    @property
    def retriable(self) -> bool:
        err = self.kafka_error
        if err is None:
            return True
        # Records that can never fit or are refused by policy will not succeed on retry.
        return err.code() not in (
            KafkaError.MSG_SIZE_TOO_LARGE,
            KafkaError.INVALID_RECORD,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        )


_CE_SPECVERSION = ("ce_specversion", b"1.0")


def cloudevents_source(service: str, instance_id: str) -> str:
    return f"/onex/{service}/{instance_id}"


def cloudevents_headers(envelope: ModelEventEnvelope) -> Headers:
    """CloudEvents 1.0 Kafka binary-mode attributes, so CloudEvents consumers can read our
    events; the record value (the CloudEvent's data) is the whole JSON envelope. The
    required attributes plus ``time`` (without it, CloudEvents SDKs report the time of
    reading as the event's time). Tombstones carry no headers: they are no events."""
    source = envelope.source
    return [
        _CE_SPECVERSION,
        ("ce_id", str(envelope.event_id)),
        ("ce_source", cloudevents_source(source.service, source.instance_id)),
        ("ce_type", envelope.event_type),
        ("ce_time", timestamp_text(envelope.timestamp)),
    ]


def _trace() -> tuple[str, str | None]:
    """(trace id, parent span id) for a new event: the handled event's, or a new trace."""
    context = current_trace.get()
    if context is None:
        return new_trace_id(), None
    return context.trace_id, context.span_id


class EventPublisher:
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
        self.service_name = service_name
        #: ``KAFKA_ENVIRONMENT``: the prefix of topics derived from event types.
        self.environment = environment
        self._derived_topics: dict[str, str] = {}
        self.instance_id = instance_id
        self.max_retries = max_retries
        self.enable_dlq = enable_dlq
        self.default_topic = default_topic
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.breaker = breaker or CircuitBreaker()
        self.delivery_timeout_ms = delivery_timeout_ms
        self.metrics = metrics or Metrics()
        self.emit_cloudevents_headers = emit_cloudevents_headers
        #: Signs the records of the discovery topics when ONEX_DISCOVERY_KEY is set (the node
        #: sets it); None: nothing is signed.
        self.signer: DiscoverySigner | None = None
        self.source = ModelEventSource(service=service_name, instance_id=instance_id)
        self._encoder = EnvelopeEncoder(self.source)
        self._ce_source = ("ce_source", cloudevents_source(service_name, instance_id).encode())
        self._ce_types: dict[str, tuple[str, str]] = {}
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": f"{service_name}-{instance_id}",
            **(producer_config or {}),
            # Delivery guarantees are not negotiable: they are why this class exists.
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": delivery_timeout_ms,
            "error_cb": self._on_client_error,
        }
        self._config.setdefault("linger.ms", 5)
        self._producer: Producer | None = None
        self._reports: collections.deque[_Report] = collections.deque()
        self._probe_executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll_thread: threading.Thread | None = None
        self._stop_polling = threading.Event()
        self._lock = threading.Lock()
        self._fatal: KafkaError | None = None
        # Set when deliveries time out although the broker answers: the broker may have lost
        # this producer's id (restarted without its state); a new producer gets a new id.
        self._stale = False
        self._recreated_at = 0.0
        self._closed = False
        self.broker_down = False
        self.metrics.gauge(
            "onex_publisher_breaker_state",
            "Publisher circuit breaker: 0 closed, 1 half-open, 2 open.",
            lambda: float(self.breaker.state),
        )

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Create the producer and its poll thread; called lazily by the first publish."""
        if self._closed:
            raise PublisherClosedError("EventPublisher is closed; create a new one")
        if self._producer is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(self._config)
        self._stop_polling.clear()
        self._poll_thread = threading.Thread(
            target=self._poll_forever, name=f"kafka-producer-{self.service_name}", daemon=True
        )
        self._poll_thread.start()

    def _poll_forever(self) -> None:
        while not self._stop_polling.is_set():
            producer = self._producer
            if producer is None:
                return
            producer.poll(0.1)
            self._hand_over_reports()

    def _hand_over_reports(self) -> None:
        if not self._reports:
            return
        batch: list[_Report] = []
        with contextlib.suppress(IndexError):
            while True:
                batch.append(self._reports.popleft())
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(_settle_all, batch)

    async def close(self, timeout_s: float = 10.0) -> int:
        """Flush within ``timeout_s``; returns how many records were still undelivered (purged)."""
        if self._closed:
            return 0
        self._closed = True
        if self._probe_executor is not None:
            self._probe_executor.shutdown(wait=False, cancel_futures=True)
        producer = self._producer
        if producer is None:
            return 0
        remaining: int = await asyncio.to_thread(producer.flush, max(0.0, timeout_s))
        if remaining:
            log.warning("dropping %d undelivered records after a %.1fs flush", remaining, timeout_s)
            producer.purge()
            await asyncio.to_thread(producer.flush, 1.0)
        self._stop_polling.set()
        if self._poll_thread is not None:
            await asyncio.to_thread(self._poll_thread.join, 2.0)
        self._hand_over_reports()  # reports served by flush() above
        self._producer = None
        return int(remaining)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- broker state ----------------------------------------------------------

    def _on_client_error(self, err: KafkaError) -> None:
        # Runs on the poll thread.
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.broker_down = True
        if err.fatal():
            log.error("Kafka producer fatal error, it will be recreated: %s", err)
            self._fatal = err
        else:
            log.debug("Kafka producer error: %s", err)

    async def probe(self, timeout_s: float = 3.0) -> bool:
        """Ask the cluster for metadata: True when a broker answered within ``timeout_s``."""
        self.start()
        producer = self._producer
        assert producer is not None
        if self._probe_executor is None:
            # Own thread, never joined on close: a probe stuck in its timeout must not delay
            # shutdown (asyncio.to_thread's executor is joined when the loop closes).
            self._probe_executor = ThreadPoolExecutor(1, thread_name_prefix="kafka-probe")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._probe_executor, lambda: producer.list_topics(timeout=timeout_s)
            )
        except KafkaException:
            self.broker_down = True
            return False
        self.broker_down = False
        return True

    def _recreate_if_fatal(self) -> None:
        if (self._fatal is None and not self._stale) or self._closed:
            return
        old = self._producer
        self._fatal = None
        self._stale = False
        self._recreated_at = time.monotonic()
        log.warning("recreating the Kafka producer (new producer id) after delivery failures")
        self._producer = Producer(self._config)
        if old is not None:
            # Fail whatever the dead producer still holds; the poll thread no longer sees it.
            old.purge()
            old.poll(0)

    # -- publishing ------------------------------------------------------------

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
        trace_id, parent = _trace()
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
        trace_id, parent = _trace()
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
                _CE_SPECVERSION,
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
            event_type, payload, _correlation(correlation_id), causation_id, extra
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
        correlation = _correlation(correlation_id)
        if correlation is None:
            number = new_id_int()
            correlation = (number, uuid_text(number))
        trace_id, parent = _trace()
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

    def _note_delivery_failure(self, exc: DeliveryError) -> None:
        err = exc.kafka_error
        timed_out = err is not None and err.code() == KafkaError._MSG_TIMED_OUT
        if timed_out and time.monotonic() - self._recreated_at > 5.0:
            self._stale = True

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
            _correlation(correlation_id),
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

    def _ready_producer(self) -> tuple[Producer, asyncio.AbstractEventLoop]:
        """The producer for the next attempt, after the breaker allowed it."""
        if self._closed:
            raise PublisherClosedError("EventPublisher is closed; create a new one")
        if self._producer is None:
            self.start()
        self.breaker.before_call()
        if self._fatal is not None or self._stale:
            self._recreate_if_fatal()
        producer = self._producer
        loop = self._loop
        assert producer is not None and loop is not None
        return producer, loop

    def _judge(self, failed: bool) -> None:
        breaker = self.breaker
        if failed:
            breaker.record_failure()
            return
        if breaker.consecutive_failures or breaker.state is not BreakerState.CLOSED:
            breaker.record_success()
        self.broker_down = False

    async def produce(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        headers: Headers | None = None,
    ) -> Message:
        """One produce attempt through the circuit breaker; returns the confirmed message."""
        if self.signer is not None:
            headers = self.signer.signed_headers(topic, key, value, headers)
        producer, loop = self._ready_producer()
        try:
            future: asyncio.Future[Message] = loop.create_future()

            def on_delivery(
                err: KafkaError | None,
                msg: Message,
                _future: asyncio.Future[Message] = future,
                _queue: Callable[[_Report], None] = self._reports.append,
            ) -> None:
                # Runs on the poll thread: queue the outcome; the poll thread hands the
                # whole batch to the event loop at once (one wake-up per poll, not per record).
                # Defaults, not a closure: fewer objects per publish for the cyclic GC,
                # which is a measurable share of a publish with many in flight.
                _queue((_future, err, msg))

            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
            except BufferError:
                await self._produce_when_room(topic, value, key, headers, on_delivery)
            except KafkaException as exc:
                raise DeliveryError(exc.args[0] if exc.args else str(exc)) from exc
            # librdkafka reports every record: delivered, failed, timed out
            # (message.timeout.ms) or purged on close, so this await is bounded.
            message = await future
        except DeliveryError:
            self._judge(failed=True)
            raise
        except BaseException:
            # Cancelled or unexpected: free a half-open probe slot without judging the broker.
            if self.breaker.state is not BreakerState.CLOSED:
                self.breaker.record_failure()
            raise
        self._judge(failed=False)
        return message

    async def _produce_when_room(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None,
        headers: Headers | None,
        on_delivery: Any,
    ) -> None:
        """The local queue is full: wait (bounded) for the poll thread to drain it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.delivery_timeout_ms / 1000
        while True:
            await asyncio.sleep(0.005)
            producer = self._producer
            if producer is None or self._closed:
                raise PublisherClosedError("EventPublisher closed while publishing")
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:
                if loop.time() > deadline:
                    raise DeliveryError("local producer queue stayed full") from None
            except KafkaException as exc:
                raise DeliveryError(exc.args[0] if exc.args else str(exc)) from exc

    async def _produce_batch(
        self,
        topic: str,
        records: Sequence[tuple[bytes, str | bytes | None, Headers]],
        indices: Sequence[int],
    ) -> dict[int, DeliveryError]:
        """One attempt for ``records[i]`` for i in ``indices``; the ones that failed."""
        producer, loop = self._ready_producer()
        sink = _BatchSink(loop)
        on_delivery = sink.on_delivery
        failed: dict[int, DeliveryError] = {}
        queued = 0
        try:
            for position, index in enumerate(indices):
                value, key, headers = records[index]
                try:
                    producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                except BufferError:
                    try:
                        await self._produce_when_room(topic, value, key, headers, on_delivery)
                    except DeliveryError as exc:
                        # Not queued: no report will come for these.
                        failed.update({i: exc for i in indices[position:]})
                        break
                except KafkaException as exc:
                    failed[index] = DeliveryError(exc.args[0] if exc.args else str(exc))
                    continue
                queued += 1
            sink.seal(queued)
            await sink.future
        except BaseException:
            if self.breaker.state is not BreakerState.CLOSED:
                self.breaker.record_failure()
            raise
        if sink.failures:
            by_value = {records[i][0]: i for i in indices}
            for error, raw in sink.failures:
                found = by_value.get(raw) if raw is not None else None
                if found is not None:
                    failed[found] = DeliveryError(error)
        self._judge(failed=bool(failed))
        return failed


def _correlation(correlation_id: uuid.UUID | None) -> tuple[int, str] | None:
    return None if correlation_id is None else (correlation_id.int, str(correlation_id))


class PublishedEvents(Sequence[ModelEventEnvelope]):
    """The envelopes of one ``publish_many`` call, in order, each built when read: bulk
    producers rarely read them, and building them all would cost as much as the JSON."""

    def __init__(
        self,
        encoder: EnvelopeEncoder,
        event_type: str,
        correlation_id: int,
        causation_id: uuid.UUID | None,
        timestamp: datetime,
        bodies: list[dict[str, Any]],
        trace: tuple[str, str | None, dict[str, Any]],
    ) -> None:
        self._encoder = encoder
        self._trace = trace
        self.spans: list[str] = []
        self._event_type = event_type
        self._correlation_id = correlation_id
        self._causation_id = causation_id
        self._timestamp = timestamp
        self._bodies = bodies
        self.ids: list[int] = []

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> ModelEventEnvelope: ...

    @overload
    def __getitem__(self, index: slice) -> list[ModelEventEnvelope]: ...

    def __getitem__(self, index: int | slice) -> ModelEventEnvelope | list[ModelEventEnvelope]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._encoder.envelope(
            self.ids[index],
            self._event_type,
            self._correlation_id,
            self._causation_id,
            self._timestamp,
            metadata_model(self._trace[0], self.spans[index], self._trace[1], self._trace[2]),
            self._bodies[index],
        )

    @property
    def event_ids(self) -> list[uuid.UUID]:
        return [uuid_from_int(value) for value in self.ids]


class _BatchSink:
    """Delivery reports of one ``publish_many`` attempt. Counted on the poll thread (a list
    append is atomic), so the event loop is woken once per batch, not once per record."""

    __slots__ = ("arrived", "expected", "failures", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.arrived: list[None] = []
        self.expected = 1 << 62  # until ``seal`` says how many records were queued
        self.failures: list[tuple[KafkaError, bytes | None]] = []

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # Runs on whichever thread serves librdkafka's queue (poll thread, or flush on close).
        if err is not None:
            value = msg.value()
            self.failures.append((err, value if isinstance(value, bytes) else None))
        arrived = self.arrived
        arrived.append(None)
        if len(arrived) >= self.expected:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self.loop.call_soon_threadsafe(self._wake)

    def seal(self, expected: int) -> None:
        """On the loop, after queueing: reports that all came already wake it here."""
        self.expected = expected
        if len(self.arrived) >= expected:
            self._wake()

    def _wake(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


_Report = tuple["asyncio.Future[Message]", KafkaError | None, Message]


def _settle_all(batch: list[_Report]) -> None:
    for future, err, msg in batch:
        if future.done():
            continue
        if err is not None:
            future.set_exception(DeliveryError(err))
        else:
            future.set_result(msg)


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
