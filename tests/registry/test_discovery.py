"""Decoding the discovery topics: what changes the view, what is dead-lettered and why."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from onex_registry.consul_registry import RegistrySettings
from onex_registry.discovery import DiscoveryConsumer
from onex_registry.runtime import naming
from onex_registry.runtime.events import ModelEventEnvelope, ModelEventSource
from registry_fakes import (
    ENV,
    EVENT_TYPES,
    NODE_ID,
    Message,
    dead_reasons,
    envelope,
    event_message,
    goodbye,
    heartbeat,
    intro_message,
    introspection,
    make_consumer,
    topics,
)


async def test_introspection_heartbeat_shutdown_and_tombstone(consumer: DiscoveryConsumer) -> None:
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    assert str(NODE_ID) in consumer.view.records
    await consumer._handle(event_message("heartbeat", heartbeat(uptime_s=3)))  # type: ignore[arg-type]
    assert consumer.stats.heartbeats == 1
    await consumer._handle(event_message("shutdown", goodbye()))  # type: ignore[arg-type]
    assert str(NODE_ID) not in consumer.view.records
    assert str(NODE_ID) in consumer.view.removals
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    await consumer._handle(Message(topics()["introspection"], None, str(NODE_ID).encode()))  # type: ignore[arg-type]
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


def unknown_heartbeat(service_name: str) -> Message:
    """A heartbeat of a node the registry has never heard of."""
    ghost = uuid.uuid4()
    beat = heartbeat(ghost, service_name=service_name, instance_id="g")
    return event_message("heartbeat", beat)


async def test_unknown_heartbeat_asks_that_service_to_announce_once(
    consumer: DiscoveryConsumer,
) -> None:
    beat = unknown_heartbeat("ghost")
    for _ in range(3):
        await consumer._handle(beat)  # type: ignore[arg-type]
    published = consumer._publisher.published  # type: ignore[attr-defined]
    assert len(published) == 1
    event_type, payload, topic = published[0]
    assert event_type == naming.EVENT_INTROSPECTION_REQUESTED
    assert payload["service_name"] == "ghost" and topic == topics()["introspection_request"]


async def test_replayed_history_keeps_its_age(consumer: DiscoveryConsumer) -> None:
    consumer.replayed.clear()  # still reading the compacted topic from the beginning
    old = time.time() - 3600
    await consumer._handle(intro_message(introspection(), _ts=old))  # type: ignore[arg-type]
    record = consumer.view.records[str(NODE_ID)]
    assert record.last_seen == pytest.approx(old, abs=1)
    assert consumer.view.plan(time.time()).register == []  # remembered, not resurrected


# -- abuse: every record that cannot be handled is set aside; the consumer goes on ------------


async def test_a_malformed_health_url_is_dead_lettered_and_the_next_node_registers(
    consumer: DiscoveryConsumer,
) -> None:
    await consumer._handle(intro_message(introspection(health_endpoint="http://[/h")))  # type: ignore[arg-type]
    other = naming.node_id_for("postgres-writer", "i2")
    await consumer._handle(intro_message(introspection(instance="i2")))  # type: ignore[arg-type]
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
    await consumer._handle(event_message("shutdown", goodbye()))  # type: ignore[arg-type]
    await consumer._handle(intro_message(hijack))  # type: ignore[arg-type]
    assert consumer.view.records[str(NODE_ID)].registration.address == "127.0.0.2"


async def test_an_expired_node_id_is_free(consumer: DiscoveryConsumer) -> None:
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    consumer.view.records[str(NODE_ID)].last_seen -= 10_000
    hijack = introspection(health_endpoint="http://127.0.0.2:8001/health")
    await consumer._handle(intro_message(hijack))  # type: ignore[arg-type]
    assert dead_reasons(consumer) == []


def dated(role: str, payload: dict[str, Any], offset_s: float) -> Message:
    """``payload`` on the ``role`` topic in an envelope dated ``offset_s`` from now."""
    value = ModelEventEnvelope(
        event_type=EVENT_TYPES[role],
        source=ModelEventSource(service="t", instance_id="t"),
        timestamp=datetime.now(UTC) + timedelta(seconds=offset_s),
        payload=payload,
    ).to_bytes()
    return Message(topics()[role], value, str(payload["node_id"]).encode())


async def test_envelopes_from_the_future_cannot_pin_a_node(consumer: DiscoveryConsumer) -> None:
    year = 365 * 86400
    await consumer._handle(dated("introspection", introspection(), year))  # type: ignore[arg-type]
    assert consumer.view.records == {}
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    await consumer._handle(dated("shutdown", goodbye(), year))  # type: ignore[arg-type]
    assert str(NODE_ID) in consumer.view.records
    assert all("in the future" in r for r in dead_reasons(consumer))
    # within the skew: accepted, but counted as now, so the node's real later events win
    await consumer._handle(dated("introspection", introspection(), 30))  # type: ignore[arg-type]
    assert consumer.view.records[str(NODE_ID)].announced_at <= time.time()
    await consumer._handle(event_message("shutdown", goodbye()))  # type: ignore[arg-type]
    assert str(NODE_ID) not in consumer.view.records


async def test_forged_shutdowns_and_heartbeats_must_match_the_registration(
    consumer: DiscoveryConsumer,
) -> None:
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    await consumer._handle(event_message("shutdown", goodbye(instance_id="evil")))  # type: ignore[arg-type]
    await consumer._handle(event_message("shutdown", goodbye(service_name="other")))  # type: ignore[arg-type]
    await consumer._handle(event_message("heartbeat", heartbeat(instance_id="evil")))  # type: ignore[arg-type]
    assert str(NODE_ID) in consumer.view.records
    reasons = dead_reasons(consumer)
    assert len(reasons) == 3 and all("must match the node's registration" in r for r in reasons)


async def test_unknown_heartbeats_cannot_flood_the_request_topic(
    consumer: DiscoveryConsumer,
) -> None:
    for i in range(500):
        await consumer._handle(unknown_heartbeat(f"ghost-{i}"))  # type: ignore[arg-type]
    published = consumer._publisher.published  # type: ignore[attr-defined]
    assert consumer.stats.unknown_heartbeats == 500
    assert len(published) <= RegistrySettings().reannounce_burst + 2
    assert consumer.stats.reannounce_suppressed >= 500 - len(published)
    assert len(consumer._reannounce.last_request) <= len(published)


async def test_the_number_of_nodes_is_capped(consumer: DiscoveryConsumer) -> None:
    consumer._settings = RegistrySettings(consul_http_addr="127.0.0.1:1", max_nodes=2)
    for i in range(3):
        await consumer._handle(intro_message(introspection(instance=f"n{i}")))  # type: ignore[arg-type]
    assert len(consumer.view.records) == 2
    assert "REGISTRY_MAX_NODES" in dead_reasons(consumer)[0]


def expiry_tombstone(announced_at: float) -> Message:
    """The registry's own tombstone for the record it expired, announced at ``announced_at``."""
    return Message(
        topics()["introspection"],
        None,
        str(NODE_ID).encode(),
        _headers=[("onex_expired_announced_at", repr(announced_at).encode())],
    )


async def test_the_registrys_own_expiry_tombstone_spares_a_newer_announcement(
    consumer: DiscoveryConsumer,
) -> None:
    await consumer._handle(intro_message(introspection()))  # type: ignore[arg-type]
    record = consumer.view.records[str(NODE_ID)]
    await consumer._handle(expiry_tombstone(record.announced_at - 100))  # type: ignore[arg-type]
    assert str(NODE_ID) in consumer.view.records
    await consumer._handle(expiry_tombstone(record.announced_at))  # type: ignore[arg-type]
    assert str(NODE_ID) not in consumer.view.records


async def test_with_a_discovery_key_only_signed_records_are_accepted() -> None:
    from onex_registry.runtime.signing import DiscoverySigner

    key = "s" * 32
    settings = RegistrySettings(consul_http_addr="127.0.0.1:1", ONEX_DISCOVERY_KEY=key)  # type: ignore[call-arg]
    discovery = make_consumer(settings)
    view = discovery.view
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
