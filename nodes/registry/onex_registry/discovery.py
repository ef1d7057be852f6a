"""Reading the discovery protocol off the bus into the registry's view.

One consumer, assigned (not subscribed) so every start reads the compacted
introspection topic from its first offset and rebuilds the view, while the
heartbeat and shutdown topics are read from their end (what happened while the
registry was away is already in the compacted topic: announcements and
tombstones). The consumer group is used only to remember how far records were
*processed*, so a poison record kept by compaction is dead-lettered once, not
on every restart.

The parts beside it: ``discovery_records.py`` checks and applies each record,
``topic_setup.py`` creates the topics at start, ``record_decoding.py`` reads a
record's envelope and headers, ``reannounce.py`` limits the requests to announce
again, ``host_resolver.py`` resolves health endpoint names. Their names are
importable from here as well.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from .consul_registry import RegistrySettings
from .discovery_records import DiscoveryRecordHandler, DiscoveryStats
from .host_resolver import RESOLVE_CACHE_S, RESOLVE_TIMEOUT_S, HostResolver
from .reannounce import REANNOUNCE_COOLDOWN_S, REANNOUNCE_MEMORY, ReannounceLimiter, TokenBucket
from .reconcile import Reconciler
from .record_decoding import EXPIRED_HEADER, PoisonRecordError
from .registry_view import RegistryView
from .runtime.consumer import consume_ready
from .runtime.publisher import EventPublisher
from .topic_setup import COMPACTED_TOPIC_CONFIG, TopicSetupError, ensure_discovery_topics

__all__ = [
    "COMPACTED_TOPIC_CONFIG",
    "EXPIRED_HEADER",
    "REANNOUNCE_COOLDOWN_S",
    "REANNOUNCE_MEMORY",
    "RESOLVE_CACHE_S",
    "RESOLVE_TIMEOUT_S",
    "DiscoveryConsumer",
    "DiscoveryRecordHandler",
    "DiscoveryStats",
    "HostResolver",
    "PoisonRecordError",
    "ReannounceLimiter",
    "TokenBucket",
    "TopicSetupError",
    "ensure_discovery_topics",
]

log = logging.getLogger(__name__)


class DiscoveryConsumer(DiscoveryRecordHandler):
    """Feeds introspection, heartbeat and shutdown events into the view, until cancelled."""

    def __init__(
        self,
        *,
        kafka_config: Mapping[str, Any],
        environment: str,
        group_id: str,
        settings: RegistrySettings,
        view: RegistryView,
        reconciler: Reconciler,
        publisher: EventPublisher,
        requested_by: str,
        clock: Callable[[], float] = time.time,
        batch_size: int = 500,
    ) -> None:
        super().__init__(
            environment=environment,
            settings=settings,
            view=view,
            publisher=publisher,
            requested_by=requested_by,
            clock=clock,
        )
        self._config = {
            **kafka_config,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
        self._reconciler = reconciler
        self._batch_size = batch_size
        # One thread owns the consumer: librdkafka consumers must not be used concurrently.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="discovery")
        self._consumer: Consumer | None = None
        self._pending_eof: set[tuple[str, int]] = set()
        self.replayed_at: float | None = None

    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def run(self) -> None:
        try:
            attempt = 0
            while True:
                try:
                    await self._call(self._open)
                    break
                except (KafkaException, TopicSetupError) as error:
                    # e.g. NOT_LEADER right after the topics were created: try again shortly.
                    attempt += 1
                    delay = min(0.2 * 2**attempt, 5.0)
                    log.info("discovery consumer not ready (%s); retrying in %.1fs", error, delay)
                    await asyncio.sleep(delay)
            while True:
                batch: list[Message] = await self._call(self._poll)
                if batch:
                    await self._handle_batch(batch)
        finally:
            # The poll in flight (if cancelled) finishes within its timeout on the same thread,
            # so this close runs after it.
            close = asyncio.get_running_loop().run_in_executor(self._thread, self._close)
            await asyncio.shield(close)
            self._thread.shutdown(wait=False)

    def _open(self) -> None:
        consumer = Consumer(self._config)
        try:
            self._assign(consumer)
        except BaseException:
            consumer.close()
            raise
        self._consumer = consumer

    def _assign(self, consumer: Consumer) -> None:
        metadata = consumer.list_topics(timeout=5.0)
        assignment: list[TopicPartition] = []
        names = [self.topics[role] for role in ("introspection", "heartbeat", "shutdown")]
        names += list(self.omnibase_topics.values())
        for name in names:
            topic_meta = metadata.topics.get(name)
            if topic_meta is None or topic_meta.error is not None:
                raise TopicSetupError(
                    f"topic {name} is missing; the registry creates it at start, check the broker"
                )
            start = OFFSET_BEGINNING if name in self._replayed_topics else OFFSET_END
            assignment += [TopicPartition(name, p, start) for p in topic_meta.partitions]
        replayed = [tp for tp in assignment if tp.topic in self._replayed_topics]
        committed = consumer.committed(
            [TopicPartition(tp.topic, tp.partition) for tp in replayed], timeout=5.0
        )
        self._watermarks = {
            (tp.topic, tp.partition): tp.offset for tp in committed if tp.offset >= 0
        }
        # Empty partitions send no EOF event, so only wait for those holding records.
        self._pending_eof = set()
        for tp in replayed:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=5.0
            )
            if high > low:
                self._pending_eof.add((tp.topic, tp.partition))
        consumer.assign(assignment)

    def _poll(self) -> list[Message]:
        assert self._consumer is not None
        return consume_ready(self._consumer, self._batch_size, 0.2)

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            self._commit_watermarks(consumer)
            consumer.close()

    def _commit_watermarks(self, consumer: Consumer) -> None:
        if not self._watermarks:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._watermarks.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            log.debug("could not record processed offsets: %s", error)

    async def _handle_batch(self, batch: list[Message]) -> None:
        progressed = False
        for message in batch:
            error = message.error()
            topic = message.topic() or ""
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if topic in self._replayed_topics:
                        self._pending_eof.discard((topic, message.partition() or 0))
                        self._check_replayed()
                    continue
                log.warning("Kafka consumer error: %s", error)
                continue
            await self._handle(message)
            if topic in self._replayed_topics:
                where = (topic, message.partition() or 0)
                offset = message.offset() or 0
                self._watermarks[where] = max(self._watermarks.get(where, 0), offset + 1)
                progressed = True
        self._check_replayed()
        self._reconciler.wake()
        if progressed:
            consumer = self._consumer
            if consumer is not None:
                offsets = [TopicPartition(t, p, o) for (t, p), o in self._watermarks.items()]
                await self._call(lambda: consumer.commit(offsets=offsets, asynchronous=True))

    def _check_replayed(self) -> None:
        if not self._pending_eof and not self.replayed.is_set():
            self.stats.replayed = True
            self.replayed_at = self._clock()
            self.replayed.set()
            log.info(
                "rebuilt the view from %s: %d node(s)",
                ", ".join(sorted(self._replayed_topics)),
                len(self.view.records),
            )
