"""Tests of handlers.py (owner file): the stage's topic, and what it refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from file_writer.handlers import Handlers
from file_writer.node import NodeFileWriterEffect
from file_writer.runtime.commands import Command
from file_writer.runtime.consumer import PermanentError
from file_writer.runtime.events import ModelEventEnvelope, ModelEventSource


def test_subscribes_to_the_stage_input(offline_env: None) -> None:
    node = NodeFileWriterEffect()
    (topic,) = Handlers().subscriptions(node.context)
    assert topic.startswith(node.settings.kafka_environment + ".")


async def test_commands_are_refused(offline_env: None) -> None:
    node = NodeFileWriterEffect()
    with pytest.raises(PermanentError):
        await Handlers().execute_effect(Command.from_payload({}), node.context)


async def test_a_payload_of_another_stage_is_refused(offline_env: None) -> None:
    node = NodeFileWriterEffect()
    envelope = ModelEventEnvelope(
        event_type="test",
        source=ModelEventSource(service="test", instance_id="t"),
        payload={"kind": "something_else"},
    )
    with pytest.raises(ValidationError):
        await Handlers().stage.handle(envelope, node.publisher, node.context.environment)
