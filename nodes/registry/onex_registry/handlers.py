"""Business logic of NodeRegistryEffect: the ONEX registry.

This file is the owner's (``copier update`` never rewrites it). The registry's
work lives in the modules beside it:

- ``discovery.py``: reads introspection (compacted topic, from the beginning),
  heartbeat and shutdown events off the bus (``topic_setup.py`` creates the topics);
- ``discovery_records.py``: checks each record (``admission.py``, ``record_decoding.py``,
  ``host_resolver.py``, ``reannounce.py``) and applies it to the view; dead-letters bad ones;
- ``registry_view.py``: the view, which nodes should be in Consul;
- ``reconcile.py``: the loop that makes the Consul agent match the view;
- ``consul_registry.py``: introspection event -> Consul registration, py-consul client;
- ``service.py``: starts and stops the above inside the node.

Commands (on the node's command topic): ``list_nodes`` returns the registry's
view; ``reconcile`` compares with Consul now instead of at the next interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .runtime.base import NodeContext
from .runtime.commands import Command
from .runtime.effect import EffectHandlers
from .service import RegistryService


class ModelRegistryInput(BaseModel):
    """A command's payload."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["list_nodes", "reconcile"] = "list_nodes"
    data: dict[str, Any] = Field(default_factory=dict)


class ModelRegistryOutput(BaseModel):
    """The ``completed`` event's payload."""

    status: str
    action: str
    result: dict[str, Any] = Field(default_factory=dict)


class Handlers(EffectHandlers):
    def __init__(self) -> None:
        self.registry: RegistryService | None = None

    async def on_start(self, ctx: NodeContext) -> None:
        # Settings are read here, not at import, so a bad REGISTRY_* value stops the start
        # with a message naming the variable.
        self.registry = RegistryService()
        await self.registry.start(ctx)

    async def on_stop(self, ctx: NodeContext) -> None:
        if self.registry is not None:
            await self.registry.stop(ctx)

    async def execute_effect(self, command: Command, ctx: NodeContext) -> Mapping[str, Any] | None:
        # An invalid payload raises ValidationError: dead-lettered at once, never retried.
        request = ModelRegistryInput.model_validate(command.payload)
        assert self.registry is not None, "on_start runs before any command"
        if request.action == "reconcile":
            self.registry.reconciler.wake()
        output = ModelRegistryOutput(
            status="ok", action=request.action, result=self.registry.describe()
        )
        return output.model_dump(mode="json")
