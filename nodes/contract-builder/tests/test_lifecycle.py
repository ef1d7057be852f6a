"""Lifecycle without any service (template-owned: `copier update` refreshes this file).

The node must start with Kafka absent, say why it is not ready, serve metrics,
and stop cleanly, more than once.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from contract_builder.node import (
    NodeContractBuilderCompute,
)
from contract_builder.runtime.commands import (
    Command,
)
from contract_builder.runtime.testing import (
    http_request,
)


def _url(
    node: NodeContractBuilderCompute,
    path: str,
) -> str:
    return node.health_endpoint.replace("/health", path)


class _Values(BaseModel):
    values: list[float]


def _total(data: dict[str, Any]) -> dict[str, Any]:
    """Stands in for handlers.execute_compute: this test is about the route, not the logic."""
    return {"total": sum(_Values.model_validate(data).values)}


async def test_starts_without_kafka_and_reports_why(offline_env: None) -> None:
    node = NodeContractBuilderCompute()
    await node.initialize()
    try:
        status, body = await http_request(node.health_endpoint)
        health = json.loads(body)
        assert status == 503, health
        assert any("kafka broker unreachable" in reason for reason in health["reasons"]), health
        assert health["node_id"] == str(node.identity.node_id)

        status, body = await http_request(_url(node, "/metrics"))
        assert status == 200
        text = body.decode()
        assert "onex_uptime_seconds" in text
        assert "onex_publisher_breaker_state" in text

        node.compute = _total
        status, body = await http_request(_url(node, "/compute"), "POST", {"values": [1, 2, 3]})
        assert status == 200, body
        assert json.loads(body)["total"] == 6

        status, body = await http_request(_url(node, "/compute"), "POST", {"values": "nope"})
        assert status == 422, body
    finally:
        await node.shutdown()
    await node.shutdown()  # idempotent
    with pytest.raises(OSError):
        await http_request(node.health_endpoint, timeout_s=1.0)


async def test_initialize_twice_is_harmless(offline_env: None) -> None:
    node = NodeContractBuilderCompute()
    await node.initialize()
    try:
        await node.initialize()
        assert node.health.bound_port > 0
    finally:
        await node.shutdown()


def test_identity_is_stable(offline_env: None) -> None:
    first = NodeContractBuilderCompute()
    second = NodeContractBuilderCompute()
    assert first.identity.node_id == second.identity.node_id
    expected = "contract-builder"
    assert first.identity.service_name == expected


async def test_commands_name_their_action(offline_env: None) -> None:
    """`execute_compute` and `validate_input` commands, as the node announces them."""
    node = NodeContractBuilderCompute()
    node.compute = _total  # the runtime's dispatch is under test, not the owner's logic
    run = Command.from_payload({"action": "execute_compute", "values": [1.0, 3.0]})
    assert await node.execute(run) == await node.execute_compute({"values": [1.0, 3.0]})
    valid = Command.from_payload({"action": "validate_input", "values": [1.0]})
    assert await node.execute(valid) == {"status": "valid"}
    invalid = await node.execute(
        Command.from_payload({"action": "validate_input", "values": "nope"})
    )
    assert invalid is not None and invalid["status"] == "invalid"
