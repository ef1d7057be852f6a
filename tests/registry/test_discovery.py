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
    _headers: list[tuple[str, bytes]] | None = None

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

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
    key = str(NODE_ID).encode()
    await consumer._handle(
        Message(t["heartbeat"], envelope(naming.EVENT_NODE_HEARTBEAT, beat), key)
    )  # type: ignore[arg-type]
    assert consumer.stats.heartbeats == 1
    bye = {"node_id": str(NODE_ID), "service_name": "postgres-writer", "instance_id": "i1"}
    await consumer._handle(Message(t["shutdown"], envelope(naming.EVENT_NODE_SHUTDOWN, bye), key))  # type: ignore[arg-type]
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
    await consumer._handle(Message(topic, value, str(NODE_ID).encode(), 7))  # type: ignore[arg-type]
    dead = consumer._publisher.dead  # type: ignore[attr-defined]
    assert len(dead) == 1
    assert dead[0]["source_topic"] == topic and dead[0]["offset"] == 7
    assert reason in dead[0]["error"], dead[0]["error"]
    assert consumer.view.records == {}


async def test_poison_kept_by_compaction_is_dead_lettered_once(consumer: DiscoveryConsumer) -> None:
    intro = topics()["introspection"]
    consumer._watermarks = {(intro, 0): 10}  # processed up to offset 10 before the restart
    await consumer._handle(Message(intro, b"junk", b"k", 3))  # type: ignore[arg-type]
    await consumer._handle(Message(intro, b"junk", b"k", 12))  # type: ignore[arg-type]
    assert [d["offset"] for d in consumer._publisher.dead] == [12]  # type: ignore[attr-defined]


async def test_unknown_heartbeat_asks_that_service_to_announce_once(
    consumer: DiscoveryConsumer,
) -> None:
    ghost = uuid.uuid4()
    beat = {
        "node_id": str(ghost),
        "service_name": "ghost",
        "instance_id": "g",
        "status": "healthy",
        "uptime_s": 1,
    }
    for _ in range(3):
        await consumer._handle(
            Message(
                topics()["heartbeat"],
                envelope(naming.EVENT_NODE_HEARTBEAT, beat),
                str(ghost).encode(),
            )
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


# -- abuse: every record that cannot be handled is set aside; the consumer goes on ------------


def intro_message(payload: dict[str, Any], key: str | None = None, **kw: Any) -> Message:
    value = envelope(naming.EVENT_NODE_INTROSPECTION, payload)
    return Message(topics()["introspection"], value, (key or payload["node_id"]).encode(), **kw)


def dead_reasons(consumer: DiscoveryConsumer) -> list[str]:
    return [d["error"] for d in consumer._publisher.dead]  # type: ignore[attr-defined]


async def test_a_malformed_health_url_is_dead_lettered_and_the_next_node_registers(
    consumer: DiscoveryConsumer,
) -> None:
    await consumer._handle(intro_message(introspection(health_endpoint="http://[/h")))  # type: ignore[arg-type]
    other = naming.node_id_for("postgres-writer", "i2")
    await consumer._handle(
        intro_message(introspection(node_id=str(other), instance_id="i2"))  # type: ignore[arg-type]
    )
    assert "not a URL" in dead_reasons(consumer)[0]
    assert list(consumer.view.records) == [str(other)]


async def test_an_unforeseen_error_is_dead_lettered_too(
    consumer: DiscoveryConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(consumer.view, "introspection", boom)
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    assert dead_reasons(consumer) == ["KeyError: 'a bug'"]


async def test_dead_lettering_failing_does_not_stop_the_consumer(
    consumer: DiscoveryConsumer,
) -> None:
    async def broken(**_: Any) -> bool:
        raise RuntimeError("broker gone")

    consumer._publisher.dead_letter = broken  # type: ignore[attr-defined]
    await consumer._handle(Message(topics()["introspection"], b"junk", b"k"))  # type: ignore[arg-type]
    assert consumer.stats.dead_lettered == 1


async def test_a_link_local_health_endpoint_is_refused(consumer: DiscoveryConsumer) -> None:
    for url in (
        "http://169.254.169.254/latest",
        "http://[::ffff:a9fe:a9fe]/",
        "http://0xa9fea9fe/",
    ):
        await consumer._handle(intro_message(introspection(health_endpoint=url)))  # type: ignore[arg-type]
    assert len(dead_reasons(consumer)) == 3 and consumer.view.records == {}


async def test_the_key_must_be_the_node_id(consumer: DiscoveryConsumer) -> None:
    await consumer._handle(intro_message(introspection(), key="someone-else"))  # type: ignore[arg-type]
    assert "differs from the payload's node_id" in dead_reasons(consumer)[0]


async def test_a_live_node_id_cannot_be_taken_over(consumer: DiscoveryConsumer) -> None:
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    hijack = introspection(health_endpoint="http://127.0.0.2:8001/health")
    await consumer._handle(intro_message(hijack))  # type: ignore[arg-type]
    renamed = introspection(service_name="other-service")
    await consumer._handle(intro_message(renamed))  # type: ignore[arg-type]
    reasons = dead_reasons(consumer)
    assert len(reasons) == 2 and all("bound to another live node" in r for r in reasons)
    assert "address '127.0.0.2'" in reasons[0]
    record = consumer.view.records[str(NODE_ID)]
    assert record.registration.address == "127.0.0.1"
    # the real node restarting on another port is the same binding: accepted
    await consumer._handle(
        intro_message(introspection(health_endpoint="http://127.0.0.1:9001/health"))  # type: ignore[arg-type]
    )
    assert consumer.view.records[str(NODE_ID)].registration.port == 9001
    # once it shut down, the node_id is free
    bye = {"node_id": str(NODE_ID), "service_name": "postgres-writer", "instance_id": "i1"}
    await consumer._handle(
        Message(
            topics()["shutdown"], envelope(naming.EVENT_NODE_SHUTDOWN, bye), str(NODE_ID).encode()
        )  # type: ignore[arg-type]
    )
    await consumer._handle(intro_message(hijack))  # type: ignore[arg-type]
    assert consumer.view.records[str(NODE_ID)].registration.address == "127.0.0.2"


async def test_an_expired_node_id_is_free(consumer: DiscoveryConsumer) -> None:
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    consumer.view.records[str(NODE_ID)].last_seen -= 10_000
    hijack = introspection(health_endpoint="http://127.0.0.2:8001/health")
    await consumer._handle(intro_message(hijack))  # type: ignore[arg-type]
    assert dead_reasons(consumer) == []


def dated(event_type: str, payload: dict[str, Any], offset_s: float) -> bytes:
    from datetime import UTC, datetime, timedelta

    return ModelEventEnvelope(
        event_type=event_type,
        source=ModelEventSource(service="t", instance_id="t"),
        timestamp=datetime.now(UTC) + timedelta(seconds=offset_s),
        payload=payload,
    ).to_bytes()


async def test_envelopes_from_the_future_cannot_pin_a_node(consumer: DiscoveryConsumer) -> None:
    t, key = topics(), str(NODE_ID).encode()
    year = 365 * 86400
    await consumer._handle(
        Message(
            t["introspection"], dated(naming.EVENT_NODE_INTROSPECTION, introspection(), year), key
        )  # type: ignore[arg-type]
    )
    assert consumer.view.records == {}
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    bye = {"node_id": str(NODE_ID), "service_name": "postgres-writer", "instance_id": "i1"}
    await consumer._handle(
        Message(t["shutdown"], dated(naming.EVENT_NODE_SHUTDOWN, bye, year), key)  # type: ignore[arg-type]
    )
    assert str(NODE_ID) in consumer.view.records
    assert all("in the future" in r for r in dead_reasons(consumer))
    # within the skew: accepted, but counted as now, so the node's real later events win
    await consumer._handle(
        Message(
            t["introspection"], dated(naming.EVENT_NODE_INTROSPECTION, introspection(), 30), key
        )  # type: ignore[arg-type]
    )
    assert consumer.view.records[str(NODE_ID)].announced_at <= time.time()
    await consumer._handle(Message(t["shutdown"], envelope(naming.EVENT_NODE_SHUTDOWN, bye), key))  # type: ignore[arg-type]
    assert str(NODE_ID) not in consumer.view.records


async def test_forged_shutdowns_and_heartbeats_must_match_the_registration(
    consumer: DiscoveryConsumer,
) -> None:
    t, key = topics(), str(NODE_ID).encode()
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    forged = {"node_id": str(NODE_ID), "service_name": "postgres-writer", "instance_id": "evil"}
    await consumer._handle(
        Message(t["shutdown"], envelope(naming.EVENT_NODE_SHUTDOWN, forged), key)
    )  # type: ignore[arg-type]
    other = {"node_id": str(NODE_ID), "service_name": "other", "instance_id": "i1"}
    await consumer._handle(Message(t["shutdown"], envelope(naming.EVENT_NODE_SHUTDOWN, other), key))  # type: ignore[arg-type]
    beat = {**forged, "status": "healthy", "uptime_s": 1}
    await consumer._handle(
        Message(t["heartbeat"], envelope(naming.EVENT_NODE_HEARTBEAT, beat), key)
    )  # type: ignore[arg-type]
    assert str(NODE_ID) in consumer.view.records
    reasons = dead_reasons(consumer)
    assert len(reasons) == 3 and all("must match the node's registration" in r for r in reasons)


async def test_unknown_heartbeats_cannot_flood_the_request_topic(
    consumer: DiscoveryConsumer,
) -> None:
    for i in range(500):
        node = uuid.uuid4()
        beat = {
            "node_id": str(node),
            "service_name": f"ghost-{i}",
            "instance_id": "g",
            "status": "healthy",
            "uptime_s": 1,
        }
        await consumer._handle(
            Message(
                topics()["heartbeat"],
                envelope(naming.EVENT_NODE_HEARTBEAT, beat),
                str(node).encode(),
            )  # type: ignore[arg-type]
        )
    published = consumer._publisher.published  # type: ignore[attr-defined]
    assert consumer.stats.unknown_heartbeats == 500
    assert len(published) <= RegistrySettings().reannounce_burst + 2
    assert consumer.stats.reannounce_suppressed >= 500 - len(published)
    assert len(consumer._reannounce.last_request) <= len(published)


async def test_the_number_of_nodes_is_capped(consumer: DiscoveryConsumer) -> None:
    consumer._settings = RegistrySettings(consul_http_addr="127.0.0.1:1", max_nodes=2)
    for i in range(3):
        node = naming.node_id_for("postgres-writer", f"n{i}")
        await consumer._handle(intro_message(introspection(node_id=str(node), instance_id=f"n{i}")))  # type: ignore[arg-type]
    assert len(consumer.view.records) == 2
    assert "REGISTRY_MAX_NODES" in dead_reasons(consumer)[0]


async def test_the_registrys_own_expiry_tombstone_spares_a_newer_announcement(
    consumer: DiscoveryConsumer,
) -> None:
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    record = consumer.view.records[str(NODE_ID)]
    stale = repr(record.announced_at - 100).encode()
    tomb = Message(
        topics()["introspection"],
        None,
        str(NODE_ID).encode(),
        _headers=[("onex_expired_announced_at", stale)],
    )
    await consumer._handle(tomb)  # type: ignore[arg-type]
    assert str(NODE_ID) in consumer.view.records
    exact = repr(record.announced_at).encode()
    tomb = Message(
        topics()["introspection"],
        None,
        str(NODE_ID).encode(),
        _headers=[("onex_expired_announced_at", exact)],
    )
    await consumer._handle(tomb)  # type: ignore[arg-type]
    assert str(NODE_ID) not in consumer.view.records


async def test_with_a_discovery_key_only_signed_records_are_accepted() -> None:
    from onex_registry.runtime.signing import DiscoverySigner

    key = "s" * 32
    settings = RegistrySettings(consul_http_addr="127.0.0.1:1", ONEX_DISCOVERY_KEY=key)  # type: ignore[call-arg]
    view = RegistryView(settings)
    discovery = DiscoveryConsumer(
        kafka_config={},
        environment=ENV,
        group_id="g",
        settings=settings,
        view=view,
        reconciler=Reconciler(view, None, settings, clock=time.time),  # type: ignore[arg-type]
        publisher=Publisher(),  # type: ignore[arg-type]
        requested_by="onex-registry",
    )
    discovery.replayed.set()
    unsigned = intro_message(introspection())
    await discovery._handle(unsigned)  # type: ignore[arg-type]
    assert view.records == {} and "no onex_signature header" in dead_reasons(discovery)[0]
    node = DiscoverySigner.from_text(key, ENV)
    headers = node.signed_headers(unsigned.topic(), unsigned.key(), unsigned.value(), None)
    signed = [(n, v.encode() if isinstance(v, str) else v) for n, v in headers or []]
    again = Message(unsigned.topic(), unsigned.value(), unsigned.key(), 1, _headers=signed)
    await discovery._handle(again)  # type: ignore[arg-type]
    assert str(NODE_ID) in view.records
    # a forged tombstone (unsigned) removes nothing
    await discovery._handle(Message(unsigned.topic(), None, unsigned.key()))  # type: ignore[arg-type]
    assert str(NODE_ID) in view.records


async def test_a_node_whose_check_is_critical_may_come_back_at_another_address(
    consumer: DiscoveryConsumer,
) -> None:
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    sid = consumer.view.records[str(NODE_ID)].registration.service_id
    moved = introspection(health_endpoint="http://127.0.0.9:8001/health")
    consumer.view.observed_status[sid] = "passing"
    await consumer._handle(intro_message(moved))  # type: ignore[arg-type]
    assert "bound to another live node" in dead_reasons(consumer)[0]
    consumer.view.observed_status[sid] = "critical"  # the old address stopped answering
    await consumer._handle(intro_message(moved))  # type: ignore[arg-type]
    assert consumer.view.records[str(NODE_ID)].registration.address == "127.0.0.9"
