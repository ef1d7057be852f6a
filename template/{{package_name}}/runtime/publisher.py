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
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from . import naming
from .events import (
    DEAD_LETTER_MAX_ORIGINAL,
    SCHEMA_VERSION,
    ModelDeadLetter,
    ModelEventEnvelope,
    ModelEventSource,
    new_id,
    utc_now,
)
from .metrics import Metrics
from .resilience import BreakerState, CircuitBreaker, CircuitOpenError, backoff_delay

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


class PublishError(RuntimeError):
    """An event could not be published after all retries (it may have been dead-lettered)."""

    def __init__(self, message: str, *, topic: str, attempts: int, dead_lettered: bool) -> None:
        super().__init__(message)
        self.topic = topic
        self.attempts = attempts
        self.dead_lettered = dead_lettered


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


def cloudevents_headers(envelope: ModelEventEnvelope) -> Headers:
    """CloudEvents 1.0 Kafka binary-mode attributes, so CloudEvents consumers can read our
    events; the record value (the CloudEvent's data) is the whole JSON envelope. Only the
    required attributes: each header costs throughput, and time/correlation are in the data."""
    source = envelope.source
    return [
        _CE_SPECVERSION,
        ("ce_id", str(envelope.event_id)),
        ("ce_source", f"/onex/{source.service}/{source.instance_id}"),
        ("ce_type", envelope.event_type),
    ]


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
    ) -> None:
        self.service_name = service_name
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
        self.source = ModelEventSource(service=service_name, instance_id=instance_id)
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
    ) -> ModelEventEnvelope:
        if not event_type or len(event_type) > 255:
            raise ValueError("event_type must be 1 to 255 characters")
        # Every field is produced here with the right type, so the per-event validation
        # pass is skipped (it is most of the publish cost); JSON encoding still checks payload.
        return ModelEventEnvelope.model_construct(
            event_id=new_id(),
            event_type=event_type,
            correlation_id=correlation_id or new_id(),
            causation_id=causation_id,
            timestamp=utc_now(),
            schema_version=SCHEMA_VERSION,
            source=self.source,
            payload=dict(payload),
        )

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
    ) -> ModelEventEnvelope:
        """Wrap ``payload`` in an envelope, publish it, and return the envelope once confirmed.

        Raises ``PublishError`` when every retry failed; the event was then sent to
        ``naming.dead_letter_topic(topic)`` if ``enable_dlq`` (see ``.dead_lettered``).
        """
        envelope = self.envelope(event_type, payload, correlation_id, causation_id)
        return await self.publish_envelope(envelope, topic=topic, key=key, dead_letter=dead_letter)

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
        target = topic or self.default_topic
        if not target:
            raise ValueError("publish needs a topic: pass topic= or set default_topic")
        all_headers = cloudevents_headers(envelope) if self.emit_cloudevents_headers else []
        all_headers += headers or []
        value = envelope.to_bytes()
        attempts = 0
        last_error: Exception | None = None
        for attempt in range(1, self.max_retries + 2):
            attempts = attempt
            try:
                await self.produce(target, value, key=key, headers=all_headers)
            except CircuitOpenError as exc:
                last_error = exc
                break  # fail fast: waiting out the cool-down here would stall the caller
            except DeliveryError as exc:
                last_error = exc
                self._note_delivery_failure(exc)
                if not exc.retriable or attempt > self.max_retries or self._closed:
                    break
                self.metrics.inc("onex_publish_retries_total")
                delay = backoff_delay(attempt, self.backoff_s, self.backoff_max_s)
                log.warning(
                    "publish to %s failed (attempt %d/%d): %s; retrying in %.2fs",
                    target,
                    attempt,
                    self.max_retries + 1,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                self.metrics.inc("onex_events_published_total")
                return envelope
        self.metrics.inc("onex_events_publish_failed_total")
        dead_lettered = False
        use_dlq = self.enable_dlq if dead_letter is None else dead_letter
        if use_dlq and not isinstance(last_error, CircuitOpenError):
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
        ) from last_error

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
        envelope = self.envelope(
            naming.EVENT_DEAD_LETTER,
            letter.model_dump(mode="json"),
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        dlq = naming.dead_letter_topic(source_topic)
        try:
            await self.produce(
                dlq, envelope.to_bytes(), key=key, headers=cloudevents_headers(envelope)
            )
        except (DeliveryError, CircuitOpenError) as exc:
            log.error("could not dead-letter a record from %s to %s: %s", source_topic, dlq, exc)
            return False
        self.metrics.inc("onex_events_dead_lettered_total")
        log.warning("dead-lettered a record from %s to %s: %s", source_topic, dlq, error)
        return True

    async def produce(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        headers: Headers | None = None,
    ) -> Message:
        """One produce attempt through the circuit breaker; returns the confirmed message."""
        if self._closed:
            raise PublisherClosedError("EventPublisher is closed; create a new one")
        if self._producer is None:
            self.start()
        breaker = self.breaker
        breaker.before_call()
        try:
            self._recreate_if_fatal()
            producer = self._producer
            loop = self._loop
            assert producer is not None and loop is not None
            future: asyncio.Future[Message] = loop.create_future()
            reports = self._reports

            def on_delivery(err: KafkaError | None, msg: Message) -> None:
                # Runs on the poll thread: queue the outcome; the poll thread hands the
                # whole batch to the event loop at once (one wake-up per poll, not per record).
                reports.append((future, err, msg))

            deadline = 0.0
            while True:
                try:
                    producer.produce(
                        topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    # Local queue full: let the poll thread drain it.
                    deadline = deadline or loop.time() + self.delivery_timeout_ms / 1000
                    if loop.time() > deadline:
                        raise DeliveryError("local producer queue stayed full") from None
                    await asyncio.sleep(0.05)
                except KafkaException as exc:
                    raise DeliveryError(exc.args[0] if exc.args else str(exc)) from exc
            # librdkafka reports every record: delivered, failed, timed out
            # (message.timeout.ms) or purged on close, so this await is bounded.
            message = await future
        except DeliveryError:
            breaker.record_failure()
            raise
        except BaseException:
            # Cancelled or unexpected: free a half-open probe slot without judging the broker.
            if breaker.state is not BreakerState.CLOSED:
                breaker.record_failure()
            raise
        if breaker.consecutive_failures or breaker.state is not BreakerState.CLOSED:
            breaker.record_success()
        self.broker_down = False
        return message


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
