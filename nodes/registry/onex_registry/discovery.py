"""Reading the discovery protocol off the bus into the registry's view.

One consumer, assigned (not subscribed) so every start reads the compacted
introspection topic from its first offset and rebuilds the view, while the
heartbeat and shutdown topics are read from their end (what happened while the
registry was away is already in the compacted topic: announcements and
tombstones). The consumer group is used only to remember how far records were
*processed*, so a poison record kept by compaction is dead-lettered once, not
on every restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.cimpl import NewTopic
from pydantic import ValidationError

from .consul_registry import HealthEndpointError, RegistrySettings, build_registration
from .reconcile import Reconciler, RegistryView
from .runtime import naming
from .runtime.events import (
    ModelEventEnvelope,
    ModelIntrospectionRequest,
    ModelNodeHeartbeatEvent,
    ModelNodeIntrospectionEvent,
    ModelNodeShutdownEvent,
)
from .runtime.publisher import EventPublisher

log = logging.getLogger(__name__)

#: The compacted topic keeps the latest announcement per node; tombstones are kept a day so a
#: registry that was down a while still sees who left.
COMPACTED_TOPIC_CONFIG: Final = {
    "cleanup.policy": "compact",
    "delete.retention.ms": str(24 * 3600 * 1000),
    "min.compaction.lag.ms": "0",
    "segment.ms": str(3600 * 1000),
}

#: A node that heartbeats without the registry knowing it is asked to announce at most this often.
REANNOUNCE_COOLDOWN_S: Final = 5.0


class PoisonRecordError(ValueError):
    """A record that can never be processed: it goes to the dead-letter topic."""


class TopicSetupError(RuntimeError):
    """The discovery topics could not be created or checked."""


def ensure_discovery_topics(
    kafka_config: Mapping[str, Any], environment: str, timeout_s: float = 2.0
) -> list[str]:
    """Create the discovery topics that are missing; make the introspection topic compacted.

    The registry does this at start, before any node can rely on it. Returns what it changed.
    Blocking: run it in a thread. The timeout is short because a blocked librdkafka call
    cannot be cancelled, and a stopping registry waits for it; the caller retries.
    """
    admin = AdminClient(dict(kafka_config))
    topics = naming.discovery_topics(environment)
    wanted = [*topics.values(), *(naming.dead_letter_topic(t) for t in topics.values())]
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as error:
        raise TopicSetupError(f"cannot list Kafka topics: {error}") from error
    compacted = topics["introspection"]
    changes: list[str] = []
    new = [
        NewTopic(
            name,
            num_partitions=-1,  # the broker's num.partitions and replication factor
            replication_factor=-1,
            config=dict(COMPACTED_TOPIC_CONFIG) if name == compacted else {},
        )
        for name in wanted
        if name not in existing
    ]
    if new:
        for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                future.result(timeout_s)
                changes.append(f"created {name}")
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicSetupError(f"cannot create topic {name}: {error}") from error
    # CreateTopics is answered once the controller has the topic; the broker serving
    # metadata learns of it a moment later (measured on Apache Kafka 4.1 in KRaft mode:
    # 2 of 20 metadata requests right after the reply did not list the new topics).
    # Return only when a metadata request shows every topic with a leader, so the
    # consumers that start next see them (also on a retry after a timeout here).
    _wait_until_visible(admin, wanted, 3 * timeout_s)
    if compacted in existing:
        # Someone created it first (a node publishing with broker auto-creation): make sure it
        # really is compacted, or the durable snapshot would expire.
        resource = ConfigResource(ConfigResource.Type.TOPIC, compacted)
        try:
            configs = admin.describe_configs([resource])[resource].result(timeout_s)
        except KafkaException as error:
            raise TopicSetupError(f"cannot read the config of {compacted}: {error}") from error
        policy = configs.get("cleanup.policy")
        if policy is None or "compact" not in str(policy.value):
            entry = ConfigEntry(
                "cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET
            )
            alter = ConfigResource(
                ConfigResource.Type.TOPIC, compacted, incremental_configs=[entry]
            )
            try:
                admin.incremental_alter_configs([alter])[alter].result(timeout_s)
            except KafkaException as error:
                raise TopicSetupError(
                    f"{compacted} exists with cleanup.policy="
                    f"{policy.value if policy else '?'}; set it to compact: {error}"
                ) from error
            changes.append(f"set cleanup.policy=compact on {compacted}")
    return changes


def _wait_until_visible(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """Poll metadata until ``names`` all exist with a leader on every partition."""
    deadline = time.monotonic() + timeout_s
    pending = list(names)
    while True:
        try:
            metadata = admin.list_topics(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaException as error:
            raise TopicSetupError(f"cannot list Kafka topics: {error}") from error
        pending = [name for name in pending if not _has_leaders(metadata.topics.get(name))]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TopicSetupError(
                f"topics {', '.join(pending)} were created but the broker's metadata does not "
                f"show them with a leader after {timeout_s:.0f}s; check the broker's log"
            )
        time.sleep(0.05)


def _has_leaders(topic: Any) -> bool:
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(p.leader >= 0 and p.error is None for p in topic.partitions.values())


@dataclass
class DiscoveryStats:
    introspections: int = 0
    heartbeats: int = 0
    shutdowns: int = 0
    tombstones: int = 0
    dead_lettered: int = 0
    replayed: bool = False
    unknown_heartbeats: int = 0
    reannounce_requests: int = 0


class DiscoveryConsumer:
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
        self._config = {
            **kafka_config,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
        self.topics = naming.discovery_topics(environment)
        self._settings = settings
        self.view = view
        self._reconciler = reconciler
        self._publisher = publisher
        self._requested_by = requested_by
        self._clock = clock
        self._batch_size = batch_size
        self.stats = DiscoveryStats()
        self._last_request: dict[str, float] = {}  # service -> when it was last asked
        # One thread owns the consumer: librdkafka consumers must not be used concurrently.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="discovery")
        self._consumer: Consumer | None = None
        self._watermarks: dict[int, int] = {}  # introspection partition -> processed offset
        self._pending_eof: set[int] = set()
        self.replayed = asyncio.Event()

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
        intro = self.topics["introspection"]
        for role in ("introspection", "heartbeat", "shutdown"):
            name = self.topics[role]
            topic_meta = metadata.topics.get(name)
            if topic_meta is None or topic_meta.error is not None:
                raise TopicSetupError(
                    f"topic {name} is missing; the registry creates it at start, check the broker"
                )
            start = OFFSET_BEGINNING if name == intro else OFFSET_END
            assignment += [TopicPartition(name, p, start) for p in topic_meta.partitions]
        intro_parts = [tp for tp in assignment if tp.topic == intro]
        committed = consumer.committed(
            [TopicPartition(intro, tp.partition) for tp in intro_parts], timeout=5.0
        )
        self._watermarks = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
        # Empty partitions send no EOF event, so only wait for those holding records.
        self._pending_eof = set()
        for tp in intro_parts:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(intro, tp.partition), timeout=5.0
            )
            if high > low:
                self._pending_eof.add(tp.partition)
        consumer.assign(assignment)

    def _poll(self) -> list[Message]:
        assert self._consumer is not None
        return list(self._consumer.consume(num_messages=self._batch_size, timeout=0.2))

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            self._commit_watermarks(consumer)
            consumer.close()

    def _commit_watermarks(self, consumer: Consumer) -> None:
        if not self._watermarks:
            return
        intro = self.topics["introspection"]
        offsets = [TopicPartition(intro, p, o) for p, o in self._watermarks.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            log.debug("could not record processed offsets: %s", error)

    async def _handle_batch(self, batch: list[Message]) -> None:
        intro = self.topics["introspection"]
        progressed = False
        for message in batch:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if message.topic() == intro:
                        self._pending_eof.discard(message.partition() or 0)
                        self._check_replayed()
                    continue
                log.warning("Kafka consumer error: %s", error)
                continue
            await self._handle(message)
            if message.topic() == intro:
                partition, offset = message.partition() or 0, message.offset() or 0
                self._watermarks[partition] = max(self._watermarks.get(partition, 0), offset + 1)
                progressed = True
        self._check_replayed()
        self._reconciler.wake()
        if progressed:
            consumer = self._consumer
            if consumer is not None:
                intro_offsets = [TopicPartition(intro, p, o) for p, o in self._watermarks.items()]
                await self._call(lambda: consumer.commit(offsets=intro_offsets, asynchronous=True))

    def _check_replayed(self) -> None:
        if not self._pending_eof and not self.replayed.is_set():
            self.stats.replayed = True
            self.replayed.set()
            log.info(
                "rebuilt the view from %s: %d node(s)",
                self.topics["introspection"],
                len(self.view.records),
            )

    async def _handle(self, message: Message) -> None:
        topic = message.topic() or ""
        try:
            if topic == self.topics["introspection"]:
                self._on_introspection(message)
            elif topic == self.topics["heartbeat"]:
                await self._on_heartbeat(message)
            elif topic == self.topics["shutdown"]:
                self._on_shutdown(message)
        except PoisonRecordError as error:
            await self._dead_letter(message, str(error))

    def _is_replayed_poison(self, message: Message) -> bool:
        if message.topic() != self.topics["introspection"]:
            return False
        done = self._watermarks.get(message.partition() or 0)
        return done is not None and (message.offset() or 0) < done

    async def _dead_letter(self, message: Message, reason: str) -> None:
        if self._is_replayed_poison(message):
            log.debug("skipping a record dead-lettered before: %s", reason)
            return
        self.stats.dead_lettered += 1
        await self._publisher.dead_letter(
            source_topic=message.topic() or "",
            original=message.value(),
            error=reason,
            attempts=1,
            key=message.key(),
            partition=message.partition(),
            offset=message.offset(),
        )

    # -- decoding ---------------------------------------------------------------

    @staticmethod
    def _envelope(message: Message, event_type: str) -> ModelEventEnvelope:
        value = message.value()
        if value is None:
            raise PoisonRecordError("empty record (no value) where an event was expected")
        try:
            envelope = ModelEventEnvelope.from_bytes(value)
        except ValidationError as error:
            raise PoisonRecordError(f"not an event envelope: {_short(error)}") from error
        if envelope.event_type != event_type:
            raise PoisonRecordError(
                f"event_type {envelope.event_type!r} on {message.topic()}; expected {event_type!r}"
            )
        return envelope

    def _on_introspection(self, message: Message) -> None:
        now = self._clock()
        if message.value() is None:
            key = (message.key() or b"").decode(errors="replace")
            if self.view.tombstone(key, _message_time(message, now)):
                self.stats.tombstones += 1
            return
        envelope = self._envelope(message, naming.EVENT_NODE_INTROSPECTION)
        try:
            event = ModelNodeIntrospectionEvent.model_validate(envelope.payload)
        except ValidationError as error:
            raise PoisonRecordError(f"invalid introspection payload: {_short(error)}") from error
        problems = [
            f"{rule} {msg}"
            for rule, value in (
                ("service_name", event.service_name),
                ("version", event.version),
                ("domain", event.domain),
            )
            if (msg := naming.check(rule, value))
        ]
        if problems:
            raise PoisonRecordError("invalid introspection: " + "; ".join(problems))
        try:
            registration = build_registration(event, self._settings)
        except HealthEndpointError as error:
            raise PoisonRecordError(str(error)) from error
        # Replayed history carries its own age: a node that announced itself long ago and
        # was never heard of since is remembered, but not registered again until it shows a
        # sign of life (it answers the introspection request sent after the replay).
        seen = now if self.replayed.is_set() else min(now, _message_time(message, now))
        self.view.introspection(registration, envelope.timestamp.timestamp(), seen)
        self.stats.introspections += 1

    async def _on_heartbeat(self, message: Message) -> None:
        envelope = self._envelope(message, naming.EVENT_NODE_HEARTBEAT)
        try:
            beat = ModelNodeHeartbeatEvent.model_validate(envelope.payload)
        except ValidationError as error:
            raise PoisonRecordError(f"invalid heartbeat payload: {_short(error)}") from error
        self.stats.heartbeats += 1
        note = f"{beat.status}; up {beat.uptime_s:.0f}s" + (
            f"; {', '.join(beat.reasons)}" if beat.reasons else ""
        )
        if self.view.heartbeat(str(beat.node_id), beat.status, note, self._clock()):
            return
        # A live node the registry does not know (its announcement was lost or compacted
        # away): ask that service to announce itself again, at most every few seconds.
        self.stats.unknown_heartbeats += 1
        now = time.monotonic()
        last = self._last_request.get(beat.service_name, -REANNOUNCE_COOLDOWN_S)
        if now - last >= REANNOUNCE_COOLDOWN_S:
            self._last_request[beat.service_name] = now
            await self.request_introspection(beat.service_name, "unknown node heartbeat")

    def _on_shutdown(self, message: Message) -> None:
        envelope = self._envelope(message, naming.EVENT_NODE_SHUTDOWN)
        try:
            event = ModelNodeShutdownEvent.model_validate(envelope.payload)
        except ValidationError as error:
            raise PoisonRecordError(f"invalid shutdown payload: {_short(error)}") from error
        if self.view.shutdown(str(event.node_id), envelope.timestamp.timestamp()):
            self.stats.shutdowns += 1

    async def request_introspection(self, service_name: str | None, reason: str) -> None:
        """Ask every node (or one service) to announce itself again."""
        request = ModelIntrospectionRequest(
            requested_by=self._requested_by, service_name=service_name, reason=reason
        )
        await self._publisher.publish(
            naming.EVENT_INTROSPECTION_REQUESTED,
            request.model_dump(mode="json"),
            topic=self.topics["introspection_request"],
            key=service_name or "all",
            correlation_id=uuid.uuid4(),
        )
        self.stats.reannounce_requests += 1


def _message_time(message: Message, default: float) -> float:
    """The record's timestamp in epoch seconds (the broker's or the producer's)."""
    kind, millis = message.timestamp()
    return millis / 1000 if kind != TIMESTAMP_NOT_AVAILABLE and millis > 0 else default


def _short(error: ValidationError) -> str:
    """A validation error in one line: field path and message for each problem."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "(root)"
        parts.append(f"{where}: {item.get('msg', '')}")
    more = len(error.errors()) - 5
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
