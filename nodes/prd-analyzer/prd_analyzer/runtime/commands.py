"""Command handling shared by effect, compute and orchestrator nodes.

A command arrives on ``naming.command_topic(env, service)``; the node runs it and
publishes the result to its ``completed`` topic with the command's
correlation_id and ``causation_id = command.event_id``. A command that keeps
failing produces a ``failed`` event and is dead-lettered.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from . import naming
from .base import NodeBase
from .consumer import ConsumedMessage
from .events import ModelEventEnvelope, ModelEventSource
from .publisher import PublishError
from .resilience import CircuitOpenError


@dataclass(frozen=True)
class Command:
    """A command as the owner's code sees it."""

    envelope: ModelEventEnvelope
    message: ConsumedMessage

    @classmethod
    def from_payload(
        cls,
        payload: Mapping[str, Any],
        *,
        topic: str = "test",
        correlation_id: uuid.UUID | None = None,
    ) -> Command:
        """A command as if it had arrived from Kafka (for tests and in-process calls)."""
        envelope = ModelEventEnvelope(
            event_type="test.command",
            correlation_id=correlation_id or uuid.uuid4(),
            source=ModelEventSource(service="in-process", instance_id="local"),
            payload=dict(payload),
        )
        message = ConsumedMessage(topic, 0, 0, None, envelope.to_bytes(), envelope)
        return cls(envelope, message)

    @property
    def payload(self) -> dict[str, Any]:
        return self.envelope.payload

    @property
    def action(self) -> str | None:
        """``payload["action"]`` when the sender names one of the node's actions."""
        action = self.envelope.payload.get("action")
        return action if isinstance(action, str) else None

    @property
    def correlation_id(self) -> uuid.UUID:
        return self.envelope.correlation_id

    @property
    def event_id(self) -> uuid.UUID:
        return self.envelope.event_id


class CommandNode(NodeBase):
    """A node that consumes its command topic (plus optional extra topics)."""

    completed_outcome: ClassVar[str] = "completed"
    failed_outcome: ClassVar[str] = "failed"

    @property
    def commands_enabled(self) -> bool:
        return True

    async def execute(self, command: Command) -> Mapping[str, Any] | None:
        raise NotImplementedError

    def extra_topics(self) -> list[str]:
        return []

    def reply_outcome(self, command: Command) -> str:
        """Outcome (and so topic) of a command's reply; a query may answer on its own."""
        return self.completed_outcome

    async def on_event(self, message: ConsumedMessage) -> None:
        """A record from an extra topic (``envelope`` is None for a tombstone)."""

    async def start_consumers(self) -> None:
        topics = [self.topics["command"]] if self.commands_enabled else []
        topics += [t for t in self.extra_topics() if t not in topics]
        if not topics:
            return
        consumer = self.consumer(
            "commands", topics, self._dispatch, accept_tombstones=True, on_give_up=self._on_give_up
        )
        self.consumers.append(consumer)
        await consumer.start()

    def _outcome_topic(self, outcome: str) -> str:
        return self.topics[naming.snake_case(outcome)]

    def _outcome_type(self, outcome: str) -> str:
        return naming.node_event_type(self.identity.domain, self.identity.service_name, outcome)

    async def _dispatch(self, message: ConsumedMessage) -> None:
        if message.topic != self.topics.get("command"):
            await self.on_event(message)
            return
        if message.envelope is None:
            return
        command = Command(message.envelope, message)
        self.context.active_operations += 1
        try:
            result = await self.execute(command)
        finally:
            self.context.active_operations -= 1
        if result is None:
            return
        payload = dict(result)
        outcome = self.reply_outcome(command)

        async def publish() -> None:
            await self.publisher.publish(
                self._outcome_type(outcome),
                payload,
                correlation_id=command.correlation_id,
                causation_id=command.event_id,
                topic=self._outcome_topic(outcome),
                key=message.key or str(command.correlation_id),
            )

        await self.publish_reliably(publish)

    async def _on_give_up(self, message: ConsumedMessage, error: BaseException) -> None:
        envelope = message.envelope
        if message.topic != self.topics.get("command") or envelope is None:
            return
        try:
            await self.publisher.publish(
                self._outcome_type(self.failed_outcome),
                {
                    "error": str(error),
                    "error_type": type(error).__name__,
                    "command_event_id": str(envelope.event_id),
                    "command": envelope.payload,
                },
                correlation_id=envelope.correlation_id,
                causation_id=envelope.event_id,
                topic=self._outcome_topic(self.failed_outcome),
                key=message.key or str(envelope.correlation_id),
            )
        except (PublishError, CircuitOpenError) as exc:
            self.log.warning("failed event not delivered (the command is dead-lettered): %s", exc)
