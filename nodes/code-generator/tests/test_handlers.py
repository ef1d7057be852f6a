"""Tests of handlers.py (owner file): the stage's topic, and what it refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from code_generator.handlers import Handlers
from code_generator.node import NodeCodeGeneratorEffect
from code_generator.runtime.commands import Command
from code_generator.runtime.consumer import PermanentError
from code_generator.runtime.events import ModelEventEnvelope, ModelEventSource


def test_subscribes_to_the_stage_input(offline_env: None) -> None:
    node = NodeCodeGeneratorEffect()
    (topic,) = Handlers().subscriptions(node.context)
    assert topic.startswith(node.settings.kafka_environment + ".")


async def test_commands_are_refused(offline_env: None) -> None:
    node = NodeCodeGeneratorEffect()
    with pytest.raises(PermanentError):
        await Handlers().execute_effect(Command.from_payload({}), node.context)


async def test_a_payload_of_another_stage_is_refused(offline_env: None) -> None:
    node = NodeCodeGeneratorEffect()
    envelope = ModelEventEnvelope(
        event_type="test",
        source=ModelEventSource(service="test", instance_id="t"),
        payload={"kind": "something_else"},
    )
    with pytest.raises(ValidationError):
        await Handlers().stage.handle(envelope, node.publisher, node.context.environment)
