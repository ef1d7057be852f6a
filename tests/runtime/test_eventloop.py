"""runtime/eventloop.py: uvloop when installed, asyncio's loop otherwise; the tuned collector."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import RenderedNode


@pytest.fixture
def eventloop(rendered: dict[str, RenderedNode]) -> Any:
    return rendered["effect"].module("runtime.eventloop")


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_run_uses_uvloop_exactly_when_it_is_installed(eventloop: Any) -> None:
    module = eventloop.run(_loop_module())
    if importlib.util.find_spec("uvloop") is not None:
        assert module.startswith("uvloop")
        assert eventloop.loop_name() == "uvloop"
    else:
        assert module.startswith("asyncio")
        assert eventloop.loop_name() == "asyncio"


def test_without_uvloop_the_asyncio_loop_runs(
    eventloop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # importing it raises ImportError
    assert eventloop.loop_factory() is None
    assert eventloop.run(_loop_module()).startswith("asyncio")
    assert eventloop.loop_name() == "asyncio"


def test_settle_heap_freezes_start_up_objects_and_raises_the_young_threshold(
    eventloop: Any, restored_gc: None
) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    older = gc.get_threshold()[1:]
    eventloop.settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (eventloop.YOUNG_GC_THRESHOLD, *older)
    assert eventloop.YOUNG_GC_THRESHOLD > 700  # above CPython's default, or it changes nothing
