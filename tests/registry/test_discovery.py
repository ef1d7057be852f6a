"""Decoding the discovery topics: what changes the view, what is dead-lettered and why."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME
from onex_registry.consul_registry import RegistrySettings
from onex_registry.discovery import DiscoveryConsumer
from onex_registry.reconcile import Reconciler, RegistryView
from onex_registry.runtime import naming
from onex_registry.runtime.events import ModelEventEnvelope, ModelEventSource

ENV = "unit"
NODE_ID = naming.node_id_for("postgres-writer", "i1")


@dataclass
class Message:
    """The parts of confluent_kafka.Message the consumer reads."""

    _topic: str
    _value: bytes | None
    _key: bytes | None = None
    _offset: int = 0
    _ts: float = field(default_factory=time.time)

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, int(self._ts * 1000)


class Publisher:
    def __init__(self) -> None:
        self.dead: list[dict[str, Any]] = []
        self.published: list[tuple[str, dict[str, Any], str | None]] = []

    async def dead_letter(self, **kwargs: Any) -> bool:
        self.dead.append(kwargs)
        return True

    async def publish(self, event_type: str, payload: dict[str, Any], **kwargs: Any) -> None:
        self.published.append((event_type, payload, kwargs.get("topic")))


def envelope(event_type: str, payload: dict[str, Any]) -> bytes:
    return ModelEventEnvelope(
        event_type=event_type,
        source=ModelEventSource(service="t", instance_id="t"),
        payload=payload,
    ).to_bytes()


def introspection(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "node_id": str(NODE_ID),
        "node_name": "PostgresqlWriter",
        "node_type": "effect",
        "service_name": "postgres-writer",
        "domain": "database",
        "version": "0.1.0",
        "instance_id": "i1",
        "health_endpoint": "http://127.0.0.1:8001/health",
    }
    payload.update(changes)
    return payload


@pytest.fixture
async def consumer() -> DiscoveryConsumer:
    settings = RegistrySettings(consul_http_addr="127.0.0.1:1")
    view = RegistryView(settings)
    reconciler = Reconciler(view, None, settings, clock=time.time)  # type: ignore[arg-type]
    discovery = DiscoveryConsumer(
        kafka_config={},
        environment=ENV,
        group_id="g",
        settings=settings,
        view=view,
        reconciler=reconciler,
        publisher=Publisher(),  # type: ignore[arg-type]
        requested_by="onex-registry",
    )
    discovery.replayed.set()
    return discovery


def topics() -> dict[str, str]:
    return naming.discovery_topics(ENV)


async def test_introspection_heartbeat_shutdown_and_tombstone(consumer: DiscoveryConsumer) -> None:
    t = topics()
    await consumer._handle(
        Message(
            t["introspection"],
            envelope(naming.EVENT_NODE_INTROSPECTION, introspection()),
            str(NODE_ID).encode(),
        )
    )  # type: ignore[arg-type]
    assert str(NODE_ID) in consumer.view.records
    beat = {
        "node_id": str(NODE_ID),
        "service_name": "postgres-writer",
        "instance_id": "i1",
        "status": "healthy",
        "uptime_s": 3,
    }
    await consumer._handle(Message(t["heartbeat"], envelope(naming.EVENT_NODE_HEARTBEAT, beat)))  # type: ignore[arg-type]
    assert consumer.stats.heartbeats == 1
    bye = {"node_id": str(NODE_ID), "service_name": "postgres-writer", "instance_id": "i1"}
    await consumer._handle(Message(t["shutdown"], envelope(naming.EVENT_NODE_SHUTDOWN, bye)))  # type: ignore[arg-type]
    assert str(NODE_ID) not in consumer.view.records
    assert str(NODE_ID) in consumer.view.removals
    await consumer._handle(
        Message(
            t["introspection"],
            envelope(naming.EVENT_NODE_INTROSPECTION, introspection()),
            str(NODE_ID).encode(),
        )
    )  # type: ignore[arg-type]
    await consumer._handle(Message(t["introspection"], None, str(NODE_ID).encode()))  # type: ignore[arg-type]
    assert str(NODE_ID) not in consumer.view.records and consumer.stats.tombstones == 1
    assert consumer._publisher.dead == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("role", "value", "reason"),
    [
        ("introspection", b"\xff\xfe garbage", "not an event envelope"),
        ("introspection", b'{"x": 1}', "not an event envelope"),
        ("introspection", envelope("omninode.other.v1", {}), "event_type"),
        (
            "introspection",
            envelope(naming.EVENT_NODE_INTROSPECTION, introspection(node_type="teapot")),
            "node_type",
        ),
        (
            "introspection",
            envelope(naming.EVENT_NODE_INTROSPECTION, introspection(service_name="Bad_Name")),
            "service_name",
        ),
        (
            "introspection",
            envelope(naming.EVENT_NODE_INTROSPECTION, introspection(health_endpoint="ftp://x/h")),
            "health_endpoint",
        ),
        (
            "heartbeat",
            envelope(naming.EVENT_NODE_HEARTBEAT, {"node_id": "nope"}),
            "invalid heartbeat",
        ),
        ("heartbeat", None, "empty record"),
        ("shutdown", b"[]", "not an event envelope"),
    ],
)
async def test_bad_records_are_dead_lettered_with_the_reason(
    consumer: DiscoveryConsumer, role: str, value: bytes | None, reason: str
) -> None:
    topic = topics()[role]
    await consumer._handle(Message(topic, value, b"k", 7))  # type: ignore[arg-type]
    dead = consumer._publisher.dead  # type: ignore[attr-defined]
    assert len(dead) == 1
    assert dead[0]["source_topic"] == topic and dead[0]["offset"] == 7
    assert reason in dead[0]["error"], dead[0]["error"]
    assert consumer.view.records == {}


async def test_poison_kept_by_compaction_is_dead_lettered_once(consumer: DiscoveryConsumer) -> None:
    intro = topics()["introspection"]
    consumer._watermarks = {0: 10}  # processed up to offset 10 before the restart
    await consumer._handle(Message(intro, b"junk", b"k", 3))  # type: ignore[arg-type]
    await consumer._handle(Message(intro, b"junk", b"k", 12))  # type: ignore[arg-type]
    assert [d["offset"] for d in consumer._publisher.dead] == [12]  # type: ignore[attr-defined]


async def test_unknown_heartbeat_asks_that_service_to_announce_once(
    consumer: DiscoveryConsumer,
) -> None:
    beat = {
        "node_id": str(uuid.uuid4()),
        "service_name": "ghost",
        "instance_id": "g",
        "status": "healthy",
        "uptime_s": 1,
    }
    for _ in range(3):
        await consumer._handle(
            Message(topics()["heartbeat"], envelope(naming.EVENT_NODE_HEARTBEAT, beat))
        )  # type: ignore[arg-type]
    published = consumer._publisher.published  # type: ignore[attr-defined]
    assert len(published) == 1
    event_type, payload, topic = published[0]
    assert event_type == naming.EVENT_INTROSPECTION_REQUESTED
    assert payload["service_name"] == "ghost" and topic == topics()["introspection_request"]


async def test_replayed_history_keeps_its_age(consumer: DiscoveryConsumer) -> None:
    consumer.replayed.clear()  # still reading the compacted topic from the beginning
    old = time.time() - 3600
    value = envelope(naming.EVENT_NODE_INTROSPECTION, introspection())
    await consumer._handle(Message(topics()["introspection"], value, str(NODE_ID).encode(), 0, old))  # type: ignore[arg-type]
    record = consumer.view.records[str(NODE_ID)]
    assert record.last_seen == pytest.approx(old, abs=1)
    assert consumer.view.plan(time.time()).register == []  # remembered, not resurrected
