"""The clock durable time is read from: real time, or real time plus what a test kit skipped.

Every time that is recorded or compared with a durable deadline reads ``now_ms`` (the daemon's
timers, deadlines and schedules; ``ctx.now``) and every wait for such a time goes through
``sleep_until`` (``ctx.sleep``, task retry backoff). By default that is the system clock and
costs one ``is None`` test. ``grctl.testing`` installs a ``SkippingClock`` for the process: it
runs at the rate of real time (so a step that hangs still times out) plus an offset that
``skip`` moves forward, waking every sleeper whose time came. Leases, heartbeats and
connection keepalives stay on ``time.monotonic``: they are about live processes, not the
workflow's time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class SkippingClock:
    """Real time plus the milliseconds skipped so far; sleepers wake when a skip passes them.

    ``sleeping`` tells which owners (the step runs of a worker) are blocked on this clock and
    until when, so a test kit can tell a step that waits for time from one that works.
    """

    def __init__(self) -> None:
        self.skipped_ms = 0
        self.sleeping: dict[int, tuple[int, object]] = {}  # id → (wake_ms, owner)
        # Owners blocked on something the engine itself drives (a child run's result): as
        # still as a sleeper, but with no wake time of their own.
        self.waiting: dict[int, object] = {}
        self.on_skip: list[Callable[[], None]] = []  # told after each skip (timer heaps)
        self._jumped: asyncio.Future[None] | None = None
        self._next_id = 0

    def now_ms(self) -> int:
        """Milliseconds since the epoch on this clock."""
        return int(time.time() * 1000) + self.skipped_ms

    def now_us(self) -> int:
        """Microseconds since the epoch on this clock."""
        return time.time_ns() // 1000 + self.skipped_ms * 1000

    def skip(self, ms: int) -> None:
        """Move the clock ``ms`` forward: sleepers and listeners re-read it at once."""
        if ms <= 0:
            return
        self.skipped_ms += ms
        jumped, self._jumped = self._jumped, None
        if jumped is not None and not jumped.done():
            jumped.set_result(None)
        for listener in list(self.on_skip):
            listener()

    def next_wake_ms(self) -> int | None:
        """The earliest time a sleeper waits for, None when nobody sleeps."""
        return min((wake for wake, _ in self.sleeping.values()), default=None)

    async def sleep_until(self, wake_ms: int, owner: object = None) -> None:
        """Return once this clock reads ``wake_ms``: by real time passing, or by a skip."""
        key = self._next_id
        self._next_id += 1
        self.sleeping[key] = (wake_ms, owner)
        try:
            while (left_ms := wake_ms - self.now_ms()) > 0:
                if self._jumped is None or self._jumped.done():
                    self._jumped = asyncio.get_running_loop().create_future()
                try:
                    await asyncio.wait_for(asyncio.shield(self._jumped), left_ms / 1000)
                except TimeoutError:
                    pass
        finally:
            del self.sleeping[key]


_clock: SkippingClock | None = None


def now_ms() -> int:
    """Milliseconds since the epoch: the system clock, or the installed test clock."""
    clock = _clock
    if clock is None:
        return int(time.time() * 1000)
    return clock.now_ms()


def now_us() -> int:
    """Microseconds since the epoch (what ``ctx.now`` records)."""
    clock = _clock
    if clock is None:
        return time.time_ns() // 1000
    return clock.now_us()


async def sleep_until(wake_ms: int, owner: object = None) -> None:
    """Sleep until ``now_ms()`` reads ``wake_ms``; ``owner`` names who waits (a step run)."""
    clock = _clock
    if clock is None:
        # A loop's timers may fire up to a millisecond early (uvloop's resolution): sleep
        # again for what is left, so nothing waiting for wake_ms goes on before it.
        while (left := wake_ms / 1000 - time.time()) > 0:
            await asyncio.sleep(left)
        return
    await clock.sleep_until(wake_ms, owner)


async def wait_on_engine(awaitable: Awaitable[T], owner: object) -> T:
    """Await what the engine will bring about (a child's end), counted as still for the clock.

    A step blocked here does no work of its own, so a test clock may jump for the timers that
    will end the wait; outside a test it is a plain ``await``.
    """
    clock = _clock
    if clock is None:
        return await awaitable
    key = clock._next_id
    clock._next_id += 1
    clock.waiting[key] = owner
    try:
        return await awaitable
    finally:
        del clock.waiting[key]


def install(clock: SkippingClock | None) -> None:
    """Make ``clock`` the process's clock (None: back to the system clock)."""
    global _clock
    _clock = clock


def installed() -> SkippingClock | None:
    """The test clock in use, None for the system clock."""
    return _clock
