"""Run a coroutine on the fastest event loop available: uvloop when installed, else asyncio's.

uvloop is optional (``pip install grctl[fast]``); the daemon and workers use it when it is there,
unless ``GRCTL_NO_UVLOOP=1`` asks for the standard loop.
"""

from __future__ import annotations

import asyncio
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


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
