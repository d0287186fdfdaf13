"""The storage seam: the records the engine asks to commit and the reads the server needs.

A backend commits a *unit* (the list of records one decision produced) atomically, and may put
many units in one transaction (group commit). ``grctl_daemon.storage.open_storage(url)`` picks
the backend by URL and imports it only then; nothing above this package knows which it is.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# Runs are spread over this many partitions; each is owned by one daemon of a cluster at a time
# (one daemon alone owns them all). Fixed for a database: a run's partition is stored with it.
PARTITIONS = 64


def partition_of(workflow_id: str) -> int:
    """The partition of a new run that has no parent (a child lives in its parent's)."""
    return zlib.crc32(workflow_id.encode()) % PARTITIONS


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
    worker_losses: int = 0  # the current step's workers lost in a row (SPEC 6, WorkerLost)
    # Which of the cluster's PARTITIONS the run lives in (a daemon owns each): from its
    # workflow_id, or its parent's, so that a parent and its children commit together.
    partition: int = 0
    # Bumped by every save; a save names the version it was decided on and the backend refuses
    # it when the row has moved on (a stale writer), so a unit built on a refused one fails too.
    version: int = 0


# What a run's row keeps from its start: a save leaves these columns alone (fewer columns set,
# fewer indexes touched).
WRITTEN_ONCE = frozenset(
    {
        "run_id",
        "workflow_id",
        "workflow_type",
        "created_ms",
        "input",
        "parent_workflow_id",
        "parent_run_id",
        "completion_event",
        "partition",
    }
)

HISTORY_COLUMNS = ("seq", "ts_ms", "kind", "step_name", "data")
INBOX_COLUMNS = (
    "seq",
    "event_name",
    "payload",
    "arrived_ms",
    "state",
    "step_name",
    "idempotency_key",
)


def as_dicts(columns: tuple[str, ...], rows: Any) -> list[dict[str, Any]]:
    """Rows read in ``columns`` order as the maps the runtime serves (history, inbox)."""
    return [dict(zip(columns, row, strict=True)) for row in rows]


# Ops are values: built once by the engine, read once by the backend, never changed. Plain
# slotted dataclasses, not frozen ones: a frozen one costs ~1 us more to build, and a step builds
# several on the hot path.
@dataclass(slots=True)
class SaveRun:
    """The run's new row, applied only where the stored row is still at ``run.version - 1``.

    ``status_changed`` is False when the save keeps the row's status: a backend may then leave
    the status column, and every index on it, untouched (most steps of a run do not change it).
    """

    run: RunRecord
    status_changed: bool = True


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
    # The sender's key: unique per run (a partial unique index), the last guard against a
    # second send of one event (the runtime checks memory and the database first).
    idempotency_key: str | None = None


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
class DeleteRuns:
    """Ended runs and every row keyed by them (retention, ``grctl prune``).

    Only rows still ended before ``before_ms`` go: a run that is somehow not ended (or ended
    later) stays, so a prune decided on a read that has moved on deletes nothing it should not.
    ``partitions`` are those of the runs (a cluster fences the commit on them).
    """

    run_ids: list[str]
    before_ms: int
    partitions: list[int]


# Every table whose rows belong to one run (by ``run_id``): a pruned run leaves none behind. A
# table added for runs joins this list.
RUN_TABLES = ("store", "history", "inbox", "step_records", "timers")
# The statuses of an ended run: only those are ever pruned.
ENDED_STATUSES = ("completed", "failed", "cancelled", "terminated")


@dataclass(frozen=True)
class EndedRun:
    """What a prune shows of a run it removes (or would)."""

    run_id: str
    workflow_id: str
    workflow_type: str
    status: str
    ended_ms: int
    partition: int


@dataclass(slots=True)
class SaveType:
    workflow_type: str
    definition: dict[str, Any]
    updated_ms: int


@dataclass
class ScheduleRecord:
    """One row of ``schedules``: a durable cron schedule that starts runs of one type.

    It lives in ``partition_of(name)`` and so do the runs it starts: only that partition's
    owner fires it, and a fire (the new run) commits with the schedule's next fire time.
    """

    name: str
    workflow_type: str
    cron: str
    timezone: str
    input: bytes | None
    overlap: str  # "skip" or "allow": what a fire does while the last run is still active
    paused: bool
    next_fire_ms: int
    created_ms: int
    updated_ms: int
    partition: int
    last_fire_ms: int | None = None
    last_workflow_id: str | None = None
    last_run_id: str | None = None
    skips: int = 0  # fires skipped because the last run was still active (overlap "skip")
    last_skip_ms: int | None = None


SCHEDULE_COLUMNS = tuple(f for f in ScheduleRecord.__dataclass_fields__)


@dataclass(slots=True)
class SaveSchedule:
    """The schedule's new row (inserted or replaced)."""

    schedule: ScheduleRecord


@dataclass(slots=True)
class RemoveSchedule:
    """Delete the schedule (the runs it started stay)."""

    schedule: ScheduleRecord


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
    | DeleteRuns
    | SaveSchedule
    | RemoveSchedule
)


class StorageError(Exception):
    """The database cannot be used as it is (a newer schema, say); the message says why."""


class Fenced(StorageError):
    """Another daemon took this database (or its partition) over: this one may not commit."""


class UnitRefused(Exception):
    """One unit of a group commit broke a constraint or was stale; the other units committed."""


class CommitFailed(Exception):
    """The database failed a commit; nothing queued behind it was committed either.

    Those units were decided on top of the failed one's state, so the backend stops taking
    units at all: the daemon stops, and a restart resumes from the last durable state.
    """


@dataclass
class LoadedRun:
    """A run as the database holds it: its row, store, current step records, inbox, timers."""

    run: RunRecord
    store: dict[str, bytes]
    records: list[bytes]
    inbox: list[tuple[int, str, bytes | None]]  # the pending events, in arrival order
    timers: dict[str, tuple[int, str]]


@dataclass(frozen=True)
class DueTimer:
    run_id: str
    kind: str
    due_ms: int
    token: str


@dataclass(frozen=True)
class Member:
    """One daemon of a cluster sharing a database, as the database last showed it."""

    name: str
    host: str
    socket: str | None  # its Unix socket (reachable on its host)
    address: str | None  # its TCP listener, HOST:PORT
    joined_ms: int
    lease_left_ms: int  # negative: it stopped renewing, and is about to be taken over
    partitions: list[int]
    info: dict[str, Any]  # what it publishes of itself (workers, for daemon status)

    def wire(self) -> dict[str, Any]:
        """How workers find it (``protocol.Members``)."""
        return {
            "name": self.name,
            "host": self.host,
            "socket": self.socket,
            "address": self.address,
        }


class Storage(Protocol):
    """What the daemon needs from a backend.

    Ownership: ``open()`` takes the database (SQLite: the file; PostgreSQL: a partition lease)
    under a new ``epoch``; every transaction checks it still holds that epoch and fails with
    ``Fenced`` when another daemon took over. Saves are checked against the run's ``version``
    (a stale one refuses its unit). Sequences (history, inbox) come from the run's row, which
    only its owner writes, so a second writer cannot interleave them.
    """

    # Group-commit counters, for ``daemon status`` and the benchmark.
    batches: int  # transactions committed
    units: int  # units committed
    write_s: float  # time spent writing batches, commit included
    commit_s: float  # of which in the commit itself (the fsync)
    # Told of each committed batch (units, seconds to durable); set by the metrics.
    on_batch: Callable[[int, float], None] | None
    epoch: int  # the ownership epoch this daemon holds
    # Steps handed out early, whose outcome the writer waits a moment for (group_commit.Linger).
    linger: Any
    lost: asyncio.Event  # set when another daemon took the database over: stop at once
    # The partitions of runs this daemon may commit for (a lone daemon: all of them). On a
    # database shared by a cluster they change hands; ``on_ownership`` tells the runtime.
    owned: frozenset[int]
    holder: str  # this daemon's member name

    def on_ownership(
        self,
        gained: Callable[[set[int]], Awaitable[None]],
        releasing: Callable[[set[int]], Awaitable[None]],
    ) -> None:
        """Call ``gained`` after partitions were taken, ``releasing`` before some are handed over
        (once it returns, nothing of them may be committed)."""

    def members(self) -> list[Member]:
        """The cluster's members as last seen (empty for a database only one daemon uses)."""

    def owner_of(self, partition: int) -> Member | None: ...

    async def refresh(self) -> None:
        """Read the cluster's members and partitions again."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def commit(self, ops: list[Op]) -> asyncio.Future[None]:
        """Queue one unit; the future resolves once it is durable, or fails with UnitRefused.

        Units are committed in the order they were queued, possibly many in one transaction.
        After any failure other than one the backend waits out (a full disk), every unit
        queued then and later fails with CommitFailed: none is committed.
        """

    def health(self) -> dict[str, Any]:
        """``writable``, and while it is not: ``error``, ``since_ms``, ``cleared_ms``,
        ``hint`` (what an operator can do), ``waiting_units``."""

    def describe(self) -> dict[str, Any]:
        """What ``daemon status`` shows of the backend (its URL, size, settings)."""

    async def load_types(self) -> dict[str, dict[str, Any]]: ...

    async def load_runs(self, run_ids: list[str]) -> dict[str, LoadedRun]:
        """The given runs that exist, each as one committed state."""

    async def find_run(self, workflow_id: str, run_id: str | None) -> RunRecord | None:
        """The given run, or the workflow_id's newest one."""

    async def ready_runs(
        self, after_run_id: str, limit: int, partitions: frozenset[int] | None = None
    ) -> list[tuple[str, str]]:
        """(run_id, workflow_type) of ``running`` runs, by run_id, after ``after_run_id``."""

    async def due_timers(
        self, from_ms: int, to_ms: int, partitions: frozenset[int] | None = None
    ) -> list[DueTimer]:
        """The stored timers due in [from_ms, to_ms), earliest first."""

    async def read_store(self, run_id: str) -> dict[str, bytes]: ...

    async def read_history(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """History rows with ``seq > after_seq`` in order, at most ``limit`` of them."""
        ...

    async def read_inbox(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Inbox rows with ``seq > after_seq`` in arrival order, at most ``limit`` of them."""
        ...

    async def find_event_key(self, run_id: str, idempotency_key: str) -> int | None:
        """The inbox seq of the run's event sent with this idempotency key, if one was."""
        ...

    async def list_workflows(
        self,
        status: str | None,
        workflow_type: str | None,
        limit: int,
        before: tuple[int, str] | None = None,
    ) -> list[RunRecord]:
        """Runs newest first (``created_ms``, then ``run_id``), those older than ``before``."""
        ...

    async def count_by_status(self) -> dict[str, int]: ...

    async def ended_runs(
        self,
        before_ms: int,
        status: str | None,
        workflow_type: str | None,
        limit: int,
        after: tuple[int, str] | None = None,
        partitions: frozenset[int] | None = None,
    ) -> list[EndedRun]:
        """Runs that ended before ``before_ms``, oldest end first, after ``after`` (ended_ms,
        run_id); by the index on ``ended_ms``."""

    async def count_runs(self, status: str, partitions: list[int] | None = None) -> int:
        """Runs in ``status`` (of ``partitions`` when given), by the status index: cheap for
        the few runs in one status, never a scan of the table (the metrics read it per scrape).
        """
        ...

    async def database_bytes(self) -> int | None:
        """The database's size on disk, None when the backend cannot tell."""
        ...

    async def load_schedules(
        self, partitions: frozenset[int] | None = None
    ) -> list[ScheduleRecord]:
        """Every schedule (of the given partitions), by name."""
        ...

    async def get_schedule(self, name: str) -> ScheduleRecord | None: ...
