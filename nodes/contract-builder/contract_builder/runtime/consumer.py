"""An at-least-once consumer loop that never blocks the event loop.

Every call into the confluent-kafka ``Consumer`` runs on one dedicated thread
(the client is not meant to be used from several threads at once). Offsets are
committed only after the handler succeeded or the message was dead-lettered, so
a crash re-delivers instead of losing work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import ValidationError

from .events import ModelEventEnvelope
from .metrics import Metrics
from .publisher import BrokerUnavailableError, EventPublisher, PublishError
from .resilience import CircuitOpenError, backoff_delay
from .tracing import handling

log = logging.getLogger(__name__)

T = TypeVar("T")


def consume_ready(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """Up to ``max_messages`` records, waiting at most ``timeout_s`` for the first one only.

    ``Consumer.consume(n, timeout)`` waits until it has ``n`` records or the timeout ends, so
    a lone command would sit out the whole timeout at every hop between nodes. Waiting for
    one record and then taking what is already fetched keeps batches under load and answers
    a single command at once. Blocking: call it on the consumer's own thread.
    """
    first: list[Message] = consumer.consume(1, timeout_s)
    if not first or max_messages <= 1:
        return first
    return first + consumer.consume(max_messages - 1, 0)


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help: the message is dead-lettered at once."""


@dataclass(frozen=True)
class ConsumedMessage:
    """One record as a handler sees it. ``envelope`` is None only for tombstones."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    envelope: ModelEventEnvelope | None
    headers: dict[str, bytes] = field(default_factory=dict)

    @property
    def is_tombstone(self) -> bool:
        return self.value is None


Handler = Callable[[ConsumedMessage], Awaitable[None]]
GiveUpHook = Callable[[ConsumedMessage, BaseException], Awaitable[None]]


class EventConsumer:
    """Consume ``topics`` in ``group_id`` and run ``handler`` for each envelope, in order.

    Handler failures are retried ``max_retries`` times with backoff, then the record
    is dead-lettered (with the error and attempt count) and committed. Records that
    are not a valid envelope are dead-lettered at once. With ``manual_commit`` the
    owner commits through ``commit()`` (the reducer does, after persisting state).
    """

    def __init__(
        self,
        *,
        name: str,
        topics: list[str],
        group_id: str,
        handler: Handler,
        publisher: EventPublisher,
        kafka_config: Mapping[str, Any],
        metrics: Metrics | None = None,
        max_retries: int = 3,
        backoff_s: float = 0.2,
        batch_size: int = 100,
        poll_timeout_s: float = 0.5,
        auto_offset_reset: str = "earliest",
        manual_commit: bool = False,
        accept_tombstones: bool = False,
        on_give_up: GiveUpHook | None = None,
    ) -> None:
        if not topics:
            raise ValueError(f"consumer {name!r} needs at least one topic")
        self.name = name
        self.topics = list(dict.fromkeys(topics))
        self.group_id = group_id
        self.handler = handler
        self.publisher = publisher
        self.metrics = metrics or publisher.metrics
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.manual_commit = manual_commit
        self.accept_tombstones = accept_tombstones
        self.on_give_up = on_give_up
        self._config: dict[str, Any] = {
            **kafka_config,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": auto_offset_reset,
            "allow.auto.create.topics": True,
            "topic.metadata.refresh.interval.ms": 10_000,
            "error_cb": self._on_client_error,
        }
        self._executor: ThreadPoolExecutor | None = None
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.in_flight = 0
        self.broker_down = False
        self.failed: BaseException | None = None

    # -- thread helpers --------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _on_client_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.broker_down = True
        log.debug("consumer %s: %s", self.name, err)

    # -- lifecycle -------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._task is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-{self.name}")
        self._consumer = await self._call(Consumer, self._config)
        await self._call(self._consumer.subscribe, self.topics)
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.name}")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop intake, let the in-flight message finish (bounded), commit, leave the group."""
        await self.drain(timeout_s)
        await self.close()

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Stop taking new records and wait (bounded) for the in-flight one; commits done work."""
        self._stopping.set()
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout_s))
            if not done:
                log.warning(
                    "consumer %s: in-flight work exceeded %.1fs, cancelling", self.name, timeout_s
                )
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # already logged by the loop; mark it retrieved

    async def close(self) -> None:
        """Leave the group and release the client (call after ``drain``)."""
        self._stopping.set()
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                await self._call(consumer.close)
            except (KafkaException, RuntimeError) as exc:
                log.warning("consumer %s: close failed: %s", self.name, exc)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        """Synchronously commit ``{(topic, partition): next_offset}``; True when the broker agreed."""
        consumer = self._consumer
        if not offsets or consumer is None:
            return not offsets
        parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        for attempt in range(1, 6):
            try:
                await self._call(consumer.commit, offsets=parts, asynchronous=False)
                return True
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET:
                    return True
                log.warning("consumer %s: commit failed (attempt %d): %s", self.name, attempt, exc)
                await asyncio.sleep(backoff_delay(attempt, 0.2, 2.0))
        return False

    # -- the loop --------------------------------------------------------------

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while not self._stopping.is_set():
                messages = await self._call(
                    consume_ready, consumer, self.batch_size, self.poll_timeout_s
                )
                done: dict[tuple[str, int], int] = {}
                for message in messages:
                    if self._stopping.is_set():
                        break  # not started yet: re-delivered after restart, never lost
                    error = message.error()
                    if error is not None:
                        self._on_message_error(error)
                        continue
                    self.broker_down = False
                    self.metrics.inc("onex_messages_consumed_total")
                    topic, partition, offset = (
                        message.topic(),
                        message.partition(),
                        message.offset(),
                    )
                    assert topic is not None and partition is not None and offset is not None
                    self.in_flight += 1
                    try:
                        handled = await self._process(message, topic, partition, offset)
                    finally:
                        self.in_flight -= 1
                    if not handled:
                        break
                    done[(topic, partition)] = offset + 1
                if done and not self.manual_commit:
                    await self.commit(done)
        except Exception as exc:
            self.failed = exc
            log.exception("consumer %s stopped on an unexpected error", self.name)
            raise

    def _on_message_error(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
            return  # topic not created yet: the subscription picks it up when it appears
        if error.fatal():
            raise KafkaException(error)
        log.warning("consumer %s: %s", self.name, error)

    async def _process(self, message: Message, topic: str, partition: int, offset: int) -> bool:
        """Handle one record; True when it may be committed."""
        raw_key = message.key()
        key = raw_key.decode("utf-8", errors="replace") if isinstance(raw_key, bytes) else raw_key
        value = message.value()
        headers = _headers(message)
        if value is None:
            if not self.accept_tombstones:
                return True
            item = ConsumedMessage(topic, partition, offset, key, None, None, headers)
        else:
            try:
                envelope = ModelEventEnvelope.from_bytes(value)
            except ValidationError as exc:
                return await self._dead_letter(
                    topic, partition, offset, key, value, f"not a valid event envelope: {exc}", 0
                )
            item = ConsumedMessage(topic, partition, offset, key, value, envelope, headers)

        metadata = item.envelope.metadata if item.envelope is not None else None
        # Events published while handling (results, dead letters) join the consumed
        # event's trace: the publisher reads the context ``handling`` sets.
        with handling(
            metadata.trace_id if metadata else None, metadata.span_id if metadata else None
        ):
            return await self._run_handler(item, topic, partition, offset, key, value)

    async def _run_handler(
        self,
        item: ConsumedMessage,
        topic: str,
        partition: int,
        offset: int,
        key: str | None,
        value: bytes | None,
    ) -> bool:
        """The handler with retries, then the dead-letter topic; True when committable."""
        error: BaseException | None = None
        attempts = 0
        broker_waits = 0
        while attempts <= self.max_retries:
            try:
                await self.handler(item)
            except (PermanentError, ValidationError) as exc:
                self.metrics.inc("onex_handler_errors_total")
                attempts += 1
                error = exc
                break
            except Exception as exc:
                self.metrics.inc("onex_handler_errors_total")
                wait_s = _broker_wait_s(exc)
                if wait_s is not None:
                    # The broker failed, not the record: wait for it without using up the
                    # handler's retries, so an outage never turns good records into dead
                    # letters. Stopping meanwhile leaves the record uncommitted.
                    broker_waits += 1
                    log.warning(
                        "consumer %s: Kafka unavailable while handling %s[%d]@%d (%s); "
                        "retrying the record in %.1fs",
                        self.name,
                        topic,
                        partition,
                        offset,
                        exc,
                        wait_s,
                    )
                    if not await self._pause(max(wait_s, backoff_delay(broker_waits, 0.5, 5.0))):
                        return False
                    continue
                attempts += 1
                error = exc
                log.warning(
                    "consumer %s: handler failed on %s[%d]@%d (attempt %d/%d): %r",
                    self.name,
                    topic,
                    partition,
                    offset,
                    attempts,
                    self.max_retries + 1,
                    exc,
                )
                if attempts <= self.max_retries:
                    await asyncio.sleep(backoff_delay(attempts, self.backoff_s, 5.0))
            else:
                self.metrics.inc("onex_messages_processed_total")
                return True
        assert error is not None
        if self.on_give_up is not None:
            try:
                await self.on_give_up(item, error)
            except Exception:
                log.exception("consumer %s: give-up hook failed", self.name)
        return await self._dead_letter(
            topic,
            partition,
            offset,
            key,
            value,
            f"{type(error).__name__}: {error}",
            attempts,
            correlation=item.envelope,
        )

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the consumer is stopping; False when it is."""
        if self._stopping.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=min(seconds, 30.0))
        return not self._stopping.is_set()

    async def _dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: str | None,
        value: bytes | None,
        error: str,
        attempts: int,
        correlation: ModelEventEnvelope | None = None,
    ) -> bool:
        """Dead-letter until the broker confirms; if we are stopping first, leave it uncommitted."""
        attempt = 0
        while True:
            attempt += 1
            if await self.publisher.dead_letter(
                source_topic=topic,
                original=value,
                error=error,
                attempts=attempts,
                key=key,
                partition=partition,
                offset=offset,
                correlation_id=correlation.correlation_id if correlation else None,
                causation_id=correlation.event_id if correlation else None,
            ):
                return True
            if self._stopping.is_set():
                return False
            await asyncio.sleep(backoff_delay(attempt, 0.5, 10.0))


def _broker_wait_s(exc: BaseException) -> float | None:
    """Seconds to wait when ``exc`` (or its cause) says Kafka is unreachable, else None.

    A publish that failed without reaching the dead-letter topic (breaker open, retries
    timed out) is the broker's failure; one the broker refused (too large) is the record's.
    """
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, BrokerUnavailableError):
            return candidate.retry_after_s
        if isinstance(candidate, CircuitOpenError):
            return 1.0
        if isinstance(candidate, PublishError):
            return 0.0 if candidate.retriable and not candidate.dead_lettered else None
    return None


def _headers(message: Message) -> dict[str, bytes]:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v.encode() if isinstance(v, str) else (v or b"") for k, v in pairs}
