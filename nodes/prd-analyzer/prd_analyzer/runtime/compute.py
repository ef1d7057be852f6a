"""Compute nodes: a pure ``execute_compute(data) -> result``, callable in-process,
over HTTP (``POST /compute``) and, with the event bus on, through the command topic."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from .base import NodeAnswers
from .commands import Command, CommandNode
from .config import NodeSettings

ComputeFunction = Callable[[dict[str, Any]], Mapping[str, Any]]


class ComputeNode(CommandNode):
    node_type = "compute"

    def __init__(
        self,
        answers: NodeAnswers,
        compute: ComputeFunction,
        settings: NodeSettings | None = None,
        *,
        event_bus_enabled: bool = True,
    ) -> None:
        super().__init__(answers, settings)
        self.compute = compute
        self.event_bus_enabled = event_bus_enabled
        self.health.add_json_route("/compute", self._http_compute)
        if not event_bus_enabled:
            self.connected.set()  # nothing to connect to: readiness does not wait for Kafka

    async def execute_compute(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Run the pure function off the event loop (it may be CPU-bound)."""
        self.context.active_operations += 1
        try:
            return dict(await asyncio.to_thread(self.compute, dict(data)))
        finally:
            self.context.active_operations -= 1

    async def _http_compute(self, body: Any) -> Any:
        if not isinstance(body, dict):
            raise TypeError("POST /compute expects a JSON object")
        return await self.execute_compute(body)

    async def execute(self, command: Command) -> Mapping[str, Any] | None:
        # ``action`` names what to do; it is not part of the function's input.
        data = {k: v for k, v in command.payload.items() if k != "action"}
        if command.action == "validate_input":
            # The function is pure: running it is the validation, and has no side effect.
            try:
                await self.execute_compute(data)
            except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
                return {"status": "invalid", "error": str(exc)[:2000]}
            return {"status": "valid"}
        return await self.execute_compute(data)

    async def initialize(self) -> None:
        if self.event_bus_enabled:
            await super().initialize()
            return
        # Without the event bus: HTTP only, no Kafka client at all.
        if self._initialized:
            return
        self._initialized = True
        await self.health.start()
        await self.on_start()

    async def _shutdown(self) -> None:
        if self.event_bus_enabled:
            await super()._shutdown()
            return
        self._stopping = True
        await self.on_stop()
        await self.publisher.close(0.1)
        await self.health.stop()
