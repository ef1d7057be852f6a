"""publish_many on a real broker; what a node does while the circuit breaker is open."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Message

from .conftest import Broker, RenderedNode


async def test_publish_many_delivers_every_event_once_in_order(
    rendered: dict[str, RenderedNode], broker: Broker
) -> None:
    project = rendered["effect"]
    publisher_mod = project.module("runtime.publisher")
    testing = project.module("runtime.testing")
    topic = f"rt{uuid.uuid4().hex[:10]}.many"
    publisher = publisher_mod.EventPublisher(broker.bootstrap, "rt-many", "i-1")
    reader = testing.TopicReader(broker.bootstrap, [topic])
    payloads = [{"n": n, "text": f"événement {n}"} for n in range(500)]
    keys = [f"key-{n % 7}" for n in range(500)]
    try:
        envelopes = await publisher.publish_many("rt.many.v1", payloads, topic=topic, keys=keys)
        assert [e.payload for e in envelopes] == payloads
        assert len({e.event_id for e in envelopes}) == 500
        assert envelopes.event_ids == [e.event_id for e in envelopes]
        assert len({e.correlation_id for e in envelopes}) == 1  # one call, one operation
        assert envelopes[-2:] == [envelopes[498], envelopes[499]]
        records = await reader.wait_for(lambda m: True, timeout_s=30, count=500)
        await asyncio.sleep(0.5)
        records = await reader.drain(quiet_s=1.0)
        assert len(records) == 500  # nothing duplicated
        by_id = {e.event_id: e for e in envelopes}
        for record in records:
            decoded = testing.envelope_of(record)
            assert record.value() == by_id[decoded.event_id].to_bytes()
            assert record.key() == keys[decoded.payload["n"]].encode()
            assert dict(record.headers())["ce_id"] == str(decoded.event_id).encode()
        # Per key, the broker keeps the publish order.
        for key in set(keys):
            ns = [testing.envelope_of(r).payload["n"] for r in records if r.key() == key.encode()]
            assert ns == sorted(ns)
        assert publisher.metrics.counters["onex_events_published_total"] == 500
        assert len(await publisher.publish_many("rt.many.v1", [], topic=topic)) == 0
        with pytest.raises(ValueError, match="keys"):
            await publisher.publish_many("rt.many.v1", [{}], topic=topic, keys=["a", "b"])
    finally:
        assert await publisher.close() == 0
        reader.close()


async def test_publish_many_dead_letters_only_the_event_the_broker_refuses(
    rendered: dict[str, RenderedNode], broker: Broker
) -> None:
    project = rendered["effect"]
    publisher_mod = project.module("runtime.publisher")
    testing = project.module("runtime.testing")
    naming = project.module("runtime.naming")
    topic = f"rt{uuid.uuid4().hex[:10]}.many-big"
    publisher = publisher_mod.EventPublisher(broker.bootstrap, "rt-many", "i-1", backoff_s=0.05)
    reader = testing.TopicReader(broker.bootstrap, [topic, naming.dead_letter_topic(topic)])
    payloads: list[dict[str, Any]] = [{"n": n} for n in range(10)]
    payloads[4] = {"n": 4, "blob": "x" * 2_000_000}
    try:
        with pytest.raises(publisher_mod.PublishManyError) as failure:
            await publisher.publish_many(
                "rt.many.v1", payloads, topic=topic, keys=[str(n) for n in range(10)]
            )
        assert set(failure.value.failures) == {4}
        assert failure.value.failures[4][1] is True  # dead-lettered
        assert failure.value.delivered == 9
        assert failure.value.retriable is False  # too large never fits
        records = await reader.wait_for(lambda m: True, timeout_s=30, count=10)
        dead = [r for r in records if r.topic() == naming.dead_letter_topic(topic)]
        assert [r.key() for r in dead] == [b"4"]
        assert testing.envelope_of(dead[0]).payload["original_size"] > 2_000_000
        delivered = sorted(
            testing.envelope_of(r).payload["n"] for r in records if r.topic() == topic
        )
        assert delivered == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    finally:
        await publisher.close()
        reader.close()


async def test_open_breaker_fails_fast_and_says_when_to_retry(
    rendered: dict[str, RenderedNode], tansu_unstarted: Broker
) -> None:
    publisher_mod = rendered["effect"].module("runtime.publisher")
    resilience = rendered["effect"].module("runtime.resilience")
    publisher = publisher_mod.EventPublisher(
        tansu_unstarted.bootstrap,
        "rt-breaker",
        "i-1",
        max_retries=0,
        delivery_timeout_ms=800,
        breaker=resilience.CircuitBreaker(failure_threshold=1, reset_s=60),
    )
    try:
        with pytest.raises(publisher_mod.PublishError) as first:
            await publisher.publish("rt.e.v1", {"n": 1}, topic="rt-breaker")
        # The broker was never reached: worth retrying later; the DLQ (same broker) failed.
        assert first.value.retriable
        assert not first.value.dead_lettered
        started = time.monotonic()
        with pytest.raises(publisher_mod.BrokerUnavailableError) as open_:
            await publisher.publish("rt.e.v1", {"n": 2}, topic="rt-breaker")
        with pytest.raises(publisher_mod.BrokerUnavailableError):
            await publisher.publish_many("rt.e.v1", [{"n": 3}], topic="rt-breaker")
        assert time.monotonic() - started < 0.5
        assert open_.value.attempts == 0 and not open_.value.dead_lettered
        assert 50 < open_.value.retry_after_s <= 60
        assert isinstance(open_.value, publisher_mod.PublishError)  # existing handlers still work
    finally:
        await publisher.close(timeout_s=0.5)


def _record(events: Any, topic: str = "rt.cmd") -> Message:
    envelope = events.ModelEventEnvelope(
        event_type="rt.cmd.v1", source=events.ModelEventSource(service="t", instance_id="t")
    )
    return Message(topic=topic, partition=0, offset=7, key=b"k", value=envelope.to_bytes())


def _consumer(project: RenderedNode, handler: Any, dead: list[str], **kw: Any) -> Any:
    consumer_mod = project.module("runtime.consumer")
    publisher_mod = project.module("runtime.publisher")
    publisher = publisher_mod.EventPublisher("127.0.0.1:1", "rt-c", "i")

    async def record_dead_letter(**letter: Any) -> bool:
        dead.append(letter["error"])
        return True

    publisher.dead_letter = record_dead_letter  # unit test of the loop's decisions only
    return consumer_mod.EventConsumer(
        name="rt",
        topics=["rt.cmd"],
        group_id="g",
        handler=handler,
        publisher=publisher,
        kafka_config={"bootstrap.servers": "127.0.0.1:1"},
        max_retries=1,
        backoff_s=0.01,
        **kw,
    )


async def test_broker_outage_in_a_handler_is_waited_out_not_dead_lettered(
    rendered: dict[str, RenderedNode],
) -> None:
    project = rendered["effect"]
    events = project.module("runtime.events")
    publisher_mod = project.module("runtime.publisher")
    calls: list[int] = []
    dead: list[str] = []

    async def handler(_item: Any) -> None:
        calls.append(1)
        if len(calls) <= 3:  # more outages than the handler's retry budget (2 attempts)
            raise publisher_mod.BrokerUnavailableError("open", topic="t", retry_after_s=0.01)

    consumer = _consumer(project, handler, dead)
    assert await consumer._process(_record(events), "rt.cmd", 0, 7) is True
    assert len(calls) == 4
    assert dead == []


async def test_stopping_during_an_outage_leaves_the_record_uncommitted(
    rendered: dict[str, RenderedNode],
) -> None:
    project = rendered["effect"]
    events = project.module("runtime.events")
    publisher_mod = project.module("runtime.publisher")
    dead: list[str] = []

    async def handler(_item: Any) -> None:
        raise publisher_mod.PublishError("timed out", topic="t", attempts=4, dead_lettered=False)

    consumer = _consumer(project, handler, dead)
    task = asyncio.create_task(consumer._process(_record(events), "rt.cmd", 0, 7))
    await asyncio.sleep(0.1)
    consumer._stopping.set()
    assert await asyncio.wait_for(task, 2.0) is False  # re-delivered after restart
    assert dead == []


async def test_a_record_the_broker_refuses_still_uses_the_handler_retries(
    rendered: dict[str, RenderedNode],
) -> None:
    project = rendered["effect"]
    events = project.module("runtime.events")
    publisher_mod = project.module("runtime.publisher")
    calls: list[int] = []
    dead: list[str] = []

    async def handler(_item: Any) -> None:
        calls.append(1)
        raise publisher_mod.PublishError(
            "too large", topic="t", attempts=1, dead_lettered=True, retriable=False
        )

    consumer = _consumer(project, handler, dead)
    assert await consumer._process(_record(events), "rt.cmd", 0, 7) is True
    assert len(calls) == 2
    assert len(dead) == 1 and "too large" in dead[0]
