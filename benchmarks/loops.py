"""The event loop the async measurements run on: uvloop where installed, as nodes do."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def uvloop_factory() -> LoopFactory | None:
    """``uvloop.new_event_loop`` when uvloop is installed, else None (the asyncio loop)."""
    try:
        module = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: LoopFactory = module.new_event_loop
    return factory


def run(coro: Coroutine[Any, Any, T], factory: LoopFactory | None) -> T:
    """``asyncio.run(coro)`` on a loop from ``factory`` (None: asyncio's own loop)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def name(factory: LoopFactory | None) -> str:
    return "asyncio" if factory is None else "uvloop"
