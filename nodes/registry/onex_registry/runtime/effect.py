"""Effect nodes: run commands that touch the outside world (databases, APIs, files).

The owner subclasses ``EffectHandlers`` in ``handlers.py``; this module wires it
to Kafka. See ``docs``/README for the full handler API.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any, ClassVar

from .base import NodeAnswers, NodeContext
from .commands import Command, CommandNode
from .config import NodeSettings
from .consumer import ConsumedMessage


class EffectHandlers:
    """Base class of an effect node's business logic. Override what you need.

    - ``execute_effect``: run one command; return the ``completed`` event payload,
      or None to publish nothing. Raise to have it retried (``HANDLER_MAX_RETRIES``)
      and then dead-lettered with a ``failed`` event; raise ``PermanentError`` to skip
      the retries.
    - ``subscriptions``: extra topics (e.g. ``naming.discovery_topics(env)``) whose
      records go to ``on_event`` in the same consumer group, after the same retries.
    - ``on_start`` / ``on_stop``: open and close your own resources; ``ctx.spawn``
      starts owned background tasks, ``ctx.set_not_ready`` holds ``/health`` at 503.
    """

    #: Set when the handler needs the PostgreSQL pool (``ctx.resources["postgres"]``).
    requires_postgres: ClassVar[bool] = False

    def subscriptions(self, ctx: NodeContext) -> list[str]:
        return []

    async def on_start(self, ctx: NodeContext) -> None:
        return None

    async def on_stop(self, ctx: NodeContext) -> None:
        return None

    async def execute_effect(self, command: Command, ctx: NodeContext) -> Mapping[str, Any] | None:
        raise NotImplementedError("implement execute_effect in handlers.py")

    async def on_event(self, message: ConsumedMessage, ctx: NodeContext) -> None:
        return None


class PostgresNotGeneratedError(RuntimeError):
    """The handlers ask for PostgreSQL, but the node was generated without it."""


class EffectNode(CommandNode):
    node_type = "effect"

    def __init__(
        self,
        answers: NodeAnswers,
        handlers: EffectHandlers,
        settings: NodeSettings | None = None,
        *,
        use_postgres: bool = False,
    ) -> None:
        super().__init__(answers, settings)
        self.handlers = handlers
        self.use_postgres = use_postgres or handlers.requires_postgres
        self._pool: Any = None
        if self.use_postgres and importlib.util.find_spec(f"{__package__}.postgres") is None:
            # Fail at construction with what to do, not with ModuleNotFoundError at start.
            raise PostgresNotGeneratedError(
                f"{type(handlers).__name__}.requires_postgres is True, but this node was "
                "generated without PostgreSQL (no runtime/postgres.py, no asyncpg). Regenerate "
                "it with use_postgres=true, e.g. `copier update --trust --defaults --data "
                "use_postgres=true`, then set DATABASE_URL."
            )

    async def open_resources(self) -> None:
        if self.use_postgres:
            # Imported by name: postgres.py is only generated when PostgreSQL is used.
            postgres = importlib.import_module(f"{__package__}.postgres")
            self._pool = await postgres.open_pool(self.settings)
            self.context.resources["postgres"] = self._pool

    async def close_resources(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            self.context.resources.pop("postgres", None)
            await pool.close()

    async def on_start(self) -> None:
        await self.handlers.on_start(self.context)

    async def on_stop(self) -> None:
        await self.handlers.on_stop(self.context)

    def extra_topics(self) -> list[str]:
        return self.handlers.subscriptions(self.context)

    async def execute(self, command: Command) -> Mapping[str, Any] | None:
        return await self.handlers.execute_effect(command, self.context)

    async def on_event(self, message: ConsumedMessage) -> None:
        await self.handlers.on_event(message, self.context)
