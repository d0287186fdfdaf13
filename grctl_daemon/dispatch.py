"""Which worker gets which step: connected workers, their capacity, and the queue of steps.

A step goes to the least-loaded connected worker that serves its workflow type and has room;
when none has, it waits in a FIFO queue per type until a worker frees a slot or connects.

A type with a limit (``Workflow(max_concurrent_runs=N)``) also has a ``TypeLimit``: at most N of
its dispatches are out at once, from dispatch until the step's outcome is committed (or the
step is stopped, or its worker is lost). A run that finds no slot waits in the same FIFO queue,
and a run that becomes ready while others of its type wait goes behind them. Types without a
limit pay one dict lookup per dispatch and one truth test per release.

On PostgreSQL (``shared``: the daemons of a cluster share the limit) a slot is a row of
``type_slots``: the runtime claims rows for the runs waiting here (``spare``, not yet attached
to a dispatch) and each dispatch takes one; when it is over, the row goes back
(``on_slot_back``), so N counts across every member.
"""

from __future__ import annotations

import time
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
    limits: dict[str, int] = field(default_factory=dict)  # type → max_concurrent_runs declared

    @property
    def free(self) -> int:
        return self.capacity - len(self.inflight) - self.reserved


@dataclass
class TypeLimit:
    """The slots of a type with ``max_concurrent_runs``: which dispatches hold one now."""

    workflow_type: str
    limit: int | None  # the smallest any connected worker declares; None once none does
    holders: set[str] = field(default_factory=set)  # dispatch_ids holding a slot
    reserved: int = 0  # runs taken from the queue, being read back to be dispatched
    shared: bool = False  # slots are rows of type_slots, claimed from the database
    spare: list[int] = field(default_factory=list)  # shared: rows claimed, not yet dispatched
    slot_of: dict[str, int] = field(default_factory=dict)  # shared: dispatch_id → its row

    @property
    def free(self) -> int:
        if self.limit is None:
            return 1 << 30
        if self.shared:
            return min(len(self.spare), self.limit - len(self.holders)) - self.reserved
        return self.limit - len(self.holders) - self.reserved


class RunQueue:
    """Runs waiting for a worker, first in first out, each at most once (O(1) both ways).

    Each run keeps when it was queued (monotonic seconds), so the metrics can tell how long
    the oldest has waited for a worker.
    """

    def __init__(self) -> None:
        self._runs: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def append(self, run_id: str) -> None:
        if run_id not in self._runs:
            self._runs[run_id] = time.monotonic()

    def oldest(self) -> float | None:
        """When the run at the head was queued (``time.monotonic()``), None when empty."""
        return next(iter(self._runs.values()), None)

    def position(self, run_id: str) -> int | None:
        """How many runs wait ahead of ``run_id`` (O(n): for describe, not dispatch)."""
        for i, queued in enumerate(self._runs):
            if queued == run_id:
                return i
        return None

    def popleft(self) -> str:
        run_id = next(iter(self._runs))
        del self._runs[run_id]
        return run_id


class Dispatcher:
    """Tracks workers and queued steps; decides, the runtime sends."""

    def __init__(self, shared_limits: bool = False) -> None:
        self.shared_limits = shared_limits
        self.workers: dict[str, WorkerSlot] = {}
        self._queues: dict[str, RunQueue] = {}
        self._holder: dict[str, str] = {}  # dispatch_id → connection_id
        self.limits: dict[str, TypeLimit] = {}  # only types some worker declared a limit for
        self._limited: dict[str, TypeLimit] = {}  # dispatch_id → the limit it holds a slot of
        # Told the type whose slot came free (the runtime then serves its queue).
        self.on_type_free: Callable[[str], None] = lambda workflow_type: None
        # Told a shared slot (a row of type_slots) that is no longer needed.
        self.on_slot_back: Callable[[str, int], None] = lambda workflow_type, row: None

    def add(self, slot: WorkerSlot) -> None:
        self.workers[slot.connection_id] = slot
        if slot.limits:
            self._relimit(slot.limits)

    def remove(self, connection_id: str) -> list[tuple[str, str]]:
        """Forget a worker; returns the (run_id, dispatch_id) pairs it held."""
        slot = self.workers.pop(connection_id, None)
        if slot is None:
            return []
        for dispatch_id in slot.inflight:
            self._holder.pop(dispatch_id, None)
            if self._limited:
                self.release_type(dispatch_id)
        if slot.limits:
            self._relimit(slot.limits)
        return [(run_id, did) for did, run_id in slot.inflight.items()]

    def declared_limit(self, workflow_type: str) -> int | None:
        """The smallest ``max_concurrent_runs`` a connected worker declares for the type."""
        declared = [
            s.limits[workflow_type] for s in self.workers.values() if workflow_type in s.limits
        ]
        return min(declared) if declared else None

    def _relimit(self, types: dict[str, int]) -> None:
        for workflow_type in types:
            limit = self.declared_limit(workflow_type)
            lim = self.limits.get(workflow_type)
            if lim is None:
                self.limits[workflow_type] = TypeLimit(
                    workflow_type, limit, shared=self.shared_limits
                )
                continue
            raised = lim.limit is not None and (limit is None or limit > lim.limit)
            lim.limit = limit
            if raised:
                self.on_type_free(workflow_type)

    def admits(self, workflow_type: str, from_queue: bool) -> bool:
        """May this run of a limited type be dispatched now (a slot free, nobody ahead)?"""
        lim = self.limits[workflow_type]
        if lim.free <= 0:
            return False
        if from_queue:
            return True
        return not self._queues.get(workflow_type)  # others wait: this one goes behind them

    def pick(self, workflow_type: str) -> WorkerSlot | None:
        best: WorkerSlot | None = None
        for slot in self.workers.values():
            if workflow_type in slot.types and slot.free > 0:
                if best is None or slot.free > best.free:
                    best = slot
        return best

    def serves(self, workflow_type: str) -> list[WorkerSlot]:
        return [s for s in self.workers.values() if workflow_type in s.types]

    def served(self, workflow_type: str) -> bool:
        """Whether any connected worker serves this type (in a cluster every worker registers
        with every member, so this daemon's workers are the cluster's)."""
        return any(workflow_type in s.types for s in self.workers.values())

    def enqueue(self, workflow_type: str, run_id: str) -> None:
        queue = self._queues.get(workflow_type)
        if queue is None:
            queue = self._queues[workflow_type] = RunQueue()
        queue.append(run_id)

    def queued(self, workflow_type: str) -> RunQueue:
        return self._queues.get(workflow_type) or RunQueue()

    def queues(self) -> dict[str, RunQueue]:
        """Every type's queue of runs ready for a worker (read by the metrics)."""
        return self._queues

    def assign(
        self, slot: WorkerSlot, dispatch_id: str, run_id: str, lim: TypeLimit | None = None
    ) -> None:
        slot.inflight[dispatch_id] = run_id
        self._holder[dispatch_id] = slot.connection_id
        if lim is not None:
            lim.holders.add(dispatch_id)
            self._limited[dispatch_id] = lim
            if lim.spare:
                lim.slot_of[dispatch_id] = lim.spare.pop(0)

    def release(self, dispatch_id: str, hold_type_slot: bool = False) -> WorkerSlot | None:
        """The step left its worker (ended, failed, stopped); returns that worker, if still here.

        ``hold_type_slot``: the step's outcome is being committed; its type's slot (if any) is
        freed by ``release_type`` once that commit is over.
        """
        conn_id = self._holder.pop(dispatch_id, None)
        slot = self.workers.get(conn_id) if conn_id else None
        if slot is not None:
            slot.inflight.pop(dispatch_id, None)
        if self._limited and not hold_type_slot:
            self.release_type(dispatch_id)
        return slot

    def holder_of(self, dispatch_id: str) -> WorkerSlot | None:
        """The worker holding this dispatch, if it is still here."""
        conn_id = self._holder.get(dispatch_id)
        return None if conn_id is None else self.workers.get(conn_id)

    def holds_type_slot(self, dispatch_id: str) -> bool:
        return bool(self._limited) and dispatch_id in self._limited

    def release_type(self, dispatch_id: str) -> None:
        lim = self._limited.pop(dispatch_id, None)
        if lim is not None:
            lim.holders.discard(dispatch_id)
            if lim.shared:
                row = lim.slot_of.pop(dispatch_id, None)
                if row is not None:
                    self.on_slot_back(lim.workflow_type, row)
            self.on_type_free(lim.workflow_type)

    def holder(self, dispatch_id: str) -> WorkerSlot | None:
        conn_id = self._holder.get(dispatch_id)
        return self.workers.get(conn_id) if conn_id else None
