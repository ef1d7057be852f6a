"""Lifecycle without any service (template-owned: `copier update` refreshes this file).

The node must start with Kafka absent, say why it is not ready, serve metrics,
and stop cleanly, more than once.
"""

from __future__ import annotations

import json

import pytest

from intelligence_gatherer.node import (
    NodeIntelligenceGathererEffect,
)
from intelligence_gatherer.runtime.testing import (
    http_request,
)


def _url(
    node: NodeIntelligenceGathererEffect,
    path: str,
) -> str:
    return node.health_endpoint.replace("/health", path)


async def test_starts_without_kafka_and_reports_why(offline_env: None) -> None:
    node = NodeIntelligenceGathererEffect()
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
    finally:
        await node.shutdown()
    await node.shutdown()  # idempotent
    with pytest.raises(OSError):
        await http_request(node.health_endpoint, timeout_s=1.0)


async def test_initialize_twice_is_harmless(offline_env: None) -> None:
    node = NodeIntelligenceGathererEffect()
    await node.initialize()
    try:
        await node.initialize()
        assert node.health.bound_port > 0
    finally:
        await node.shutdown()


def test_identity_is_stable(offline_env: None) -> None:
    first = NodeIntelligenceGathererEffect()
    second = NodeIntelligenceGathererEffect()
    assert first.identity.node_id == second.identity.node_id
    expected = "intelligence-gatherer"
    assert first.identity.service_name == expected
