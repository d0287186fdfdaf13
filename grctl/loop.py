"""Run a coroutine on the fastest event loop available: uvloop when installed, else asyncio's.

uvloop is a dependency on Linux (elsewhere ``pip install grctl[fast]``); the daemon and workers
use it when it is there, unless ``GRCTL_NO_UVLOOP=1`` asks for the standard loop.

The garbage collector is tuned here too. A step allocates a few hundred short-lived containers
(a run state, its decision, frames); with the default gen-0 threshold of 700 the collector runs
every few steps and walks every young object each time, about 7% of the daemon's CPU in the
chain benchmark. Collections every 50,000 allocations, and what start-up imported frozen out of
them (``gc.freeze``), cost a fraction of that; cycles are still collected.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if os.environ.get("GRCTL_NO_UVLOOP"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


GC_THRESHOLDS = (50_000, 50, 100)


def run(coro: Coroutine[Any, Any, T]) -> T:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
