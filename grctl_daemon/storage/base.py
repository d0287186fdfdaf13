"""The storage seam: the records the engine asks to commit and the reads the server needs.

A backend commits a *unit* (the list of records one decision produced) atomically, and may put
many units in one transaction (group commit). SQLite is the one backend today; a PostgreSQL one
implements the same ``Storage`` protocol without touching the engine.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class RunRecord:
    """One row of ``runs``: the durable part of a run's state."""

    run_id: str
    workflow_id: str
    workflow_type: str
    status: str
    created_ms: int
    updated_ms: int
    input: bytes | None = None
    result: bytes | None = None
    error: dict[str, Any] | None = None
    reason: str | None = None
    step_name: str | None = None
    handler_kind: str | None = None
    step_args: bytes | None = None
    attempt: int = 0
    failures: int = 0
    step_seq: int = 0
    wait_timeout_step: str | None = None
    cancel_requested: bool = False
    parent_workflow_id: str | None = None
    parent_run_id: str | None = None
    completion_event: str | None = None  # the parent's event that gets this run's outcome
    history_seq: int = 0
    inbox_seq: int = 0
    ended_ms: int | None = None


# Ops are values: built once by the engine, read once by the backend, never changed. Plain
# slotted dataclasses, not frozen ones: a frozen one costs ~1 us more to build, and a step builds
# several on the hot path.
@dataclass(slots=True)
class SaveRun:
    run: RunRecord


@dataclass(slots=True)
class InsertRun:
    """A new run; refused by the database when the workflow_id already has an active run."""

    run: RunRecord


@dataclass(slots=True)
class PutStore:
    run_id: str
    writes: dict[str, bytes]


@dataclass(slots=True)
class AppendHistory:
    run_id: str
    seq: int
    ts_ms: int
    kind: str
    step_name: str | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class AddInbox:
    run_id: str
    seq: int
    event_name: str
    payload: bytes | None
    arrived_ms: int


@dataclass(slots=True)
class MarkInbox:
    run_id: str
    seq: int
    state: str
    step_name: str | None


@dataclass(slots=True)
class AddRecord:
    run_id: str
    step_seq: int
    n: int
    record: bytes


@dataclass(slots=True)
class ClearRecords:
    run_id: str


@dataclass(slots=True)
class SetTimer:
    run_id: str
    kind: str
    due_ms: int
    token: str


@dataclass(slots=True)
class ClearTimer:
    run_id: str
    kind: str | None  # None clears every timer of the run


@dataclass(slots=True)
class SaveType:
    workflow_type: str
    definition: dict[str, Any]
    updated_ms: int


Op = (
    SaveRun
    | InsertRun
    | PutStore
    | AppendHistory
    | AddInbox
    | MarkInbox
    | AddRecord
    | ClearRecords
    | SetTimer
    | ClearTimer
    | SaveType
)


class StorageError(Exception):
    """The database cannot be used as it is (a newer schema, say); the message says why."""


class UnitRefused(Exception):
    """One unit of a group commit broke a constraint; the other units committed."""


@dataclass
class ActiveRun:
    """What recovery loads for each active run."""

    run: RunRecord
    store: dict[str, bytes]
    records: list[bytes]
    inbox: list[tuple[int, str, bytes | None]]
    timers: dict[str, tuple[int, str]]


class Storage(Protocol):
    """What the daemon needs from a backend."""

    # Group-commit counters, for ``daemon status`` and the benchmark.
    batches: int  # transactions committed
    units: int  # units committed
    write_s: float  # time spent writing batches, commit included
    commit_s: float  # of which in the commit itself (the fsync)
    # Why the backend cannot write now (a full disk), since when, and when that last ended.
    fault: str | None
    fault_since_ms: int | None
    fault_cleared_ms: int | None

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def commit(self, ops: list[Op]) -> asyncio.Future[None]:
        """Queue one unit; the future resolves once it is durable, or fails with UnitRefused.

        Units are committed in the order they were queued, possibly many in one transaction.
        """

    def health(self) -> dict[str, Any]: ...

    async def load_types(self) -> dict[str, dict[str, Any]]: ...

    async def load_active(self) -> list[ActiveRun]: ...

    async def find_run(self, workflow_id: str, run_id: str | None) -> RunRecord | None: ...

    async def read_store(self, run_id: str) -> dict[str, bytes]: ...

    async def read_history(self, run_id: str, after_seq: int) -> list[dict[str, Any]]: ...

    async def read_inbox(self, run_id: str) -> list[dict[str, Any]]: ...

    async def list_runs(
        self, status: str | None, workflow_type: str | None, limit: int
    ) -> list[RunRecord]: ...

    async def count_by_status(self) -> dict[str, int]: ...
