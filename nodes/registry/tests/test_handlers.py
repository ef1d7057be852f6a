"""Tests of the registry's handlers (owner-owned, like handlers.py)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from onex_registry.handlers import Handlers
from onex_registry.node import NodeRegistryEffect
from onex_registry.runtime.commands import Command
from onex_registry.runtime.testing import http_request


async def test_without_kafka_and_consul_the_registry_says_why_it_is_not_ready(
    offline_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:1")
    node = NodeRegistryEffect()
    await node.initialize()
    try:
        status, body = await http_request(node.health_endpoint)
        reasons = json.loads(body)["reasons"]
        assert status == 503
        assert any("kafka broker unreachable" in r for r in reasons), reasons
        assert any("Consul" in r and "127.0.0.1:1" in r for r in reasons), reasons
    finally:
        await node.shutdown()


async def test_list_nodes_returns_the_view(offline_env: None) -> None:
    node = NodeRegistryEffect()
    handlers = Handlers()
    await handlers.on_start(node.context)
    try:
        result = await handlers.execute_effect(
            Command.from_payload({"action": "list_nodes"}), node.context
        )
        assert result is not None
        assert result["status"] == "ok"
        assert result["result"]["nodes"] == []
        assert result["result"]["replayed"] is False
    finally:
        await node.context.cancel_tasks(1.0)


async def test_unknown_action_is_refused(offline_env: None) -> None:
    node = NodeRegistryEffect()
    handlers = Handlers()
    await handlers.on_start(node.context)
    try:
        with pytest.raises(ValidationError):
            await handlers.execute_effect(
                Command.from_payload({"action": "drop_all"}), node.context
            )
    finally:
        await node.context.cancel_tasks(1.0)


def test_bad_registry_settings_stop_the_start(
    offline_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onex_registry.service import RegistryService

    monkeypatch.setenv("REGISTRY_DEREGISTER_AFTER", "10s")
    with pytest.raises(ValidationError, match="REGISTRY_DEREGISTER_AFTER"):
        RegistryService()
