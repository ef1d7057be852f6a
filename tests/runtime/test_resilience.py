"""Broker trouble: absent at start, lost mid-stream, breaker, dead letters, failing handlers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import Broker, RenderedNode, running, set_node_env


async def test_broker_absent_at_start_then_started_node_announces(
    rendered: dict[str, RenderedNode],
    tansu_unstarted: Broker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    project = rendered["effect"]
    naming, testing = project.module("runtime.naming"), project.module("runtime.testing")
    env = set_node_env(monkeypatch, tmp_path, tansu_unstarted, KAFKA_CONNECT_WAIT_S="0.5")
    node = project.node_class()()
    try:
        started = time.monotonic()
        await node.initialize()  # returns although no broker answers
        assert time.monotonic() - started < 5
        status, body = await testing.http_request(node.health_endpoint)
        assert status == 503
        assert any("kafka broker unreachable" in r for r in json.loads(body)["reasons"])

        await asyncio.to_thread(tansu_unstarted.start)
        reader = testing.TopicReader(
            tansu_unstarted.bootstrap, [naming.introspection_topic(env["KAFKA_ENVIRONMENT"])]
        )
        try:
            key = str(node.identity.node_id).encode()
            await reader.wait_for(lambda m: m.key() == key, timeout_s=30)
        finally:
            reader.close()
        await asyncio.wait_for(node.connected.wait(), 10)
        deadline = time.monotonic() + 10
        while (status := (await testing.http_request(node.health_endpoint))[0]) != 200:
            assert time.monotonic() < deadline, "node never became ready"
            await asyncio.sleep(0.2)
    finally:
        await node.shutdown()


async def test_breaker_opens_on_an_unreachable_broker_and_health_says_so(
    rendered: dict[str, RenderedNode],
    tansu_unstarted: Broker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    project = rendered["effect"]
    testing = project.module("runtime.testing")
    publisher_mod = project.module("runtime.publisher")
    set_node_env(
        monkeypatch,
        tmp_path,
        tansu_unstarted,
        KAFKA_CONNECT_WAIT_S="0.2",
        KAFKA_DELIVERY_TIMEOUT_MS="1000",
        PUBLISH_MAX_RETRIES="1",
        PUBLISH_BACKOFF_S="0.05",
        BREAKER_FAILURE_THRESHOLD="2",
        BREAKER_RESET_S="60",
    )
    node = project.node_class()()
    async with running(node):
        with pytest.raises(publisher_mod.PublishError) as failure:
            await node.publisher.publish("test.event", {"n": 1}, topic="rt-breaker")
        assert failure.value.attempts == 2
        assert not failure.value.dead_lettered  # the breaker opened: the DLQ would fail too
        # Open: the next publish fails at once instead of waiting for the broker.
        started = time.monotonic()
        with pytest.raises(publisher_mod.PublishError):
            await node.publisher.publish("test.event", {"n": 2}, topic="rt-breaker")
        assert time.monotonic() - started < 0.5
        status, body = await testing.http_request(node.health_endpoint)
        assert status == 503
        assert "publisher circuit breaker open" in json.loads(body)["reasons"]
        metrics = (await testing.http_request(node.health_endpoint.replace("health", "metrics")))[1]
        assert b"onex_publisher_breaker_state" in metrics
        line = next(
            line
            for line in metrics.decode().splitlines()
            if line.startswith("onex_publisher_breaker_state{")
        )
        assert line.endswith(" 2")


async def test_an_event_that_can_never_be_delivered_is_dead_lettered(
    rendered: dict[str, RenderedNode], node_env: dict[str, str], broker: Broker
) -> None:
    project = rendered["effect"]
    testing = project.module("runtime.testing")
    naming = project.module("runtime.naming")
    publisher_mod = project.module("runtime.publisher")
    node = project.node_class()()
    topic = f"{node_env['KAFKA_ENVIRONMENT']}.too-big"
    reader = testing.TopicReader(broker.bootstrap, [naming.dead_letter_topic(topic)])
    async with running(node, reader):
        with pytest.raises(publisher_mod.PublishError) as failure:
            blob = {"blob": "x" * 2_000_000}
            await node.publisher.publish("test.big", blob, topic=topic, key="big")
        assert failure.value.dead_lettered
        [record] = await reader.wait_for(lambda m: m.key() == b"big", timeout_s=20)
        letter = testing.envelope_of(record).payload
        assert letter["source_topic"] == topic
        assert letter["original_truncated"] is True
        assert letter["original_size"] > 2_000_000
        assert letter["attempts"] == 1  # too large is not retried
        assert "size" in letter["error"].lower() or "large" in letter["error"].lower()
        assert node.metrics.counters["onex_events_dead_lettered_total"] == 1


async def test_failing_handler_is_retried_then_failed_event_and_dead_letter(
    rendered: dict[str, RenderedNode],
    node_env: dict[str, str],
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HANDLER_MAX_RETRIES", "2")
    project = rendered["effect"]
    testing = project.module("runtime.testing")
    naming = project.module("runtime.naming")
    node = project.node_class()()
    calls: list[Any] = []

    async def broken(command: Any, ctx: Any) -> None:
        calls.append(command.correlation_id)
        raise ConnectionError("downstream database refused the write")

    node.handlers.execute_effect = broken
    command_topic = node.topics["command"]
    reader = testing.TopicReader(
        broker.bootstrap, [node.topics["failed"], naming.dead_letter_topic(command_topic)]
    )
    correlation_id = uuid.uuid4()
    async with running(node, reader):
        command = await testing.send_event(
            broker.bootstrap, command_topic, "t.cmd", {"data": {}}, correlation_id=correlation_id
        )
        records = await reader.wait_for(
            lambda m: testing.envelope_of(m).correlation_id == correlation_id, count=2, timeout_s=30
        )
        by_topic = {m.topic(): testing.envelope_of(m) for m in records}
        failed = by_topic[node.topics["failed"]]
        assert failed.causation_id == command.event_id
        assert failed.payload["error_type"] == "ConnectionError"
        letter = by_topic[naming.dead_letter_topic(command_topic)].payload
        assert letter["attempts"] == 3
        assert "downstream database refused" in letter["error"]
        assert json.loads(letter["original"])["event_id"] == str(command.event_id)
        assert len(calls) == 3


async def test_garbage_is_dead_lettered_and_the_loop_keeps_going(
    rendered: dict[str, RenderedNode], node_env: dict[str, str], broker: Broker
) -> None:
    project = rendered["effect"]
    testing = project.module("runtime.testing")
    naming = project.module("runtime.naming")
    node = project.node_class()()
    command_topic = node.topics["command"]
    reader = testing.TopicReader(
        broker.bootstrap, [naming.dead_letter_topic(command_topic), node.topics["completed"]]
    )
    async with running(node, reader):
        await testing.send_raw(broker.bootstrap, command_topic, b"\xff\xfe garbage", key="g1")
        await testing.send_raw(broker.bootstrap, command_topic, b'{"event_type": ""}', key="g2")
        good = await testing.send_event(
            broker.bootstrap, command_topic, "t.cmd", {"data": {"ok": 1}}
        )
        records = await reader.wait_for(
            lambda m: (
                m.key() in (b"g1", b"g2")
                or testing.envelope_of(m).correlation_id == good.correlation_id
            ),
            count=3,
            timeout_s=30,
        )
        letters = [testing.envelope_of(m).payload for m in records if m.key() in (b"g1", b"g2")]
        assert len(letters) == 2
        assert all("not a valid event envelope" in letter["error"] for letter in letters)
        assert all(letter["attempts"] == 0 for letter in letters)
        assert node.consumers[0].running


async def test_broker_restart_mid_stream_loses_and_duplicates_nothing(
    rendered: dict[str, RenderedNode],
    restartable_broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Publish while the broker goes away for 3 s and comes back on the same address.

    Every publish must end as confirmed or as a PublishError (none hangs or vanishes).
    Apache Kafka keeps its log on disk: every confirmed record must be on the topic exactly
    once. Tansu keeps records in memory, so records confirmed before the stop die with the
    broker; every record confirmed after the restart must be on the topic exactly once.
    """
    tansu = restartable_broker
    project = rendered["effect"]
    testing = project.module("runtime.testing")
    publisher_mod = project.module("runtime.publisher")
    env = set_node_env(
        monkeypatch,
        tmp_path,
        tansu,
        KAFKA_DELIVERY_TIMEOUT_MS="5000",
        PUBLISH_MAX_RETRIES="6",
        BREAKER_RESET_S="1",
    )
    topic = f"{env['KAFKA_ENVIRONMENT']}.stream"
    node = project.node_class()()
    total = 400
    confirmed: dict[str, float] = {}
    failed: list[Exception] = []
    restarted_at = float("inf")
    enough = asyncio.Event()

    async def publish(i: int) -> None:
        try:
            envelope = await node.publisher.publish("test.seq", {"i": i}, topic=topic, key=str(i))
        except publisher_mod.PublishError as exc:
            failed.append(exc)
        else:
            confirmed[str(envelope.event_id)] = time.monotonic()
            if len(confirmed) >= 30:
                enough.set()

    async def producer() -> None:
        # About 8 s of traffic in small concurrent batches, across the outage.
        for start in range(0, total, 5):
            await asyncio.gather(*(publish(i) for i in range(start, start + 5)))
            await asyncio.sleep(0.1)

    async with running(node):
        task = asyncio.create_task(producer())
        await asyncio.wait_for(enough.wait(), 30)
        await asyncio.to_thread(tansu.stop)
        await asyncio.sleep(3)
        await asyncio.to_thread(tansu.start)
        restarted_at = time.monotonic()
        await asyncio.wait_for(task, 120)

    assert len(confirmed) + len(failed) == total
    reader = testing.TopicReader(tansu.bootstrap, [topic])
    try:
        await reader.wait_for(lambda m: True, timeout_s=20)
        records = await reader.drain(quiet_s=2.0)
    finally:
        reader.close()
    ids = [str(testing.envelope_of(m).event_id) for m in records]
    assert len(ids) == len(set(ids)), "duplicates on the topic"
    after = {event_id for event_id, at in confirmed.items() if at > restarted_at}
    assert after, "nothing was published after the restart"
    must_exist = set(confirmed) if tansu.kind == "apache-private" else after
    assert must_exist <= set(ids), f"{len(must_exist - set(ids))} confirmed records missing"
    # Whatever failed was reported to the caller; dead letters went to the DLQ topic.
    print(f"confirmed={len(confirmed)} after={len(after)} failed={len(failed)} read={len(ids)}")


@pytest.mark.e2e
async def test_commands_survive_a_broker_restart_on_apache_kafka(
    rendered: dict[str, RenderedNode],
    apache_private: Broker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Commands sent before, during and after a broker restart each produce a completed
    event (at-least-once: none lost); duplicates, if any, carry the same correlation id."""
    project = rendered["effect"]
    testing = project.module("runtime.testing")
    set_node_env(monkeypatch, tmp_path, apache_private, KAFKA_DELIVERY_TIMEOUT_MS="10000")
    node = project.node_class()()
    sent: list[uuid.UUID] = []

    async def send(n: int) -> None:
        for _ in range(n):
            correlation_id = uuid.uuid4()
            await testing.send_event(
                apache_private.bootstrap,
                node.topics["command"],
                "t.cmd",
                {"data": {"n": len(sent)}},
                correlation_id=correlation_id,
            )
            sent.append(correlation_id)

    async with running(node):
        await send(20)
        await asyncio.to_thread(apache_private.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(apache_private.start)
        await send(20)
        reader = testing.TopicReader(apache_private.bootstrap, [node.topics["completed"]])
        try:
            wanted = set(sent)
            await reader.wait_for(
                lambda m: testing.envelope_of(m).correlation_id in wanted,
                count=len(wanted),
                timeout_s=90,
            )
            records = await reader.drain(quiet_s=2.0)
        finally:
            reader.close()
    seen = [testing.envelope_of(m).correlation_id for m in records]
    assert set(seen) == set(sent)
    print(f"commands={len(sent)} completed={len(seen)} duplicates={len(seen) - len(set(seen))}")
