"""Integration tests against a real Kafka broker (template-owned).

Run with KAFKA_BOOTSTRAP_SERVERS=host:port; without it they are skipped with
that reason. Each test uses its own topic prefix and consumer group.
"""

from __future__ import annotations

import os
import uuid

import pytest

from code_refiner.node import (
    NodeCodeRefinerEffect,
)
from code_refiner.runtime import (
    naming,
)
from code_refiner.runtime.testing import (
    TopicReader,
    envelope_of,
    http_request,
    send_event,
    send_raw,
)

pytestmark = pytest.mark.integration


def _env() -> str:
    return os.environ["KAFKA_ENVIRONMENT"]


async def test_announces_itself_and_is_ready(kafka_env: str) -> None:
    node = NodeCodeRefinerEffect()
    reader = TopicReader(kafka_env, [naming.introspection_topic(_env())])
    try:
        await node.initialize()
        key = str(node.identity.node_id).encode()
        [record] = await reader.wait_for(lambda m: m.key() == key)
        envelope = envelope_of(record)
        assert envelope is not None
        assert envelope.event_type == naming.EVENT_NODE_INTROSPECTION
        payload = envelope.payload
        assert payload["node_type"] == "effect"
        assert payload["service_name"] == node.identity.service_name
        assert payload["health_endpoint"] == node.health_endpoint
        assert payload["capabilities"]["actions"] == list(node.identity.actions)

        status, body = await http_request(node.health_endpoint)
        assert status == 200, body
    finally:
        await node.shutdown()
        reader.close()


async def test_heartbeat_and_goodbye(kafka_env: str) -> None:
    node = NodeCodeRefinerEffect()
    env = _env()
    reader = TopicReader(
        kafka_env,
        [naming.heartbeat_topic(env), naming.shutdown_topic(env), naming.introspection_topic(env)],
    )
    try:
        await node.initialize()
        key = str(node.identity.node_id).encode()
        await reader.wait_for(lambda m: m.topic() == naming.heartbeat_topic(env) and m.key() == key)
    finally:
        await node.shutdown()
    try:
        await reader.wait_for(lambda m: m.topic() == naming.shutdown_topic(env) and m.key() == key)
        # The compacted introspection snapshot gets a tombstone for this node.
        await reader.wait_for(
            lambda m: (
                m.topic() == naming.introspection_topic(env)
                and m.key() == key
                and m.value() is None
            )
        )
    finally:
        reader.close()


COMMAND: dict[str, object] = {"data": {"n": 1}}
COMPLETED = "completed"


async def _round_trip(
    node: NodeCodeRefinerEffect,
    servers: str,
) -> None:
    """Send one command and check its completed event (correlation and causation ids)."""
    reader = TopicReader(servers, [node.topics[COMPLETED]])
    correlation_id = uuid.uuid4()
    try:
        command = await send_event(
            servers,
            node.topics["command"],
            naming.command_event_type(node.identity.domain, node.identity.service_name),
            COMMAND,
            correlation_id=correlation_id,
        )
        [record] = await reader.wait_for(
            lambda m: (e := envelope_of(m)) is not None and e.correlation_id == correlation_id
        )
    finally:
        reader.close()
    result = envelope_of(record)
    assert result is not None
    assert result.causation_id == command.event_id


async def test_command_produces_completed_event(kafka_env: str) -> None:
    node = NodeCodeRefinerEffect()
    try:
        await node.initialize()
        await _round_trip(node, kafka_env)
    finally:
        await node.shutdown()


async def test_garbage_is_dead_lettered_and_the_loop_goes_on(kafka_env: str) -> None:
    node = NodeCodeRefinerEffect()
    command_topic = node.topics["command"]
    reader = TopicReader(kafka_env, [naming.dead_letter_topic(command_topic)])
    try:
        await node.initialize()
        await send_raw(kafka_env, command_topic, b"\x00 not json {", key="garbage")
        [record] = await reader.wait_for(lambda m: m.key() == b"garbage")
        letter = envelope_of(record)
        assert letter is not None
        assert letter.event_type == naming.EVENT_DEAD_LETTER
        assert letter.payload["source_topic"] == command_topic
        assert "not a valid event envelope" in letter.payload["error"]
        await _round_trip(node, kafka_env)  # the loop kept going
    finally:
        await node.shutdown()
        reader.close()
