"""What owner code gets from its node: ``NodeContext``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from .config import NodeSettings
from .identity import NodeIdentity
from .metrics import Metrics
from .publisher import EventPublisher


class NodeContext:
    """What owner code gets: identity, settings, publisher, logger, topics, resources,
    owned background tasks (``spawn``) and readiness reasons for ``/health``."""

    def __init__(
        self,
        identity: NodeIdentity,
        settings: NodeSettings,
        publisher: EventPublisher,
        metrics: Metrics,
        topics: dict[str, str],
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.publisher = publisher
        self.metrics = metrics
        self.topics = topics
        self.logger = logging.getLogger(f"onex.{identity.service_name}")
        self.resources: dict[str, Any] = {}
        self.not_ready: dict[str, str] = {}
        self.active_operations = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def environment(self) -> str:
        return self.settings.kafka_environment

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Start a background task the node owns: cancelled and awaited on shutdown; a crash is logged."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.logger.error(
                "background task %s failed", task.get_name(), exc_info=task.exception()
            )

    def set_not_ready(self, key: str, reason: str) -> None:
        """Make ``/health`` answer 503 with ``reason`` until ``set_ready(key)``."""
        self.not_ready[key] = reason

    def set_ready(self, key: str) -> None:
        self.not_ready.pop(key, None)

    async def cancel_tasks(self, timeout_s: float) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.1, timeout_s))
