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
import ipaddress
import logging
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
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

from . import omnibase
from .admission import (
    AdmissionError,
    IPAddress,
    check_clock,
    check_record_size,
    check_sizes,
    parse_health_url,
)
from .consul_registry import RegistrySettings, build_registration
from .reconcile import Reconciler, RegistryView
from .runtime import naming
from .runtime import topics as runtime_topics
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
#: Services whose last request time is remembered (heartbeats may name any number of them).
REANNOUNCE_MEMORY: Final = 4096
#: The registry's own expiry tombstones carry the expired record's announcement time, so a
#: newer announcement that crossed the tombstone is not removed with it.
EXPIRED_HEADER: Final = "onex_expired_announced_at"
#: DNS answers for health endpoint names are reused this long.
RESOLVE_CACHE_S: Final = 30.0
RESOLVE_TIMEOUT_S: Final = 2.0


class PoisonRecordError(ValueError):
    """A record that can never be processed: it goes to the dead-letter topic."""


class TopicSetupError(RuntimeError):
    """The discovery topics could not be created or checked."""


def ensure_discovery_topics(
    kafka_config: Mapping[str, Any],
    environment: str,
    timeout_s: float = 2.0,
    extra_topics: Sequence[str] = (),
    replication_factor: int = 0,
    min_insync_replicas: int = 0,
) -> list[str]:
    """Create the discovery topics that are missing; make the introspection topic compacted.

    The registry does this at start, before any node can rely on it. Returns what it changed.
    Blocking: run it in a thread. The timeout is short because a blocked librdkafka call
    cannot be cancelled, and a stopping registry waits for it; the caller retries.
    """
    admin = AdminClient(dict(kafka_config))
    topics = naming.discovery_topics(environment)
    names = [*topics.values(), *extra_topics]
    wanted = [*names, *(naming.dead_letter_topic(t) for t in names)]
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as error:
        raise TopicSetupError(f"cannot list Kafka topics: {error}") from error
    existing = set(metadata.topics)
    # KAFKA_TOPIC_REPLICATION_FACTOR / KAFKA_TOPIC_MIN_INSYNC_REPLICAS, as for every node's
    # own topics (0 = what the cluster can hold).
    try:
        replication = runtime_topics.replication_for(
            len(metadata.brokers), replication_factor, min_insync_replicas
        )
    except runtime_topics.TopicSetupError as error:
        raise TopicSetupError(str(error)) from error
    compacted = topics["introspection"]
    changes: list[str] = []
    new = [
        NewTopic(
            name,
            num_partitions=-1,  # the broker's num.partitions
            replication_factor=replication.replication_factor,
            config={
                "min.insync.replicas": str(replication.min_insync_replicas),
                **(COMPACTED_TOPIC_CONFIG if name == compacted else {}),
            },
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
    reannounce_suppressed: int = 0


class TokenBucket:
    """``rate`` events per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


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
        # service -> when it was last asked (bounded: heartbeats may name any service)
        self._last_request: OrderedDict[str, float] = OrderedDict()
        self._reannounce = TokenBucket(settings.reannounce_per_s, settings.reannounce_burst)
        self._policy = settings.address_policy()
        self._signer = settings.signer(environment)
        self._resolved: dict[str, tuple[float, tuple[IPAddress, ...]]] = {}
        # One thread owns the consumer: librdkafka consumers must not be used concurrently.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="discovery")
        self._consumer: Consumer | None = None
        #: omnibase_core's topics (read as well unless REGISTRY_OMNIBASE_CORE=false).
        self.omnibase_topics = (
            omnibase.topics(settings.omnibase_topic_prefix) if settings.omnibase_core else {}
        )
        #: Introspection topics, read from their first offset at every start.
        self._replayed_topics = {self.topics["introspection"]} | (
            {self.omnibase_topics["introspection"]} if self.omnibase_topics else set()
        )
        # (replayed topic, partition) -> offset processed up to
        self._watermarks: dict[tuple[str, int], int] = {}
        self._pending_eof: set[tuple[str, int]] = set()
        self.replayed = asyncio.Event()
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
        return list(self._consumer.consume(num_messages=self._batch_size, timeout=0.2))

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

    async def _handle(self, message: Message) -> None:
        """Apply one record; whatever goes wrong with it, dead-letter it and go on."""
        topic = message.topic() or ""
        try:
            check_record_size(message.value())
            if self._signer is not None:
                reason = self._signer.verify(
                    topic, message.key(), message.value(), message.headers()
                )
                if reason:
                    raise PoisonRecordError(f"unsigned or forged record: {reason}")
            if topic == self.topics["introspection"]:
                await self._on_introspection(message)
            elif topic == self.topics["heartbeat"]:
                await self._on_heartbeat(message)
            elif topic == self.topics["shutdown"]:
                self._on_shutdown(message)
            elif self.omnibase_topics:
                await self._on_omnibase(message)
        except (PoisonRecordError, AdmissionError) as error:
            await self._dead_letter(message, str(error))
        except Exception as error:
            # A bug or a case nobody foresaw: this record alone is set aside; discovery goes on.
            log.exception("could not handle a record from %s", topic)
            await self._dead_letter(message, f"{type(error).__name__}: {error}")

    def _is_replayed_poison(self, message: Message) -> bool:
        topic = message.topic() or ""
        if topic not in self._replayed_topics:
            return False
        done = self._watermarks.get((topic, message.partition() or 0))
        return done is not None and (message.offset() or 0) < done

    async def _dead_letter(self, message: Message, reason: str) -> None:
        if self._is_replayed_poison(message):
            log.debug("skipping a record dead-lettered before: %s", reason)
            return
        self.stats.dead_lettered += 1
        try:
            await self._publisher.dead_letter(
                source_topic=message.topic() or "",
                original=message.value(),
                error=reason,
                attempts=1,
                key=message.key(),
                partition=message.partition(),
                offset=message.offset(),
            )
        except Exception:  # the broker is away: the record is still set aside, logged
            log.exception("could not dead-letter a record (%s)", reason)

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

    async def _on_introspection(self, message: Message) -> None:
        now = self._clock()
        if message.value() is None:
            key = (message.key() or b"").decode(errors="replace")
            expired = _header(message, EXPIRED_HEADER)
            try:
                expired_at = float(expired) if expired is not None else None
            except ValueError:
                expired_at = None
            if self.view.tombstone(key, _message_time(message, now), expired_at):
                self.stats.tombstones += 1
            return
        envelope = self._envelope(message, naming.EVENT_NODE_INTROSPECTION)
        sent_at = envelope.timestamp.timestamp()
        check_clock(sent_at, now, self._settings.max_clock_skew_s, "the introspection envelope")
        try:
            event = ModelNodeIntrospectionEvent.model_validate(envelope.payload)
        except ValidationError as error:
            raise PoisonRecordError(f"invalid introspection payload: {_short(error)}") from error
        await self.admit(message, event, sent_at, now)
        self.stats.introspections += 1

    async def admit(
        self,
        message: Message,
        event: ModelNodeIntrospectionEvent,
        sent_at: float,
        now: float,
        *,
        manifest: str | None = None,
        extra_meta: dict[str, str] | None = None,
    ) -> None:
        """Every check an announcement passes before it changes the view: key, sizes,
        health endpoint address, capacity, binding. Raises ``AdmissionError``."""
        node_id = str(event.node_id)
        _check_key(message, node_id)
        if manifest is None:
            manifest = event.model_dump_json(exclude={"correlation_id"})
        check_sizes(event, len(manifest.encode()))
        endpoint = None
        if event.health_endpoint is not None:
            endpoint = parse_health_url(event.health_endpoint)
            resolved = await self._resolve(endpoint.host) if endpoint.is_name else ()
            self._policy.check(endpoint, resolved)
        registration = build_registration(
            event, self._settings, manifest=manifest, extra_meta=extra_meta, endpoint=endpoint
        )
        if node_id not in self.view.records and len(self.view.records) >= self._settings.max_nodes:
            raise AdmissionError(
                f"the registry holds {len(self.view.records)} nodes, its limit "
                "(REGISTRY_MAX_NODES); a new node is accepted once others leave or expire"
            )
        conflict = self.view.conflict(registration, now)
        if conflict:
            raise AdmissionError(conflict)
        # Replayed history carries its own age: a node that announced itself long ago and
        # was never heard of since is remembered, but not registered again until it shows a
        # sign of life (it answers the introspection request sent after the replay).
        seen = now if self.replayed.is_set() else min(now, _message_time(message, now))
        self.view.introspection(registration, min(sent_at, now), seen)

    async def _resolve(self, host: str) -> tuple[IPAddress, ...]:
        """The addresses ``host`` resolves to (cached briefly); empty when it does not."""
        now = time.monotonic()
        cached = self._resolved.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            infos = []
        addresses: list[IPAddress] = []
        for info in infos:
            try:
                addresses.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
            except ValueError:
                continue
        if len(self._resolved) >= REANNOUNCE_MEMORY:
            self._resolved.clear()
        result = tuple(addresses)
        self._resolved[host] = (now + RESOLVE_CACHE_S, result)
        return result

    async def _on_heartbeat(self, message: Message) -> None:
        envelope = self._envelope(message, naming.EVENT_NODE_HEARTBEAT)
        now = self._clock()
        check_clock(
            envelope.timestamp.timestamp(), now, self._settings.max_clock_skew_s, "the heartbeat"
        )
        try:
            beat = ModelNodeHeartbeatEvent.model_validate(envelope.payload)
        except ValidationError as error:
            raise PoisonRecordError(f"invalid heartbeat payload: {_short(error)}") from error
        note = f"{beat.status}; up {beat.uptime_s:.0f}s" + (
            f"; {', '.join(beat.reasons)}" if beat.reasons else ""
        )
        await self.heartbeat(
            message,
            str(beat.node_id),
            beat.service_name,
            beat.instance_id,
            beat.status,
            note[:1024],
            now,
        )

    async def heartbeat(
        self,
        message: Message,
        node_id: str,
        service_name: str,
        instance_id: str | None,
        status: str,
        note: str,
        now: float,
    ) -> None:
        """A sign of life: it must match the node's registration; an unknown node is asked
        to announce itself, within the re-announce rate limit."""
        _check_key(message, node_id)
        self.stats.heartbeats += 1
        record = self.view.records.get(node_id)
        if record is not None:
            _check_binding(record.binding, service_name, instance_id, "heartbeat")
            self.view.heartbeat(node_id, status, note, now)
            return
        if problem := naming.check("service_name", service_name):
            raise AdmissionError(f"heartbeat of an unknown node: service_name {problem}")
        # A live node the registry does not know (its announcement was lost or compacted
        # away): ask that service to announce itself again, at most every few seconds and
        # within a global rate, so forged heartbeats cannot make the registry flood the topic.
        self.stats.unknown_heartbeats += 1
        if self._may_request(service_name):
            await self.request_introspection(service_name, "unknown node heartbeat")
        else:
            self.stats.reannounce_suppressed += 1

    def _may_request(self, service_name: str) -> bool:
        now = time.monotonic()
        last = self._last_request.get(service_name)
        if last is not None and now - last < REANNOUNCE_COOLDOWN_S:
            return False
        if not self._reannounce.take():
            return False
        self._last_request[service_name] = now
        self._last_request.move_to_end(service_name)
        while len(self._last_request) > REANNOUNCE_MEMORY:
            self._last_request.popitem(last=False)
        return True

    def _on_shutdown(self, message: Message) -> None:
        envelope = self._envelope(message, naming.EVENT_NODE_SHUTDOWN)
        now = self._clock()
        sent_at = envelope.timestamp.timestamp()
        check_clock(sent_at, now, self._settings.max_clock_skew_s, "the shutdown event")
        try:
            event = ModelNodeShutdownEvent.model_validate(envelope.payload)
        except ValidationError as error:
            raise PoisonRecordError(f"invalid shutdown payload: {_short(error)}") from error
        self.shutdown(
            message, str(event.node_id), event.service_name, event.instance_id, min(sent_at, now)
        )

    def shutdown(
        self,
        message: Message,
        node_id: str,
        service_name: str,
        instance_id: str | None,
        sent_at: float,
    ) -> None:
        """A goodbye: it must match the node's registration (``instance_id`` None: the
        sender's format has none, the service name must match)."""
        _check_key(message, node_id)
        record = self.view.records.get(node_id)
        if record is None:
            return  # gone already: nothing to do
        _check_binding(record.binding, service_name, instance_id, "shutdown")
        if self.view.shutdown(node_id, sent_at):
            self.stats.shutdowns += 1

    async def _on_omnibase(self, message: Message) -> None:
        """An omnibase_core introspection, heartbeat or shutdown (``omnibase.py`` maps it)."""
        topic = message.topic() or ""
        value = message.value()
        if value is None:
            return  # omnibase_core writes no tombstones; one here removes nothing
        envelope = omnibase.decode_envelope(value)
        now = self._clock()
        sent_at = omnibase.sent_at(envelope)
        check_clock(sent_at, now, self._settings.max_clock_skew_s, f"the envelope on {topic}")
        if topic == self.omnibase_topics["introspection"]:
            event, manifest = omnibase.map_introspection(envelope, value)
            extra = {omnibase.SOURCE_FORMAT_KEY: omnibase.SOURCE_FORMAT}
            await self.admit(message, event, sent_at, now, manifest=manifest, extra_meta=extra)
            self.stats.introspections += 1
        elif topic == self.omnibase_topics["heartbeat"]:
            node_id, service_name, note = omnibase.map_heartbeat(envelope)
            # omnibase_core cannot be asked to announce again: an unknown one is only counted.
            if node_id in self.view.records:
                await self.heartbeat(message, node_id, service_name, None, "healthy", note, now)
            else:
                _check_key(message, node_id)
                self.stats.unknown_heartbeats += 1
        elif topic == self.omnibase_topics["shutdown"]:
            node_id, service_name = omnibase.map_shutdown(envelope)
            self.shutdown(message, node_id, service_name, None, min(sent_at, now))

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


def _check_key(message: Message, node_id: str) -> None:
    key = message.key()
    text = key.decode(errors="replace") if key is not None else None
    if text != node_id:
        raise AdmissionError(
            f"record key {(text or '')[:80]!r} differs from the payload's node_id {node_id}; "
            "discovery records are keyed by the node_id they are about"
        )


def _check_binding(
    binding: tuple[str, str, str | None], service_name: str, instance_id: str | None, what: str
) -> None:
    bound_service, bound_instance, _ = binding
    if service_name != bound_service or (instance_id is not None and instance_id != bound_instance):
        raise AdmissionError(
            f"{what} names service {service_name[:80]!r} instance {str(instance_id)[:80]!r}, "
            f"but the node_id is registered as service {bound_service!r} instance "
            f"{bound_instance!r}; a {what} must match the node's registration"
        )


def _header(message: Message, name: str) -> str | None:
    headers = message.headers() or []
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    for key, value in items:
        if key == name and value is not None:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


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
