"""Tests of handlers.py (owner file): the stage's topic, and what it refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from intelligence_gatherer.handlers import Handlers
from intelligence_gatherer.node import NodeIntelligenceGathererEffect
from intelligence_gatherer.runtime.commands import Command
from intelligence_gatherer.runtime.consumer import PermanentError
from intelligence_gatherer.runtime.events import ModelEventEnvelope, ModelEventSource


def test_subscribes_to_the_stage_input(offline_env: None) -> None:
    node = NodeIntelligenceGathererEffect()
    (topic,) = Handlers().subscriptions(node.context)
    assert topic.startswith(node.settings.kafka_environment + ".")


async def test_commands_are_refused(offline_env: None) -> None:
    node = NodeIntelligenceGathererEffect()
    with pytest.raises(PermanentError):
        await Handlers().execute_effect(Command.from_payload({}), node.context)


async def test_a_payload_of_another_stage_is_refused(offline_env: None) -> None:
    node = NodeIntelligenceGathererEffect()
    envelope = ModelEventEnvelope(
        event_type="test",
        source=ModelEventSource(service="test", instance_id="t"),
        payload={"kind": "something_else"},
    )
    with pytest.raises(ValidationError):
        await Handlers().stage.handle(envelope, node.publisher, node.context.environment)
