"""The one timer scheduler: a due-time heap that sleeps until the next deadline.

No polling: the loop sleeps until the earliest deadline, or until an earlier one is armed.
A timer armed again (same run and kind, new token) replaces the old one, and ``cancel`` drops
one: the heap keeps such void entries until they come due (then they are skipped without a
call) or until they are more than half of it (then it is rebuilt without them). Nearly every
step deadline is cancelled, since steps end long before them, so void entries never pile up
and firing never costs a burst of work after a burst of steps. The engine checks the token
too, so a void timer that does fire changes nothing.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

from grctl._clock import now_ms

__all__ = ["TimerWheel", "now_ms"]

Fire = Callable[[str, str, str], None]
VOID_COMPACT_MIN = 1024


class TimerWheel:
    """Timers keyed by (run_id, kind, token); ``fire`` is called for each due one, in order."""

    def __init__(self, fire: Fire, horizon_ms: int | None = None) -> None:
        self._fire = fire
        # Timers the database keeps and that come due after the horizon are not held here:
        # the runtime loads them by due time as the horizon moves (None: hold every timer).
        self.horizon_ms = horizon_ms
        self._heap: list[tuple[int, str, str, str]] = []
        self._current: dict[tuple[str, str], str] = {}  # (run_id, kind) → the live token
        self._void = 0  # heap entries no longer current (an estimate, never below the truth)
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

    def arm(self, run_id: str, kind: str, due_ms: int, token: str, stored: bool = False) -> None:
        if stored and self.horizon_ms is not None and due_ms >= self.horizon_ms:
            return  # on disk, and read back when the horizon reaches it
        earliest = self._heap[0][0] if self._heap else None
        if self._current.get((run_id, kind)) is not None:
            self._void += 1
        self._current[(run_id, kind)] = token
        heapq.heappush(self._heap, (due_ms, run_id, kind, token))
        if earliest is None or due_ms < earliest:
            self._changed.set()

    def cancel(self, run_id: str, kind: str) -> None:
        if self._current.pop((run_id, kind), None) is None:
            return
        self._void += 1
        if self._void > VOID_COMPACT_MIN and self._void * 2 > len(self._heap):
            current = self._current
            self._heap = [e for e in self._heap if current.get((e[1], e[2])) == e[3]]
            heapq.heapify(self._heap)
            self._void = 0

    def wake(self) -> None:
        """Read the clock again now: a test clock jumped (``grctl._clock.SkippingClock``)."""
        self._changed.set()

    def next_due(self) -> int | None:
        """When the earliest live timer comes due (void ones at the head are dropped)."""
        heap = self._heap
        while heap and self._current.get((heap[0][1], heap[0][2])) != heap[0][3]:
            heapq.heappop(heap)
            self._void = max(0, self._void - 1)
        return heap[0][0] if heap else None

    async def _loop(self) -> None:
        while True:
            self._changed.clear()
            if not self._heap:
                await self._changed.wait()
                continue
            now = now_ms()
            wait_s = (self._heap[0][0] - now) / 1000
            if wait_s > 0:
                try:
                    await asyncio.wait_for(self._changed.wait(), wait_s)
                except TimeoutError:
                    pass
                continue
            # Every timer due now, in one go: most are void (a step that ended before its
            # deadline) and cost a lookup each.
            while self._heap and self._heap[0][0] <= now:
                _, run_id, kind, token = heapq.heappop(self._heap)
                if self._current.get((run_id, kind)) != token:
                    self._void = max(0, self._void - 1)
                    continue
                del self._current[(run_id, kind)]
                self._fire(run_id, kind, token)
