"""Progress events relayed to the run's followers: nothing committed, nothing waited for.

A worker's ``Progress`` frame (``ctx.emit``) reaches the daemon that dispatched the step, the
owner of the run's partition. ``Runtime.progress`` checks its fencing token and puts it in the
``ProgressBuffer`` of each follower that asked for progress (``GetHistory.progress``), and
returns: the step is never waited for. It also holds the latest event of each name until the
step's outcome, for a follower that comes in mid-step (the outcome's commit keeps them).

A follower reads its buffer when it can; one that reads slower than the step emits finds
older events shed (the latest of each name stays) and the next event it gets says how many it
missed (``dropped``). So a follower costs at most ``MAX_PENDING`` events of memory however
slow it is. Followers connected to another member reach the owner through the forwarder,
which relays through a buffer of its own (``relay_followed``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from grctl import protocol as p
from grctl.errors import GrctlError

if TYPE_CHECKING:
    from grctl_daemon.runtime import Runtime

MAX_PENDING = 256  # progress events a follower may have unread before older ones are shed
MAX_HELD_NAMES = 100  # names held per step in flight for late followers (as a step may emit)


class ProgressBuffer:
    """The progress events one follower has not read yet: bounded, latest of each name kept."""

    def __init__(self, wake: asyncio.Event, limit: int = MAX_PENDING) -> None:
        self.rows: list[dict[str, Any]] = []
        self.dropped = 0  # shed since the last ``take``
        self.shed_total = 0
        self.most = 0  # the most events it ever held (the bound, for tests and status)
        self._wake = wake
        self._limit = max(2, limit)

    def push(self, row: dict[str, Any]) -> None:
        """Add one event; past the limit, shed older ones (amortised O(1) per event)."""
        rows = self.rows
        rows.append(row)
        if len(rows) > self._limit:
            self._shed()
        self.most = max(self.most, len(self.rows))
        self._wake.set()

    def _shed(self) -> None:
        latest: dict[Any, int] = {}
        for n, row in enumerate(self.rows):
            latest[row["data"]["name"]] = n
        keep = sorted(latest.values())[-(self._limit // 2) :]
        shed = len(self.rows) - len(keep)
        self.dropped += shed
        self.shed_total += shed
        self.rows = [self.rows[n] for n in keep]

    def take(self) -> list[dict[str, Any]]:
        """Every unread event, in order; the first carries ``dropped`` if some were shed."""
        rows, self.rows = self.rows, []
        if rows and self.dropped:
            rows[0] = {**rows[0], "dropped": self.dropped + (rows[0].get("dropped") or 0)}
            self.dropped = 0
        return rows


class ProgressRelay:
    """The progress half of the Runtime (a mixin: see ``runtime/__init__.py``)."""

    def progress(self: Runtime, m: p.Progress) -> None:
        """A running step's progress event: to each listening follower, at once.

        The latest of each name is also held until the step's outcome, so that a follower
        who comes in mid-step (``handle.stream()`` right after a start) begins with them.
        """
        run_id = m.dispatch_id.split(".", 1)[0]
        state = self.cache.get(run_id)
        if state is None or state.dispatch_id != m.dispatch_id or not isinstance(m.name, str):
            return  # a step fenced off (lost, timed out) has nothing more to say
        row = {
            "seq": None,
            "ts_ms": m.ts_ms if isinstance(m.ts_ms, int) else 0,
            "kind": "progress",
            "step_name": state.step_name,
            "data": {"name": m.name, "value": m.data},
            "workflow_id": state.workflow_id,
            "run_id": run_id,
        }
        held = self.latest.get(run_id)
        if held is None or held[0] != m.dispatch_id:
            held = self.latest[run_id] = (m.dispatch_id, {})
        names = held[1]
        names.pop(m.name, None)  # re-inserted last: the held events stay in emission order
        if len(names) < MAX_HELD_NAMES:
            names[m.name] = row
        for buffer in self.listeners.get(run_id, ()):
            buffer.push(row)

    def step_reported(self: Runtime, run_id: str) -> None:
        """The step's outcome came (or it was stopped, or its worker lost): let go of what it
        emitted; an outcome's commit keeps the last of each name."""
        self.latest.pop(run_id, None)

    def progress_status(self: Runtime) -> dict[str, Any]:
        """The followers of progress now: how many, what they hold unread, what they shed."""
        buffers = [b for listening in self.listeners.values() for b in listening]
        return {
            "followers": len(buffers),
            "limit": MAX_PENDING,
            "pending": sum(len(b.rows) for b in buffers),
            "most_pending": max((b.most for b in buffers), default=0),
            "shed": sum(b.shed_total for b in buffers),
            "steps_held": len(self.latest),  # steps in flight whose latest events are held
        }

    def listen(self: Runtime, run_id: str, wake: asyncio.Event) -> ProgressBuffer:
        """A follower's buffer, holding at first the latest events of the step in flight."""
        buffer = ProgressBuffer(wake)
        held = self.latest.get(run_id)
        state = self.cache.get(run_id)
        if held is not None and state is not None and state.dispatch_id == held[0]:
            buffer.rows.extend(held[1].values())
        self.listeners.setdefault(run_id, set()).add(buffer)
        return buffer

    def unlisten(self: Runtime, run_id: str, buffer: ProgressBuffer) -> None:
        listening = self.listeners.get(run_id)
        if listening is not None:
            listening.discard(buffer)
            if not listening:
                del self.listeners[run_id]


async def relay_followed(
    chunks: AsyncIterator[list[dict[str, Any]]],
    req_id: int,
    send: Callable[[p.Message], Awaitable[None]],
) -> int | None:
    """Relay a followed history with progress from another member to a follower of ours.

    The member's chunks are read as fast as they come (the connection is shared by every
    request forwarded to it); progress goes through a ``ProgressBuffer`` and committed rows
    through a list, so a slow follower sheds progress here too. Returns the last committed
    seq relayed; raises what the stream raised (``not_owner`` after a handover).
    """
    wake = asyncio.Event()
    buffer = ProgressBuffer(wake)
    rows: list[dict[str, Any]] = []
    ended: list[BaseException | None] = []

    async def pump() -> None:
        try:
            async for events in chunks:
                for row in events:
                    (rows if row.get("seq") is not None else buffer.rows).append(row)
                if len(buffer.rows) > MAX_PENDING:
                    buffer.push(buffer.rows.pop())  # sheds once, on the way back in
                wake.set()
            ended.append(None)
        except Exception as exc:
            ended.append(exc)
        finally:
            wake.set()

    task = asyncio.ensure_future(pump())
    last = None
    try:
        while True:
            if not buffer.rows and not rows and not ended:
                wake.clear()
                await wake.wait()
            while buffer.rows:
                await send(p.HistoryItems(req_id, buffer.take()))
            if rows:
                batch, rows[:] = list(rows), []
                last = batch[-1]["seq"]
                await send(p.HistoryItems(req_id, batch))
            if ended and not buffer.rows and not rows:
                if isinstance(ended[0], GrctlError):
                    ended[0].details["relayed"] = last  # where the next owner takes it up
                if ended[0] is not None:
                    raise ended[0]
                return last
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
