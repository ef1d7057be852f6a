"""How a node's process runs: uvloop when installed, and a collector tuned for events in flight.

``start_node.py`` runs the node with ``run(...)`` and calls ``settle_heap()`` once the node
is up. Both are measured in ``benchmarks/`` of the template (with and without).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: Allocations between two young-generation collections (CPython's default is 700). With
#: hundreds of publishes in flight, every young collection finds them alive and promotes
#: them, so the older generations get scanned over and over; collecting less often lets
#: most of them die young. Measured: ~5 of ~23 us of Python time per awaited publish with
#: 1000 in flight went to the collector at 700, almost none at 50,000. Only cyclic garbage
#: waits longer (everything else is freed at once), so memory barely changes.
YOUNG_GC_THRESHOLD = 50_000


def loop_factory() -> LoopFactory | None:
    """``uvloop.new_event_loop`` when uvloop is installed (the ``speed`` extra), else None:
    asyncio's own loop. uvloop runs the loop's machinery in C: each awaited publish costs
    less (measured in the template's benchmarks)."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on uvloop when it is installed."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def settle_heap() -> None:
    """Once the node is up: what start-up allocated (modules, models, schemas) lives as long
    as the process, so move it out of the collector's scans (``gc.freeze``), and collect
    the young generation less often (``YOUNG_GC_THRESHOLD``)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)
