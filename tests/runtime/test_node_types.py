"""Node lifecycle against real brokers: announce, commands, reducer state, orchestrator."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from onex_scaffold.devstack.testing import read_stack_addresses

from .conftest import NODE_TYPES, REPO_ROOT, Broker, RenderedNode, _apache_kafka, render, running


def _rt(node: RenderedNode) -> tuple[Any, Any]:
    """(naming, testing) modules of the rendered node."""
    return node.module("runtime.naming"), node.module("runtime.testing")


@pytest.mark.parametrize("node_type", list(NODE_TYPES))
async def test_introspection_is_read_back_by_an_independent_consumer(
    node_type: str, rendered: dict[str, RenderedNode], node_env: dict[str, str], broker: Broker
) -> None:
    project = rendered[node_type]
    naming, testing = _rt(project)
    node = project.node_class()()
    topic = naming.introspection_topic(node_env["KAFKA_ENVIRONMENT"])
    reader = testing.TopicReader(broker.bootstrap, [topic])
    async with running(node, reader):
        # initialize() returned: the broker has already confirmed the announcement.
        key = str(node.identity.node_id).encode()
        [record] = await reader.wait_for(lambda m: m.key() == key, timeout_s=20)
        envelope = testing.envelope_of(record)
        assert envelope.event_type == "omninode.discovery.node_introspection.v1"
        payload = envelope.payload
        assert payload["node_id"] == str(node.identity.node_id)
        assert payload["node_type"] == node_type
        assert payload["service_name"] == NODE_TYPES[node_type]["service_name"]
        assert payload["instance_id"] == node_env["INSTANCE_ID"]
        assert payload["health_endpoint"] == f"http://127.0.0.1:{node.health.bound_port}/health"
        assert payload["capabilities"]["actions"]
        assert payload["capabilities"]["protocols"] == ["kafka", "http"]
        headers = dict(record.headers() or [])
        assert headers["ce_type"] == b"omninode.discovery.node_introspection.v1"
        assert headers["ce_id"] == str(envelope.event_id).encode()
        status, body = await testing.http_request(node.health_endpoint)
        assert status == 200, body


async def test_effect_command_produces_completed_event(
    rendered: dict[str, RenderedNode], node_env: dict[str, str], broker: Broker
) -> None:
    project = rendered["effect"]
    naming, testing = _rt(project)
    node = project.node_class()()
    reader = testing.TopicReader(broker.bootstrap, [node.topics["completed"]])
    correlation_id = uuid.uuid4()
    async with running(node, reader):
        command = await testing.send_event(
            broker.bootstrap,
            naming.command_topic(node_env["KAFKA_ENVIRONMENT"], "rt-writer"),
            "omninode.general.request.rt_writer.v1",
            {"action": "execute_effect", "data": {"row": 1}},
            correlation_id=correlation_id,
            key="order-1",
        )
        [record] = await reader.wait_for(lambda m: m.key() == b"order-1", timeout_s=30)
        result = testing.envelope_of(record)
        assert result.event_type == "omninode.general.event.rt_writer_completed.v1"
        assert result.correlation_id == correlation_id
        assert result.causation_id == command.event_id
        assert result.payload == {"status": "ok", "action": "execute_effect", "result": {"row": 1}}
        assert node.metrics.counters["onex_messages_processed_total"] >= 1


async def test_orchestrator_publishes_completion_with_the_correlation_id(
    rendered: dict[str, RenderedNode], node_env: dict[str, str], broker: Broker
) -> None:
    project = rendered["orchestrator"]
    naming, testing = _rt(project)
    node = project.node_class()()
    reader = testing.TopicReader(broker.bootstrap, [node.topics["workflow_completed"]])
    correlation_id = uuid.uuid4()
    async with running(node, reader):
        await testing.send_event(
            broker.bootstrap,
            node.topics["command"],
            "omninode.general.request.rt_flow.v1",
            {"data": {"order": 7}},
            correlation_id=correlation_id,
        )
        [record] = await reader.wait_for(
            lambda m: testing.envelope_of(m).correlation_id == correlation_id, timeout_s=30
        )
        result = testing.envelope_of(record)
        assert result.event_type == "omninode.general.event.rt_flow_workflow_completed.v1"
        assert record.topic() == naming.node_event_topic(
            node_env["KAFKA_ENVIRONMENT"], "rt-flow", "workflow-completed"
        )
        assert result.payload["correlation_id"] == str(correlation_id)
        assert result.payload["workflow_id"] == str(correlation_id)
        # The correlation id went through every step into the workflow's own result.
        assert result.payload["result"] == {
            "correlation_id": str(correlation_id),
            "steps": ["validate_request", "process", "finalize"],
            "data": {"order": 7},
        }

        # get_workflow_status over the bus: answered on its own topic, nothing re-run.
        status_reader = testing.TopicReader(broker.bootstrap, [node.topics["workflow_status"]])
        query_id = uuid.uuid4()
        try:
            await testing.send_event(
                broker.bootstrap,
                node.topics["command"],
                "omninode.general.request.rt_flow.v1",
                {"action": "get_workflow_status", "workflow_id": str(correlation_id)},
                correlation_id=query_id,
            )
            [answer] = await status_reader.wait_for(
                lambda m: testing.envelope_of(m).correlation_id == query_id, timeout_s=30
            )
        finally:
            status_reader.close()
        status = testing.envelope_of(answer).payload
        assert status["status"] == "completed"
        assert status["result"] == result.payload["result"]
        await reader.drain(quiet_s=1.0)
        assert len(reader.records) == 1  # no second workflow-completed event


def _stored_events(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (state,) = conn.execute("SELECT state FROM onex_state").fetchone()
    return int(json.loads(state)["events"])


async def test_reducer_aggregates_two_topics_persists_and_resumes_without_double_counting(
    rendered: dict[str, RenderedNode],
    node_env: dict[str, str],
    broker: Broker,
) -> None:
    project = rendered["reducer"]
    naming, testing = _rt(project)
    env = node_env["KAFKA_ENVIRONMENT"]
    placed = naming.reducer_input_topic(env, "order-placed")
    paid = naming.reducer_input_topic(env, "order-paid")
    db = Path(node_env["REDUCER_STATE_PATH"])
    cls = project.node_class()

    def states(reader: Any) -> list[int]:
        return [testing.envelope_of(m).payload["state"]["events"] for m in reader.records]

    node = cls()
    reader = testing.TopicReader(broker.bootstrap, [node.topics["state_updated"]])
    async with running(node):
        for i in range(3):
            await testing.send_event(broker.bootstrap, placed, "shop.placed", {"amount": 10 + i})
        for _ in range(2):
            await testing.send_event(broker.bootstrap, paid, "shop.order_paid", {"amount": 1})
        await reader.wait_for(
            lambda m: testing.envelope_of(m).payload["state"]["events"] == 5, timeout_s=30
        )
        assert node.state["counts"] == {"order-placed": 3, "order-paid": 2}
        assert node.state["totals"]["order-placed"] == 33.0
    assert _stored_events(db) == 5

    # Lose the committed offsets, as a crash between persisting and committing would:
    # the restarted reducer is handed every record again and must not count them twice.
    await _rewind_group(broker.bootstrap, node_env["KAFKA_CONSUMER_GROUP"], [placed, paid])

    node = cls()
    async with running(node, reader):
        assert node.state["events"] == 5  # resumed from the store
        await testing.send_event(broker.bootstrap, paid, "shop.order_paid", {"amount": 5})
        await reader.wait_for(
            lambda m: testing.envelope_of(m).payload["state"]["events"] == 6, timeout_s=30
        )
        await reader.drain(quiet_s=2.0)
        # The five old records really were delivered again, and skipped.
        assert node.metrics.counters["onex_messages_consumed_total"] >= 6
        assert node.state["counts"] == {"order-placed": 3, "order-paid": 3}
        assert max(states(reader)) == 6, states(reader)
    assert _stored_events(db) == 6


async def test_reducer_refuses_bad_events_one_by_one_and_answers_get_state(
    rendered: dict[str, RenderedNode], node_env: dict[str, str], broker: Broker
) -> None:
    """A window with a bad and a non-finite event: those two are dead-lettered alone, the
    rest is applied; the state is asked for over the bus and over HTTP."""
    project = rendered["reducer"]
    naming, testing = _rt(project)
    env = node_env["KAFKA_ENVIRONMENT"]
    placed = naming.reducer_input_topic(env, "order-placed")
    events_module = project.module("runtime.events")
    node = project.node_class()()
    updates = testing.TopicReader(broker.bootstrap, [node.topics["state_updated"]])
    letters = testing.TopicReader(broker.bootstrap, [naming.dead_letter_topic(placed)])
    answers = testing.TopicReader(broker.bootstrap, [node.topics["state"]])
    try:
        await node.initialize()
        await testing.send_event(broker.bootstrap, placed, "shop.placed", {"amount": 2})
        await testing.send_event(broker.bootstrap, placed, "shop.placed", {"amount": "lots"})
        # NaN as JSON parsers write it (not valid JSON, but Python and others accept it).
        nan = events_module.ModelEventEnvelope(
            event_type="shop.placed",
            correlation_id=uuid.uuid4(),
            source=events_module.ModelEventSource(service="test", instance_id="t"),
            payload={"amount": 123456.5},
        )
        raw = nan.to_bytes().replace(b"123456.5", b"NaN")
        assert b"NaN" in raw
        await testing.send_raw(broker.bootstrap, placed, raw, key="nan")
        await testing.send_event(broker.bootstrap, placed, "shop.placed", {"amount": 3})
        await updates.wait_for(
            lambda m: testing.envelope_of(m).payload["state"]["events"] == 2, timeout_s=30
        )
        await letters.wait_for(lambda m: True, count=2, timeout_s=30)
        assert node.state["totals"] == {"order-placed": 5.0}
        last = testing.envelope_of(updates.records[-1]).payload
        assert last["aggregate_id"] == node.aggregate_id
        assert last["aggregation_window_ms"] == 500
        assert last["event_count"] == last["events_applied"]

        query_id = uuid.uuid4()
        await testing.send_event(
            broker.bootstrap,
            node.topics["command"],
            "omninode.general.request.rt_counter.v1",
            {"action": "get_state"},
            correlation_id=query_id,
        )
        [answer] = await answers.wait_for(
            lambda m: testing.envelope_of(m).correlation_id == query_id, timeout_s=30
        )
        assert testing.envelope_of(answer).payload["state"] == node.state

        status, body = await testing.http_request(node.health_endpoint.replace("/health", "/state"))
        assert status == 200, body
        assert json.loads(body)["state"] == node.state
    finally:
        await node.shutdown()
        for reader in (updates, letters, answers):
            reader.close()
    stored = json.loads(
        sqlite3.connect(node_env["REDUCER_STATE_PATH"])
        .execute("SELECT state FROM onex_state")
        .fetchone()[0]
    )
    assert stored["totals"] == {"order-placed": 5.0}


async def _rewind_group(bootstrap: str, group: str, topics: list[str]) -> None:
    """Commit offset 0 for every partition of ``topics`` in ``group`` (the group is empty)."""

    def rewind() -> None:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        try:
            parts = []
            for topic in topics:
                meta = consumer.list_topics(topic, timeout=10).topics[topic]
                parts += [TopicPartition(topic, p, 0) for p in meta.partitions]
            consumer.commit(offsets=parts, asynchronous=False)
            committed = consumer.committed(parts, timeout=10)
            assert all(tp.offset == 0 for tp in committed), committed
        finally:
            consumer.close()

    await asyncio.to_thread(rewind)


@pytest.mark.parametrize("node_type", list(NODE_TYPES))
def test_generated_project_checks_pass_against_a_real_broker(
    node_type: str, rendered: dict[str, RenderedNode], tansu: Broker
) -> None:
    """The project's own ruff, mypy and pytest (integration tests included, on Tansu)."""
    project = rendered[node_type]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap, **tansu.env}
    env.pop("KAFKA_ENVIRONMENT", None)
    commands = [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        [sys.executable, "-m", "mypy"],
        [sys.executable, "-m", "pytest", "-q", "-p", "no:copier", "-p", "no:cacheprovider"],
    ]
    for command in commands:
        result = subprocess.run(
            command, cwd=project.path, env=env, capture_output=True, text=True, timeout=600
        )
        output = f"{command}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
        assert result.returncode == 0, output
        if "pytest" in command:
            assert " skipped" not in result.stdout.splitlines()[-1], result.stdout[-2000:]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("node_type", "options"),
    [("effect", {"use_postgres": True}), ("reducer", {"state_backend": "postgres"})],
)
def test_generated_postgres_projects_pass_against_kafka_and_postgresql(
    node_type: str, options: dict[str, Any], tmp_path: Path
) -> None:
    """PostgreSQL variants: the project's own checks with Apache Kafka and PostgreSQL."""
    broker = _apache_kafka()
    stack = read_stack_addresses(Path(os.environ.get("ONEX_DEV_ROOT", str(REPO_ROOT))))
    if not stack.database_url:
        pytest.skip("PostgreSQL not running: start it with `onex-node dev up --postgres`")
    project = render(
        node_type,
        tmp_path / node_type,
        service_name=f"pg-{node_type}",
        node_name=f"Pg{node_type.capitalize()}",
        **options,
    )
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "DATABASE_URL": stack.database_url,
    }
    for command in (
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        [sys.executable, "-m", "mypy"],
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:copier", "-p", "no:cacheprovider"],
    ):
        result = subprocess.run(
            command, cwd=project.path, env=env, capture_output=True, text=True, timeout=600
        )
        output = f"{command}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
        assert result.returncode == 0, output
        if "pytest" in command:
            assert " skipped" not in result.stdout.splitlines()[-1], output
    if node_type == "effect":
        # The out-of-the-box writer: one row per command, a redelivered one too.
        assert (
            "PASSED tests/test_integration.py::test_a_command_becomes_exactly_one_row"
            in result.stdout
        ), result.stdout[-4000:]


async def test_node_announces_again_when_the_registry_asks(
    rendered: dict[str, RenderedNode], node_env: dict[str, str], broker: Broker
) -> None:
    project = rendered["compute"]
    naming, testing = _rt(project)
    env = node_env["KAFKA_ENVIRONMENT"]
    node = project.node_class()()
    reader = testing.TopicReader(broker.bootstrap, [naming.introspection_topic(env)])
    key = str(node.identity.node_id).encode()
    async with running(node, reader):
        await reader.wait_for(lambda m: m.key() == key, timeout_s=20)
        # The request consumer joins its group in the background and starts at the end of
        # the topic, so ask until the answer comes (a registry asks once, at its start).
        for attempt in range(30):
            request = await testing.send_event(
                broker.bootstrap,
                naming.introspection_request_topic(env),
                naming.EVENT_INTROSPECTION_REQUESTED,
                {"requested_by": "test-registry", "reason": f"attempt {attempt}"},
            )
            try:
                [answer] = await reader.wait_for(
                    lambda m, cid=request.correlation_id: (
                        m.key() == key and testing.envelope_of(m).correlation_id == cid
                    ),
                    timeout_s=1.0,
                )
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("the node never answered an introspection request")
        payload = testing.envelope_of(answer).payload
        assert payload["node_id"] == str(node.identity.node_id)
        assert payload["correlation_id"] == str(request.correlation_id)

        # A request for another service is not for us.
        other = await testing.send_event(
            broker.bootstrap,
            naming.introspection_request_topic(env),
            naming.EVENT_INTROSPECTION_REQUESTED,
            {"requested_by": "test-registry", "service_name": "someone-else"},
        )
        await asyncio.sleep(2)
        await reader.drain(quiet_s=1.0)
        assert not [
            m
            for m in reader.records
            if testing.envelope_of(m).correlation_id == other.correlation_id
        ]
