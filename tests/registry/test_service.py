"""The registry's service inside its node: a dead discovery consumer makes /health fail."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from onex_registry.service import READY_DISCOVERY, RegistryService


class Context:
    """The part of NodeContext the callback uses."""

    def __init__(self) -> None:
        self.not_ready: dict[str, str] = {}
        self.logger = logging.getLogger("test")

    def set_not_ready(self, key: str, reason: str) -> None:
        self.not_ready[key] = reason


async def test_a_consumer_that_died_makes_health_fail() -> None:
    async def dies() -> None:
        raise RuntimeError("librdkafka fatal error")

    ctx = Context()
    task = asyncio.create_task(dies())
    task.add_done_callback(lambda t: RegistryService._discovery_stopped(ctx, t))  # type: ignore[arg-type]
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert "librdkafka fatal error" in ctx.not_ready[READY_DISCOVERY]


async def test_a_consumer_cancelled_on_shutdown_is_not_a_failure() -> None:
    ctx = Context()
    task: asyncio.Task[Any] = asyncio.create_task(asyncio.sleep(10))
    task.add_done_callback(lambda t: RegistryService._discovery_stopped(ctx, t))  # type: ignore[arg-type]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert ctx.not_ready == {}


async def test_a_start_task_that_died_makes_health_fail_and_its_normal_end_does_not() -> None:
    async def dies() -> None:
        raise TimeoutError("no answer from Kafka in time")

    async def ends() -> None:
        return None

    for body, expected in ((dies, True), (ends, False)):
        ctx = Context()
        task = asyncio.create_task(body(), name="registry")
        task.add_done_callback(lambda t, c=ctx: RegistryService._discovery_stopped(c, t))  # type: ignore[misc, arg-type]
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
        assert (READY_DISCOVERY in ctx.not_ready) is expected
