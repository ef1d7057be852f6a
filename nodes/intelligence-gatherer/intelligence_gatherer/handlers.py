"""Business logic of NodeIntelligenceGathererEffect: the ``intelligence_gatherer`` stage of the generation pipeline.

This file is the owner's: `copier update` never rewrites it. The stage itself is
``onex_scaffold.pipeline.stages`` (the same code the in-process pipeline runs); this node
consumes PRD_ANALYZED and publishes INTELLIGENCE_GATHERED: it asks Consul what exists (same service, same domain, name clashes).
See docs/pipeline.md for the events.

An effect stage subscribes to the topic of the event it consumes, runs the stage off the
event loop and publishes the next event (correlation id = request id, causation id = the
event it answers). A payload that is not this stage's input raises ``ValidationError``:
the runtime dead-letters it and goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onex_scaffold.pipeline.bus import EffectStage
from onex_scaffold.pipeline.events import IntelligenceGathered, PrdAnalyzed

from .runtime.base import NodeContext
from .runtime.commands import Command
from .runtime.consumer import ConsumedMessage, PermanentError
from .runtime.effect import EffectHandlers

# The models contract.yaml names.
ModelIntelligenceGathererInput = PrdAnalyzed
ModelIntelligenceGathererOutput = IntelligenceGathered


class Handlers(EffectHandlers):
    def __init__(self) -> None:
        self.stage = EffectStage("intelligence_gatherer")

    def subscriptions(self, ctx: NodeContext) -> list[str]:
        return self.stage.subscriptions(ctx.environment)

    async def on_start(self, ctx: NodeContext) -> None:
        # In the background: the node must start (and report on /health) without a broker.
        ctx.spawn(
            self.stage.prepare(ctx.settings.kafka_bootstrap_servers, ctx.environment),
            name="pipeline-topics",
        )

    async def on_event(self, message: ConsumedMessage, ctx: NodeContext) -> None:
        if message.envelope is None:  # a tombstone: nothing to do
            return
        await self.stage.handle(message.envelope, ctx.publisher, ctx.environment)

    async def execute_effect(self, command: Command, ctx: NodeContext) -> Mapping[str, Any] | None:
        topics = ", ".join(self.stage.subscriptions(ctx.environment))
        raise PermanentError(f"this stage takes pipeline events on {topics}, not commands")
