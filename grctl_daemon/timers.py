"""The one timer scheduler: a due-time heap that sleeps until the next deadline.

No polling: the loop sleeps until the earliest deadline, or until an earlier one is armed.
Cancelled timers are not removed from the heap; the engine voids them by token when they fire.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable

Fire = Callable[[str, str, str], Awaitable[None]]


def now_ms() -> int:
    return int(time.time() * 1000)


class TimerWheel:
    """Timers keyed by (run_id, kind, token); ``fire`` is called for each due one, in order."""

    def __init__(self, fire: Fire) -> None:
        self._fire = fire
        self._heap: list[tuple[int, str, str, str]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="grctl-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def arm(self, run_id: str, kind: str, due_ms: int, token: str) -> None:
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (due_ms, run_id, kind, token))
        if earliest is None or due_ms < earliest:
            self._changed.set()

    async def _loop(self) -> None:
        while True:
            self._changed.clear()
            if not self._heap:
                await self._changed.wait()
                continue
            wait_s = (self._heap[0][0] - now_ms()) / 1000
            if wait_s > 0:
                try:
                    await asyncio.wait_for(self._changed.wait(), wait_s)
                except TimeoutError:
                    pass
                continue
            _, run_id, kind, token = heapq.heappop(self._heap)
            await self._fire(run_id, kind, token)
