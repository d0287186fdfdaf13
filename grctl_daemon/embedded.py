"""The daemon embedded in a test's process (``grctl.testing``): storage, runtime, socket server.

It wires what ``app`` wires, as tasks of the running event loop, without the home lock, the pid
file, signals or logging set-up, and keeps every durable timer in memory so the next one is
always known (a test holds few). ``grctl.testing`` imports it only when an environment opens.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from grctl._clock import SkippingClock
from grctl_daemon.config import DaemonConfig
from grctl_daemon.runtime import Runtime
from grctl_daemon.server import Server
from grctl_daemon.storage import open_storage

EVERY_TIMER_MS = 1 << 62


class _Runtime(Runtime):
    """The daemon's runtime, holding every stored timer in memory (no due-time windows)."""

    async def _load_timers(self) -> None:
        if self.timers.horizon_ms is None:
            return
        self.timers.horizon_ms = None
        for t in await self.storage.due_timers(0, EVERY_TIMER_MS, self.storage.owned):
            self.timers.arm(t.run_id, t.kind, t.due_ms, t.token)

    async def _timer_windows(self) -> None:
        return None

    def settled(self, clock: SkippingClock) -> bool:
        """Nothing read, decided, committed or due now, and every step in flight asleep."""
        if self._tasks or self.cache.busy():
            return False
        now = clock.now_ms()
        due = self.timers.next_due()
        wake = clock.next_wake_ms()
        if (due is not None and due <= now) or (wake is not None and wake <= now):
            return False
        inflight = sum(len(w.inflight) for w in self.dispatcher.workers.values())
        if not inflight:
            return True
        asleep = {id(owner) for _, owner in clock.sleeping.values() if owner is not None}
        asleep |= {id(owner) for owner in clock.waiting.values()}
        return inflight <= len(asleep)


class InProcessDaemon:
    """A daemon runtime on ``directory`` (database and socket), served in the running loop."""

    def __init__(self, directory: Path, clock: SkippingClock) -> None:
        self.clock = clock
        self.socket_path = directory / "grctl.sock"
        self.config = DaemonConfig(
            home=directory,
            socket_path=self.socket_path,
            db_url=str(directory / "grctl.db"),
            log_path=directory / "daemon.log",
            pid_path=directory / "daemon.pid",
            # A test database needs no durability across power loss.
            synchronous="NORMAL",
            retention_ms=0,
        )
        self.storage = open_storage(self.config.db_url, synchronous=self.config.synchronous)
        self.runtime: _Runtime | None = None
        self.server: Server | None = None

    async def start(self) -> None:
        """Open the database, recover (nothing to recover), then serve the socket."""
        await self.storage.open()
        self.runtime = _Runtime(self.config, self.storage)
        self.server = Server(self.runtime, self.socket_path, lambda: None)
        await self.runtime.recover()
        self.clock.on_skip.append(self.runtime.timers.wake)
        await self.server.start()

    async def stop(self) -> None:
        """Close the connections, the runtime and the database."""
        if self.runtime is not None:
            self.clock.on_skip.remove(self.runtime.timers.wake)
        if self.server is not None:
            await self.server.stop()
        if self.runtime is not None:
            await self.runtime.close()
        await self.storage.close()
        await asyncio.sleep(0)

    def abandon(self) -> None:
        """Release the database when the event loop that ran this daemon is gone.

        Nothing can be awaited any more: the writer connection is closed and the readers'
        threads told to stop (they would keep the process alive).
        """
        for name in ("_reader", "_loader"):
            reader = getattr(self.storage, name, None)
            if reader is not None:
                reader.stop()
        writer = getattr(self.storage, "_wconn", None)
        if writer is not None:
            writer.close()

    def settled(self) -> bool:
        """Whether time may jump now (see ``grctl.testing._environment``)."""
        return self.runtime is not None and self.runtime.settled(self.clock)

    def awaited(self) -> bool:
        """Whether someone waits for a run's result."""
        return self.runtime is not None and bool(self.runtime.waiters)

    def next_due(self) -> int | None:
        """The earliest durable timer or sleeper wake-up, None when there is neither."""
        if self.runtime is None:
            return None
        times = [t for t in (self.runtime.timers.next_due(), self.clock.next_wake_ms()) if t]
        return min(times, default=None)
