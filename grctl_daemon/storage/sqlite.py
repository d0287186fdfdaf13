"""The SQLite backend: group commit on the event loop, one aiosqlite reader.

Theory of operation
-------------------
Only the daemon opens the database. Writes go through ``commit(ops)``: each call is a *unit*
(everything one decision produced) and its future resolves once the unit is durable. The
writer takes every unit that is queued and runs them in one ``BEGIN IMMEDIATE … COMMIT``
transaction, then resolves all their futures (group commit: throughput is not bound by one
fsync per step). Units are almost never refused, so the batch is written without a savepoint
per unit, one ``executemany`` per statement; when one is refused (a second active run for a
workflow_id) the batch is redone with a SAVEPOINT per unit, so that unit alone rolls back.

Why the commit runs on the event loop's own thread, with a plain ``sqlite3`` connection: a
thread would cost two hand-offs per commit (there and back), which measured as much as the
commit itself on the single-run latency path, and its Python half would fight the loop for
the GIL. While a transaction is being fsynced the loop is blocked, so the frames that arrive
meanwhile wait in their sockets and make the next batch; that fsync (about 0.2-0.3 ms here) is
short next to the work of the steps it commits. Reads (history, list, describe) use an
aiosqlite connection on its own thread, which WAL lets run alongside the writer.

Durability: ``synchronous=FULL`` by default (a commit survives power loss); ``NORMAL`` may lose
the last transactions on power loss, never on a process crash.

A full disk (SQLITE_FULL) is waited out, not failed: the transaction rolls back whole and the
writer tries the same batch again, after 0.05 s doubling to every 0.5 s, until it commits. The
units keep their order and their futures stay pending, so nothing is acknowledged or dispatched
that is not durable, and the runtime's in-memory state (which already holds those units'
decisions) becomes true as soon as space returns. Meanwhile ``fault`` says what is wrong (the
runtime refuses new work, ``daemon status`` shows it) and the retry is the probe that notices
recovery (a step's timeout does not count that time: ``Runtime._held_by_storage``). Only
``close()`` gives up, after ``CLOSE_GRACE_S``: the units still waiting were never
acknowledged, so dropping them with the process is a crash, which recovery handles. Any other
database error still fails the batch (and stops the daemon).
"""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import sqlite3
import time
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import msgpack

from grctl import _faults as faults
from grctl_daemon.storage import base as rec

SCHEMA_VERSION = 4
# version → the statements that bring a database at version-1 to it. schema.sql always holds the
# latest schema for a new database; append here, never edit a released step.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE runs ADD COLUMN completion_event TEXT",),
    3: (
        "ALTER TABLE runs ADD COLUMN worker_losses INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN version INTEGER NOT NULL DEFAULT 0",
        "CREATE TABLE owner (id INTEGER PRIMARY KEY CHECK (id = 1), epoch INTEGER NOT NULL)",
        "CREATE INDEX timers_by_due ON timers (due_ms)",
        "CREATE INDEX runs_running ON runs (run_id) WHERE status = 'running'",
    ),
    # Listings are paged newest first, filtered by status or type: no sort of a whole table.
    4: (
        "DROP INDEX runs_by_status",
        "CREATE INDEX runs_by_status ON runs (status, created_ms)",
        "CREATE INDEX runs_by_type ON runs (workflow_type, created_ms)",
    ),
}

_RUN_COLUMNS = (
    "run_id",
    "workflow_id",
    "workflow_type",
    "status",
    "created_ms",
    "updated_ms",
    "ended_ms",
    "input",
    "result",
    "error",
    "reason",
    "step_name",
    "handler_kind",
    "step_args",
    "attempt",
    "failures",
    "step_seq",
    "wait_timeout_step",
    "cancel_requested",
    "parent_workflow_id",
    "parent_run_id",
    "completion_event",
    "history_seq",
    "inbox_seq",
    "worker_losses",
    "version",
)
_INSERT_RUN = (
    f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(_RUN_COLUMNS))})"
)
# What a step can change; the rest of a run's row is written once, when it starts (fewer
# columns set, fewer indexes touched).
_WRITTEN_ONCE = frozenset(
    {
        "run_id",
        "workflow_id",
        "workflow_type",
        "created_ms",
        "input",
        "parent_workflow_id",
        "parent_run_id",
        "completion_event",
    }
)
_MUTABLE_RUN_COLUMNS = tuple(c for c in _RUN_COLUMNS if c not in _WRITTEN_ONCE)
# A save applies only to the row it was decided on: a stale one changes no row (and is refused).
_UPDATE_RUN = (
    f"UPDATE runs SET {', '.join(f'{c} = ?' for c in _MUTABLE_RUN_COLUMNS)} "
    "WHERE run_id = ? AND version = ?"
)
_mutable_values = operator.attrgetter(*_MUTABLE_RUN_COLUMNS)
_ERROR_AT = _MUTABLE_RUN_COLUMNS.index("error")
_CANCEL_AT = _MUTABLE_RUN_COLUMNS.index("cancel_requested")
_SELECT_RUN = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"

MAX_BATCH_UNITS = 1000
MAX_LOAD_BATCH = 500  # runs read back in one go (SQLite allows 32,766 parameters)
FULL_RETRY_INITIAL_S = 0.05
FULL_RETRY_MAX_S = 0.5
CLOSE_GRACE_S = 2.0  # how long a stopping daemon still waits for space before dropping units

# Tests where no small filesystem can be mounted: while the file this names exists, every
# commit fails as a full disk makes it fail. Read once; off (None) costs one comparison.
_FAULT_FILE = os.environ.get("GRCTL_FAULT_DISK_FULL") or None
FULL_HINT = "Free space on that disk"

log = logging.getLogger("grctl.daemon.storage")


def _disk_full(exc: BaseException) -> bool:
    return (
        isinstance(exc, sqlite3.OperationalError)
        and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    )


def _injected_fault() -> None:
    if os.path.exists(_FAULT_FILE):  # type: ignore[arg-type]
        exc = sqlite3.OperationalError("database or disk is full")
        exc.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
        raise exc


def _pack(value: Any) -> bytes | None:
    return None if value is None else msgpack.packb(value, use_bin_type=True)


def _unpack(data: bytes | None) -> Any:
    return None if data is None else msgpack.unpackb(data, raw=False, strict_map_key=False)


def _run_params(run: rec.RunRecord) -> list[Any]:
    values = []
    for col in _RUN_COLUMNS:
        v = getattr(run, col)
        if col == "error":
            v = _pack(v)
        elif col == "cancel_requested":
            v = int(v)
        values.append(v)
    return values


def _save_params(r: rec.RunRecord, expect_version: int) -> list[Any]:
    values = list(_mutable_values(r))
    values[_ERROR_AT] = _pack(values[_ERROR_AT])
    values[_CANCEL_AT] = int(values[_CANCEL_AT])
    values.append(r.run_id)
    values.append(expect_version)
    return values


class _Stale(sqlite3.IntegrityError):
    """A save found its run's row at another version than the one it was decided on."""


def _run_from_row(row: Any) -> rec.RunRecord:
    data = dict(zip(_RUN_COLUMNS, row, strict=True))
    data["error"] = _unpack(data["error"])
    data["cancel_requested"] = bool(data["cancel_requested"])
    return rec.RunRecord(**data)


_INSERT_HISTORY = (
    "INSERT INTO history (run_id, seq, ts_ms, kind, step_name, data) VALUES (?, ?, ?, ?, ?, ?)"
)
_UPSERT_STORE = (
    "INSERT INTO store (run_id, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value"
)


def _apply_batch(cur: sqlite3.Cursor, units: list[list[rec.Op]]) -> None:
    """Every op of a batch, with one ``executemany`` per statement on the hot tables.

    Tables have no triggers or foreign keys, so ops on different tables commute; ops on one
    table keep their order. A run saved twice in a batch (its step ended, its next step was
    dispatched) is written once, with its last state, checked against the version its first
    save was decided on. New runs go in before any save; should that trip the one-active-run
    index (a run ended and its workflow_id started again in the same batch), or a save find
    its row moved on, the IntegrityError sends the caller to the ordered, unit-by-unit path.
    """
    inserts: list[rec.RunRecord] = []
    saves: dict[str, tuple[rec.RunRecord, int]] = {}
    history: list[tuple[Any, ...]] = []
    store: list[tuple[str, str, bytes]] = []
    rest: list[rec.Op] = []
    for ops in units:
        for op in ops:
            kind = type(op)
            if kind is rec.AppendHistory:
                history.append((op.run_id, op.seq, op.ts_ms, op.kind, op.step_name, _pack(op.data)))
            elif kind is rec.SaveRun:
                first = saves.get(op.run.run_id)
                saves[op.run.run_id] = (op.run, op.run.version - 1 if first is None else first[1])
            elif kind is rec.PutStore:
                store.extend((op.run_id, k, v) for k, v in op.writes.items())
            elif kind is rec.InsertRun:
                inserts.append(op.run)
            else:
                rest.append(op)
    if inserts:
        cur.executemany(_INSERT_RUN, [_run_params(r) for r in inserts])
    if saves:
        cur.executemany(_UPDATE_RUN, [_save_params(r, v) for r, v in saves.values()])
        if cur.rowcount != len(saves):
            raise _Stale(f"{len(saves) - cur.rowcount} run save(s) decided on a stale state")
    if history:
        cur.executemany(_INSERT_HISTORY, history)
    if store:
        cur.executemany(_UPSERT_STORE, store)
    for op in rest:
        _apply(cur, op)


def _apply(cur: sqlite3.Cursor, op: rec.Op) -> None:
    match op:
        case rec.SaveRun(run):
            cur.execute(_UPDATE_RUN, _save_params(run, run.version - 1))
            if cur.rowcount != 1:
                raise _Stale(
                    f"run {run.run_id} is not at version {run.version - 1}: the save was decided "
                    "on a state that was never committed"
                )
        case rec.InsertRun(run):
            cur.execute(_INSERT_RUN, _run_params(run))
        case rec.PutStore(run_id, writes):
            cur.executemany(_UPSERT_STORE, [(run_id, k, v) for k, v in writes.items()])
        case rec.AppendHistory(run_id, seq, ts_ms, kind, step_name, data):
            cur.execute(_INSERT_HISTORY, (run_id, seq, ts_ms, kind, step_name, _pack(data)))
        case rec.AddInbox(run_id, seq, event_name, payload, arrived_ms):
            cur.execute(
                "INSERT INTO inbox (run_id, seq, event_name, payload, arrived_ms, state) "
                "VALUES (?, ?, ?, ?, ?, 'pending')",
                (run_id, seq, event_name, payload, arrived_ms),
            )
        case rec.MarkInbox(run_id, seq, state, step_name):
            cur.execute(
                "UPDATE inbox SET state = ?, step_name = ? WHERE run_id = ? AND seq = ?",
                (state, step_name, run_id, seq),
            )
        case rec.AddRecord(run_id, step_seq, n, record):
            cur.execute(
                "INSERT INTO step_records (run_id, step_seq, n, record) VALUES (?, ?, ?, ?)",
                (run_id, step_seq, n, record),
            )
        case rec.ClearRecords(run_id):
            cur.execute("DELETE FROM step_records WHERE run_id = ?", (run_id,))
        case rec.SetTimer(run_id, kind, due_ms, token):
            cur.execute(
                "INSERT INTO timers (run_id, kind, due_ms, token) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (run_id, kind) DO UPDATE SET due_ms = excluded.due_ms, "
                "token = excluded.token",
                (run_id, kind, due_ms, token),
            )
        case rec.ClearTimer(run_id, None):
            cur.execute("DELETE FROM timers WHERE run_id = ?", (run_id,))
        case rec.ClearTimer(run_id, kind):
            cur.execute("DELETE FROM timers WHERE run_id = ? AND kind = ?", (run_id, kind))
        case rec.SaveType(workflow_type, definition, updated_ms):
            cur.execute(
                "INSERT INTO workflow_types (workflow_type, definition, updated_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (workflow_type) DO UPDATE SET definition = excluded.definition, "
                "updated_ms = excluded.updated_ms",
                (workflow_type, _pack(definition), updated_ms),
            )
        case _:
            raise TypeError(f"unknown storage op {op!r}")


class SqliteStorage:
    """Storage on one SQLite file in WAL mode."""

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._wconn: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[tuple[list[rec.Op], asyncio.Future[None]] | None] = (
            asyncio.Queue()
        )
        self._writer_task: asyncio.Task[None] | None = None
        self.batches = 0
        self.units = 0
        self.write_s = 0.0  # time spent writing batches (COMMIT included)
        self.commit_s = 0.0  # of which in COMMIT itself: the fsync
        # Set while commits fail for want of space: the error, since when, how many units wait.
        self.fault: str | None = None
        self.fault_since_ms: int | None = None
        self.fault_cleared_ms: int | None = None  # when commits last went through again
        self._waiting = 0
        self._close_deadline: float | None = None
        self._load_lock = asyncio.Lock()
        self.epoch = 0
        self.failed: rec.CommitFailed | None = None  # set once a commit failed: no more commits

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        self._open_writer()  # start-up: migrations run here, before anything is served
        self._reader = await aiosqlite.connect(str(self.path))
        await self._reader.execute("PRAGMA query_only = ON")
        self._writer_task = asyncio.create_task(self._write_loop(), name="grctl-group-commit")

    def _open_writer(self) -> None:
        fresh = not self.path.exists()
        conn = sqlite3.connect(str(self.path), isolation_level=None)
        if fresh:
            os.chmod(self.path, 0o600)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA busy_timeout = 5000")
        self._migrate(conn)
        self.epoch = self._take_ownership(conn)
        self._wconn = conn

    @staticmethod
    def _take_ownership(conn: sqlite3.Connection) -> int:
        """A new epoch: a daemon still writing under the old one is fenced from now on.

        One daemon per home is already enforced by a lock file, but two homes can name one
        database file (``--db``); the epoch makes the newer daemon the only one that commits.
        """
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR IGNORE INTO owner (id, epoch) VALUES (1, 0)")
        conn.execute("UPDATE owner SET epoch = epoch + 1 WHERE id = 1")
        (epoch,) = conn.execute("SELECT epoch FROM owner WHERE id = 1").fetchone()
        conn.execute("COMMIT")
        return int(epoch)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            has_table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            version = 0
            if has_table:
                row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                version = row[0] or 0
            if version > SCHEMA_VERSION:
                raise rec.StorageError(
                    f"database {self.path} has schema version {version}, newer than this grctl "
                    f"({SCHEMA_VERSION}); upgrade grctl or point GRCTL_DB elsewhere"
                )
            if version == 0:
                schema = resources.files("grctl_daemon.storage").joinpath("schema.sql").read_text()
                lines = [ln for ln in schema.splitlines() if not ln.lstrip().startswith("--")]
                for statement in "\n".join(lines).split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                version = SCHEMA_VERSION
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Finish every queued commit (waiting at most ``CLOSE_GRACE_S`` for space), then close."""
        self._close_deadline = time.monotonic() + CLOSE_GRACE_S
        if self._writer_task is not None:
            await self._queue.put(None)
            await self._writer_task
            self._writer_task = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._wconn is not None:
            conn, self._wconn = self._wconn, None
            conn.close()

    # -- writes ---------------------------------------------------------------------------------

    def commit(self, ops: list[rec.Op]) -> asyncio.Future[None]:
        """Queue one unit; the future resolves when it is durable (or fails with UnitRefused)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failed is not None:
            fut.set_exception(self.failed)
        else:
            self._queue.put_nowait((ops, fut))
        return fut

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is None:
                break
            batch = [item]
            while not self._queue.empty() and len(batch) < MAX_BATCH_UNITS:
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            try:
                outcomes = await self._write_until_done([ops for ops, _ in batch])
            except Exception as exc:
                # The database itself failed. Every unit queued behind this batch was decided
                # on its state, so none may be committed: fail them all and take no more.
                self.failed = rec.CommitFailed(f"{type(exc).__name__}: {exc}")
                self.failed.__cause__ = exc
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(self.failed)
                dropped = self._drop_queue(self.failed)
                log.critical(
                    "commit to %s failed (%s); %d unit(s) of that batch and %d queued behind it "
                    "were not committed",
                    self.path,
                    self.failed,
                    len(batch),
                    dropped,
                )
                break
            if outcomes is None:
                # Stopping on a full disk. The units behind build on these: all are dropped,
                # their futures cancelled (never acknowledged, nothing to answer).
                for _, fut in batch:
                    fut.cancel()
                log.error(
                    "stopping with %d unit(s) not committed (%s); they were never "
                    "acknowledged and the next start recovers from what is durable",
                    len(batch) + self._drop_queue(),
                    self.fault,
                )
                break
            self.batches += 1
            self.units += len(batch)
            for (_, fut), outcome in zip(batch, outcomes, strict=True):
                if fut.done():
                    continue
                if outcome is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(outcome)

    async def _write_until_done(self, units: list[list[rec.Op]]) -> list[Exception | None] | None:
        """Write one batch; on a full disk roll back and try again until it fits (see top).

        Returns None when the daemon is stopping and the disk stayed full past CLOSE_GRACE_S.
        """
        delay = FULL_RETRY_INITIAL_S
        self._waiting = len(units)
        while True:
            try:
                outcomes = self._write_batch(units)
            except sqlite3.OperationalError as exc:
                if not _disk_full(exc):
                    raise
                if self.fault is None:
                    self.fault = str(exc)
                    self.fault_since_ms = int(time.time() * 1000)
                    log.error(
                        "cannot write the database %s: %s; new starts, events, cancels and "
                        "terminates are refused and %d pending commit(s) wait; free space on its "
                        "disk and the daemon resumes by itself (retrying every %gs)",
                        self.path,
                        exc,
                        self._waiting + self._queue.qsize(),
                        FULL_RETRY_MAX_S,
                    )
                if self._close_deadline is not None and time.monotonic() > self._close_deadline:
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, FULL_RETRY_MAX_S)
                continue
            if self.fault is not None:
                waited = time.time() - (self.fault_since_ms or 0) / 1000
                log.info(
                    "the database %s is writable again after %.1fs; the waiting commits are "
                    "durable and new work is accepted",
                    self.path,
                    waited,
                )
                self.fault = self.fault_since_ms = None
                self.fault_cleared_ms = int(time.time() * 1000)
            self._waiting = 0
            return outcomes

    def _drop_queue(self, exc: BaseException | None = None) -> int:
        dropped = 0
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                if exc is None:
                    item[1].cancel()
                else:
                    item[1].set_exception(exc)
                dropped += 1
        return dropped

    def health(self) -> dict[str, Any]:
        """Whether commits succeed; while they do not, why, since when and how many wait."""
        return {
            "writable": self.fault is None and self.failed is None,
            "error": self.fault or (str(self.failed) if self.failed else None),
            "since_ms": self.fault_since_ms,
            "cleared_ms": self.fault_cleared_ms,
            "hint": FULL_HINT,
            "database": str(self.path),
            "waiting_units": self._waiting + self._queue.qsize() if self.fault else 0,
        }

    def describe(self) -> dict[str, Any]:
        size = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                size += os.path.getsize(f"{self.path}{suffix}")
            except OSError:
                pass
        return {
            "backend": "sqlite",
            "database": str(self.path),
            "database_bytes": size,
            "synchronous": self.synchronous,
            "epoch": self.epoch,
        }

    def _write_batch(self, units: list[list[rec.Op]]) -> list[Exception | None]:
        conn = self._wconn
        assert conn is not None
        outcomes: list[Exception | None] = []
        started = time.perf_counter()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            (epoch,) = cur.execute("SELECT epoch FROM owner WHERE id = 1").fetchone()
            if epoch != self.epoch:
                raise rec.Fenced(
                    f"another daemon opened {self.path} (epoch {epoch}, ours {self.epoch}); "
                    "this one may no longer write it"
                )
            if faults.FAIL_ARMED and faults.fail_due("commit"):
                raise sqlite3.OperationalError("disk I/O error (injected by GRCTL_FAIL_AT)")
            try:
                # Optimistic: units are almost never refused, so no savepoint per unit...
                _apply_batch(cur, units)
                outcomes = [None] * len(units)
            except sqlite3.IntegrityError:
                # ...and when one is (a second run of a workflow_id), redo the batch with one
                # savepoint per unit so that only that unit is refused.
                cur.execute("ROLLBACK")
                cur.execute("BEGIN IMMEDIATE")
                outcomes = [self._write_unit(cur, ops) for ops in units]
            if faults.ARMED:
                faults.hit("before_commit")
            if _FAULT_FILE is not None:
                _injected_fault()
            committing = time.perf_counter()
            cur.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                cur.execute("ROLLBACK")
            raise
        done = time.perf_counter()
        self.write_s += done - started
        self.commit_s += done - committing
        if faults.ARMED:
            faults.hit("after_commit")
        return outcomes

    @staticmethod
    def _write_unit(cur: sqlite3.Cursor, ops: list[rec.Op]) -> Exception | None:
        cur.execute("SAVEPOINT unit")
        try:
            for op in ops:
                _apply(cur, op)
        except sqlite3.IntegrityError as exc:
            cur.execute("ROLLBACK TO unit")
            return rec.UnitRefused(str(exc))
        finally:
            cur.execute("RELEASE unit")
        return None

    # -- reads ----------------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        assert self._reader is not None
        async with self._reader.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def load_types(self) -> dict[str, dict[str, Any]]:
        rows = await self._fetch("SELECT workflow_type, definition FROM workflow_types")
        return {name: _unpack(blob) for name, blob in rows}

    async def load_runs(self, run_ids: list[str]) -> dict[str, rec.LoadedRun]:
        """The given runs with their parts: five queries for the lot, not five per run."""
        found: dict[str, rec.LoadedRun] = {}
        for start in range(0, len(run_ids), MAX_LOAD_BATCH):
            chunk = run_ids[start : start + MAX_LOAD_BATCH]
            async with self._load_lock:  # one read transaction: one committed state
                found.update(await self._load_chunk(chunk))
        return found

    async def _load_chunk(self, run_ids: list[str]) -> dict[str, rec.LoadedRun]:
        assert self._reader is not None
        marks = ", ".join("?" * len(run_ids))
        ids = tuple(run_ids)
        await self._reader.execute("BEGIN")
        try:
            runs = {
                run.run_id: run
                for run in map(
                    _run_from_row,
                    await self._fetch(f"{_SELECT_RUN} WHERE run_id IN ({marks})", ids),
                )
            }
            if not runs:
                return {}
            loaded = {rid: rec.LoadedRun(run, {}, [], [], {}) for rid, run in runs.items()}
            for rid, key, value in await self._fetch(
                f"SELECT run_id, key, value FROM store WHERE run_id IN ({marks})", ids
            ):
                loaded[rid].store[key] = value
            for rid, step_seq, record in await self._fetch(
                "SELECT run_id, step_seq, record FROM step_records "
                f"WHERE run_id IN ({marks}) ORDER BY run_id, step_seq, n",
                ids,
            ):
                if step_seq == runs[rid].step_seq:
                    loaded[rid].records.append(record)
            for rid, seq, name, payload in await self._fetch(
                "SELECT run_id, seq, event_name, payload FROM inbox "
                f"WHERE run_id IN ({marks}) AND state = 'pending' ORDER BY run_id, seq",
                ids,
            ):
                loaded[rid].inbox.append((seq, name, payload))
            for rid, kind, due, token in await self._fetch(
                f"SELECT run_id, kind, due_ms, token FROM timers WHERE run_id IN ({marks})", ids
            ):
                loaded[rid].timers[kind] = (due, token)
        finally:
            await self._reader.execute("COMMIT")
        return loaded

    async def ready_runs(self, after_run_id: str, limit: int) -> list[tuple[str, str]]:
        return [
            (run_id, wtype)
            for run_id, wtype in await self._fetch(
                "SELECT run_id, workflow_type FROM runs WHERE status = 'running' AND run_id > ? "
                "ORDER BY run_id LIMIT ?",
                (after_run_id, limit),
            )
        ]

    async def due_timers(self, from_ms: int, to_ms: int) -> list[rec.DueTimer]:
        return [
            rec.DueTimer(*row)
            for row in await self._fetch(
                "SELECT run_id, kind, due_ms, token FROM timers WHERE due_ms >= ? AND due_ms < ? "
                "ORDER BY due_ms",
                (from_ms, to_ms),
            )
        ]

    async def find_run(self, workflow_id: str, run_id: str | None) -> rec.RunRecord | None:
        if run_id:
            rows = await self._fetch(
                f"{_SELECT_RUN} WHERE run_id = ? AND workflow_id = ?", (run_id, workflow_id)
            )
        else:
            rows = await self._fetch(
                f"{_SELECT_RUN} WHERE workflow_id = ? ORDER BY created_ms DESC, run_id DESC LIMIT 1",
                (workflow_id,),
            )
        return _run_from_row(rows[0]) if rows else None

    async def read_store(self, run_id: str) -> dict[str, bytes]:
        return dict(await self._fetch("SELECT key, value FROM store WHERE run_id = ?", (run_id,)))

    async def read_history(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT seq, ts_ms, kind, step_name, data FROM history WHERE run_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (run_id, after_seq, -1 if limit is None else limit),
        )
        return [
            {"seq": seq, "ts_ms": ts, "kind": kind, "step_name": step, "data": _unpack(data) or {}}
            for seq, ts, kind, step, data in rows
        ]

    async def read_inbox(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT seq, event_name, payload, arrived_ms, state, step_name FROM inbox "
            "WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (run_id, after_seq, -1 if limit is None else limit),
        )
        return [
            {
                "seq": seq,
                "event_name": name,
                "payload": payload,
                "arrived_ms": arrived,
                "state": state,
                "step_name": step,
            }
            for seq, name, payload, arrived, state, step in rows
        ]

    async def list_workflows(
        self,
        status: str | None,
        workflow_type: str | None,
        limit: int,
        before: tuple[int, str] | None = None,
    ) -> list[rec.RunRecord]:
        where: list[str] = []
        params: list[Any] = []
        if status:
            where.append("status = ?")
            params.append(status)
        if workflow_type:
            where.append("workflow_type = ?")
            params.append(workflow_type)
        if before is not None:
            where.append("(created_ms, run_id) < (?, ?)")
            params.extend(before)
        sql = _SELECT_RUN + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created_ms DESC, run_id DESC LIMIT ?"
        return [_run_from_row(r) for r in await self._fetch(sql, (*params, limit))]

    async def count_by_status(self) -> dict[str, int]:
        return dict(await self._fetch("SELECT status, COUNT(*) FROM runs GROUP BY status"))
