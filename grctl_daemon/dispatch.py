"""Which worker gets which step: connected workers, their capacity, and the queue of steps.

A step goes to the least-loaded connected worker that serves its workflow type and has room;
when none has, it waits in a FIFO queue per type until a worker frees a slot or connects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkerSlot:
    """A connected worker: what it serves, how much it may run, what it runs now."""

    connection_id: str
    name: str
    types: frozenset[str]
    capacity: int
    send: Callable[[Any], None]  # writes one frame to the worker, never blocks
    connected_ms: int
    inflight: dict[str, str] = field(default_factory=dict)  # dispatch_id → run_id
    reserved: int = 0  # runs being read back from the database to be handed to this worker

    @property
    def free(self) -> int:
        return self.capacity - len(self.inflight) - self.reserved


class RunQueue:
    """Runs waiting for a worker, first in first out, each at most once (O(1) both ways)."""

    def __init__(self) -> None:
        self._runs: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def append(self, run_id: str) -> None:
        self._runs[run_id] = None

    def popleft(self) -> str:
        run_id = next(iter(self._runs))
        del self._runs[run_id]
        return run_id


class Dispatcher:
    """Tracks workers and queued steps; decides, the runtime sends."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerSlot] = {}
        self._queues: dict[str, RunQueue] = {}
        self._holder: dict[str, str] = {}  # dispatch_id → connection_id

    def add(self, slot: WorkerSlot) -> None:
        self.workers[slot.connection_id] = slot

    def remove(self, connection_id: str) -> list[tuple[str, str]]:
        """Forget a worker; returns the (run_id, dispatch_id) pairs it held."""
        slot = self.workers.pop(connection_id, None)
        if slot is None:
            return []
        for dispatch_id in slot.inflight:
            self._holder.pop(dispatch_id, None)
        return [(run_id, did) for did, run_id in slot.inflight.items()]

    def pick(self, workflow_type: str) -> WorkerSlot | None:
        best: WorkerSlot | None = None
        for slot in self.workers.values():
            if workflow_type in slot.types and slot.free > 0:
                if best is None or slot.free > best.free:
                    best = slot
        return best

    def serves(self, workflow_type: str) -> list[WorkerSlot]:
        return [s for s in self.workers.values() if workflow_type in s.types]

    def enqueue(self, workflow_type: str, run_id: str) -> None:
        queue = self._queues.get(workflow_type)
        if queue is None:
            queue = self._queues[workflow_type] = RunQueue()
        queue.append(run_id)

    def queued(self, workflow_type: str) -> RunQueue:
        return self._queues.get(workflow_type) or RunQueue()

    def assign(self, slot: WorkerSlot, dispatch_id: str, run_id: str) -> None:
        slot.inflight[dispatch_id] = run_id
        self._holder[dispatch_id] = slot.connection_id

    def release(self, dispatch_id: str) -> WorkerSlot | None:
        """The step left its worker (ended, failed, stopped); returns that worker, if still here."""
        conn_id = self._holder.pop(dispatch_id, None)
        slot = self.workers.get(conn_id) if conn_id else None
        if slot is not None:
            slot.inflight.pop(dispatch_id, None)
        return slot

    def holder(self, dispatch_id: str) -> WorkerSlot | None:
        conn_id = self._holder.get(dispatch_id)
        return self.workers.get(conn_id) if conn_id else None
