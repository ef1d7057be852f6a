"""Applying one record of the discovery topics to the registry's view.

Every record is checked before it changes anything (size, signature, envelope,
clock, key, the announcement's fields and health endpoint, capacity, binding);
one that fails a check, or that nobody foresaw, is dead-lettered with the reason
and the next record is read. ``DiscoveryConsumer`` (``discovery.py``) feeds the
records in; this part knows nothing of the Kafka consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import Message
from pydantic import BaseModel, ValidationError

from . import omnibase
from .admission import (
    AdmissionError,
    check_binding,
    check_clock,
    check_key,
    check_record_size,
    check_sizes,
    parse_health_url,
)
from .consul_registry import RegistrySettings, build_registration
from .host_resolver import HostResolver
from .reannounce import ReannounceLimiter
from .record_decoding import (
    PoisonRecordError,
    decode_envelope,
    expired_announced_at,
    message_time,
    record_key,
    validation_summary,
)
from .registry_view import RegistryView
from .runtime import naming
from .runtime.events import (
    ModelIntrospectionRequest,
    ModelNodeHeartbeatEvent,
    ModelNodeIntrospectionEvent,
    ModelNodeShutdownEvent,
)
from .runtime.publisher import EventPublisher

log = logging.getLogger(__name__)

_Event = TypeVar("_Event", bound=BaseModel)


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


class DiscoveryRecordHandler:
    """Checks one introspection, heartbeat or shutdown record and applies it to the view."""

    def __init__(
        self,
        *,
        environment: str,
        settings: RegistrySettings,
        view: RegistryView,
        publisher: EventPublisher,
        requested_by: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topics = naming.discovery_topics(environment)
        self._settings = settings
        self.view = view
        self._publisher = publisher
        self._requested_by = requested_by
        self._clock = clock
        self.stats = DiscoveryStats()
        self._reannounce = ReannounceLimiter(settings.reannounce_per_s, settings.reannounce_burst)
        self._policy = settings.address_policy()
        self._signer = settings.signer(environment)
        self._resolver = HostResolver()
        #: omnibase_core's topics (read as well unless REGISTRY_OMNIBASE_CORE=false).
        self.omnibase_topics = (
            omnibase.topics(settings.omnibase_topic_prefix) if settings.omnibase_core else {}
        )
        #: Introspection topics, read from their first offset at every start.
        self._replayed_topics = {self.topics["introspection"]} | (
            {self.omnibase_topics["introspection"]} if self.omnibase_topics else set()
        )
        # (replayed topic, partition) -> offset processed up to (before this start, then on)
        self._watermarks: dict[tuple[str, int], int] = {}
        #: Set once the replayed topics have been read to their end.
        self.replayed = asyncio.Event()

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

    # -- our own discovery events -------------------------------------------------

    def _read_event(
        self, message: Message, event_type: str, model: type[_Event], name: str, what: str
    ) -> tuple[_Event, float, float]:
        """The record's event (envelope of ``event_type``, payload a ``model``), when it was
        sent and now; the envelope's time must be within the accepted clock skew."""
        envelope = decode_envelope(message, event_type)
        now = self._clock()
        sent_at = envelope.timestamp.timestamp()
        check_clock(sent_at, now, self._settings.max_clock_skew_s, what)
        try:
            event = model.model_validate(envelope.payload)
        except ValidationError as error:
            raise PoisonRecordError(
                f"invalid {name} payload: {validation_summary(error)}"
            ) from error
        return event, sent_at, now

    async def _on_introspection(self, message: Message) -> None:
        if message.value() is None:
            key = record_key(message) or ""
            expired_at = expired_announced_at(message)
            if self.view.tombstone(key, message_time(message, self._clock()), expired_at):
                self.stats.tombstones += 1
            return
        event, sent_at, now = self._read_event(
            message,
            naming.EVENT_NODE_INTROSPECTION,
            ModelNodeIntrospectionEvent,
            "introspection",
            "the introspection envelope",
        )
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
        check_key(record_key(message), node_id)
        if manifest is None:
            manifest = event.model_dump_json(exclude={"correlation_id"})
        check_sizes(event, len(manifest.encode()))
        endpoint = None
        if event.health_endpoint is not None:
            endpoint = parse_health_url(event.health_endpoint)
            resolved = await self._resolver.resolve(endpoint.host) if endpoint.is_name else ()
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
        seen = now if self.replayed.is_set() else min(now, message_time(message, now))
        self.view.introspection(registration, min(sent_at, now), seen)

    async def _on_heartbeat(self, message: Message) -> None:
        beat, _, now = self._read_event(
            message,
            naming.EVENT_NODE_HEARTBEAT,
            ModelNodeHeartbeatEvent,
            "heartbeat",
            "the heartbeat",
        )
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
        check_key(record_key(message), node_id)
        self.stats.heartbeats += 1
        record = self.view.records.get(node_id)
        if record is not None:
            check_binding(record.binding, service_name, instance_id, "heartbeat")
            self.view.heartbeat(node_id, status, note, now)
            return
        if problem := naming.check("service_name", service_name):
            raise AdmissionError(f"heartbeat of an unknown node: service_name {problem}")
        # A live node the registry does not know (its announcement was lost or compacted
        # away): ask that service to announce itself again, at most every few seconds and
        # within a global rate, so forged heartbeats cannot make the registry flood the topic.
        self.stats.unknown_heartbeats += 1
        if self._reannounce.may_request(service_name):
            await self.request_introspection(service_name, "unknown node heartbeat")
        else:
            self.stats.reannounce_suppressed += 1

    def _on_shutdown(self, message: Message) -> None:
        event, sent_at, now = self._read_event(
            message,
            naming.EVENT_NODE_SHUTDOWN,
            ModelNodeShutdownEvent,
            "shutdown",
            "the shutdown event",
        )
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
        check_key(record_key(message), node_id)
        record = self.view.records.get(node_id)
        if record is None:
            return  # gone already: nothing to do
        check_binding(record.binding, service_name, instance_id, "shutdown")
        if self.view.shutdown(node_id, sent_at):
            self.stats.shutdowns += 1

    # -- omnibase_core's discovery events -----------------------------------------

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
                check_key(record_key(message), node_id)
                self.stats.unknown_heartbeats += 1
        elif topic == self.omnibase_topics["shutdown"]:
            node_id, service_name = omnibase.map_shutdown(envelope)
            self.shutdown(message, node_id, service_name, None, min(sent_at, now))

    # -- asking nodes to announce themselves ----------------------------------------

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
