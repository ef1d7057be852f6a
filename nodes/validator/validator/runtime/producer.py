"""Producing with the broker's confirmation, through a circuit breaker.

confluent-kafka's ``Producer`` is driven by one background thread that calls
``poll()``; delivery reports resolve asyncio futures through
``loop.call_soon_threadsafe`` (``delivery_reports``), so ``await produce(...)``
returns only once the broker has acknowledged the record (acks=all) and never
blocks the event loop. ``ConfirmedProducer`` is the Kafka side of ``EventPublisher``:
the producer's life (start, poll thread, probe, recreation after fatal errors,
close) and one attempt of a record or a batch; retries, envelopes and the
dead-letter topic are the publisher's (``publisher``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from .delivery_reports import BatchSink, DeliveryReport, settle_reports
from .metrics import Metrics
from .publish_errors import DeliveryError, PublisherClosedError
from .resilience import BreakerState, CircuitBreaker
from .signing import DiscoverySigner

log = logging.getLogger(__name__)

#: A record's Kafka headers, as confluent-kafka takes them.
Headers = list[tuple[str, str | bytes | None]]


class ConfirmedProducer:
    """One Kafka producer (acks=all, idempotent) whose records are awaited until confirmed."""

    def __init__(
        self,
        bootstrap_servers: str,
        service_name: str,
        instance_id: str,
        *,
        breaker: CircuitBreaker | None = None,
        delivery_timeout_ms: int = 30_000,
        producer_config: Mapping[str, Any] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.service_name = service_name
        self.instance_id = instance_id
        self.breaker = breaker or CircuitBreaker()
        self.delivery_timeout_ms = delivery_timeout_ms
        self.metrics = metrics or Metrics()
        #: Signs the records of the discovery topics when ONEX_DISCOVERY_KEY is set (the node
        #: sets it); None: nothing is signed.
        self.signer: DiscoverySigner | None = None
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
        self._reports: collections.deque[DeliveryReport] = collections.deque()
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

    # -- lifecycle ---------------------------------------------------------------------

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
        batch: list[DeliveryReport] = []
        with contextlib.suppress(IndexError):
            while True:
                batch.append(self._reports.popleft())
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(settle_reports, batch)

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

    # -- broker state ------------------------------------------------------------------

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

    def _note_delivery_failure(self, exc: DeliveryError) -> None:
        err = exc.kafka_error
        timed_out = err is not None and err.code() == KafkaError._MSG_TIMED_OUT
        if timed_out and time.monotonic() - self._recreated_at > 5.0:
            self._stale = True

    # -- one attempt -------------------------------------------------------------------

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
                _queue: Callable[[DeliveryReport], None] = self._reports.append,
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
        sink = BatchSink(loop)
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
