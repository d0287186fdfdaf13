"""The SQLite schema and rows: versions and migrations, run rows, and the ops as statements.

``apply_batch`` writes a whole group commit with one ``executemany`` per statement on the hot
tables; ``apply_op`` writes one op (the unit-by-unit path after a refusal).
"""

from __future__ import annotations

import operator
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

from grctl import codec
from grctl_daemon.storage import base as rec

SCHEMA_VERSION = 6
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
    # The run's partition (a cluster's unit of ownership; one SQLite daemon owns them all).
    5: ("ALTER TABLE runs ADD COLUMN partition INTEGER NOT NULL DEFAULT 0",),
    # Operating it (SPEC 7). Idempotent events: a send's key is stored with its event, at
    # most once per run. Retention: ended runs are found, and pruned, by when they ended
    # (partial: an active run has no entry, so starting or stepping one does not touch it).
    # Schedules: durable cron schedules, one row each (runtime/schedules.py).
    6: (
        "ALTER TABLE inbox ADD COLUMN idempotency_key TEXT",
        "CREATE UNIQUE INDEX inbox_by_key ON inbox (run_id, idempotency_key) "
        "WHERE idempotency_key IS NOT NULL",
        "CREATE INDEX runs_by_ended ON runs (ended_ms) WHERE ended_ms IS NOT NULL",
        """CREATE TABLE schedules (
            name             TEXT PRIMARY KEY,
            workflow_type    TEXT NOT NULL,
            cron             TEXT NOT NULL,
            timezone         TEXT NOT NULL,
            input            BLOB,
            overlap          TEXT NOT NULL,
            paused           INTEGER NOT NULL DEFAULT 0,
            next_fire_ms     INTEGER NOT NULL,
            created_ms       INTEGER NOT NULL,
            updated_ms       INTEGER NOT NULL,
            partition        INTEGER NOT NULL,
            last_fire_ms     INTEGER,
            last_workflow_id TEXT,
            last_run_id      TEXT,
            skips            INTEGER NOT NULL DEFAULT 0,
            last_skip_ms     INTEGER)""",
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
    "partition",
)
_INSERT_RUN = (
    f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(_RUN_COLUMNS))})"
)
# What a step can change; the rest of a run's row is written once, when it starts (fewer
# columns set, fewer indexes touched).
_WRITTEN_ONCE = rec.WRITTEN_ONCE
_MUTABLE_RUN_COLUMNS = tuple(c for c in _RUN_COLUMNS if c not in _WRITTEN_ONCE)
# A save that keeps the status leaves that column out: SQLite then rewrites none of the indexes
# on it (the one-active-run index, the listing and ready-run indexes), which most steps skip.
# ``ended_ms`` changes only with the status (a run ends), so it is left out too: SQLite would
# otherwise visit the retention index on every step.
_STEP_RUN_COLUMNS = tuple(c for c in _MUTABLE_RUN_COLUMNS if c not in ("status", "ended_ms"))


def _update(columns: tuple[str, ...]) -> str:
    # A save applies only to the row it was decided on: a stale one changes no row (refused).
    sets = ", ".join(f"{c} = ?" for c in columns)
    return f"UPDATE runs SET {sets} WHERE run_id = ? AND version = ?"


_UPDATE_RUN = _update(_MUTABLE_RUN_COLUMNS)
_UPDATE_STEP = _update(_STEP_RUN_COLUMNS)
_SAVED = {
    True: (_UPDATE_RUN, operator.attrgetter(*_MUTABLE_RUN_COLUMNS), _MUTABLE_RUN_COLUMNS),
    False: (_UPDATE_STEP, operator.attrgetter(*_STEP_RUN_COLUMNS), _STEP_RUN_COLUMNS),
}
_ERROR_AT = {k: cols.index("error") for k, (_, _, cols) in _SAVED.items()}
_CANCEL_AT = {k: cols.index("cancel_requested") for k, (_, _, cols) in _SAVED.items()}
SELECT_RUN = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"


def pack_or_none(value: Any) -> bytes | None:
    return None if value is None else codec.pack(value)


def unpack_or_none(data: bytes | None) -> Any:
    return None if data is None else codec.unpack(data)


def _run_params(run: rec.RunRecord) -> list[Any]:
    values = []
    for col in _RUN_COLUMNS:
        v = getattr(run, col)
        if col == "error":
            v = pack_or_none(v)
        elif col == "cancel_requested":
            v = int(v)
        values.append(v)
    return values


def _save_params(r: rec.RunRecord, expect_version: int, status_changed: bool) -> list[Any]:
    values = list(_SAVED[status_changed][1](r))
    at = _ERROR_AT[status_changed]
    values[at] = pack_or_none(values[at])
    at = _CANCEL_AT[status_changed]
    values[at] = int(values[at])
    values.append(r.run_id)
    values.append(expect_version)
    return values


class Stale(sqlite3.IntegrityError):
    """A save found its run's row at another version than the one it was decided on."""


def run_from_row(row: Any) -> rec.RunRecord:
    data = dict(zip(_RUN_COLUMNS, row, strict=True))
    data["error"] = unpack_or_none(data["error"])
    data["cancel_requested"] = bool(data["cancel_requested"])
    return rec.RunRecord(**data)


_INSERT_HISTORY = (
    "INSERT INTO history (run_id, seq, ts_ms, kind, step_name, data) VALUES (?, ?, ?, ?, ?, ?)"
)
_UPSERT_STORE = (
    "INSERT INTO store (run_id, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value"
)


def apply_batch(cur: sqlite3.Cursor, units: list[list[rec.Op]]) -> None:
    """Every op of a batch, with one ``executemany`` per statement on the hot tables.

    Tables have no triggers or foreign keys, so ops on different tables commute; ops on one
    table keep their order. A run saved twice in a batch (its step ended, its next step was
    dispatched) is written once, with its last state, checked against the version its first
    save was decided on. New runs go in before any save; should that trip the one-active-run
    index (a run ended and its workflow_id started again in the same batch), or a save find
    its row moved on, the IntegrityError sends the caller to the ordered, unit-by-unit path.
    """
    inserts: list[rec.RunRecord] = []
    saves: dict[str, tuple[rec.RunRecord, int, bool]] = {}
    history: list[tuple[Any, ...]] = []
    store: list[tuple[str, str, bytes]] = []
    rest: list[rec.Op] = []
    for ops in units:
        for op in ops:
            kind = type(op)
            if kind is rec.AppendHistory:
                history.append(
                    (op.run_id, op.seq, op.ts_ms, op.kind, op.step_name, pack_or_none(op.data))
                )
            elif kind is rec.SaveRun:
                first = saves.get(op.run.run_id)
                if first is None:
                    saves[op.run.run_id] = (op.run, op.run.version - 1, op.status_changed)
                else:
                    saves[op.run.run_id] = (op.run, first[1], first[2] or op.status_changed)
            elif kind is rec.PutStore:
                store.extend((op.run_id, k, v) for k, v in op.writes.items())
            elif kind is rec.InsertRun:
                inserts.append(op.run)
            else:
                rest.append(op)
    if inserts:
        cur.executemany(_INSERT_RUN, [_run_params(r) for r in inserts])
    if saves:
        saved = 0
        for changed in (False, True):
            rows = [_save_params(r, v, c) for r, v, c in saves.values() if c is changed]
            if rows:
                cur.executemany(_SAVED[changed][0], rows)
                saved += cur.rowcount
        if saved != len(saves):
            raise Stale(f"{len(saves) - saved} run save(s) decided on a stale state")
    if history:
        cur.executemany(_INSERT_HISTORY, history)
    if store:
        cur.executemany(_UPSERT_STORE, store)
    for op in rest:
        apply_op(cur, op)


def apply_op(cur: sqlite3.Cursor, op: rec.Op) -> None:
    match op:
        case rec.SaveRun(run, changed):
            cur.execute(_SAVED[changed][0], _save_params(run, run.version - 1, changed))
            if cur.rowcount != 1:
                raise Stale(
                    f"run {run.run_id} is not at version {run.version - 1}: the save was decided "
                    "on a state that was never committed"
                )
        case rec.InsertRun(run):
            cur.execute(_INSERT_RUN, _run_params(run))
        case rec.PutStore(run_id, writes):
            cur.executemany(_UPSERT_STORE, [(run_id, k, v) for k, v in writes.items()])
        case rec.AppendHistory(run_id, seq, ts_ms, kind, step_name, data):
            cur.execute(_INSERT_HISTORY, (run_id, seq, ts_ms, kind, step_name, pack_or_none(data)))
        case rec.AddInbox(run_id, seq, event_name, payload, arrived_ms, key):
            cur.execute(
                "INSERT INTO inbox (run_id, seq, event_name, payload, arrived_ms, state, "
                "idempotency_key) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                (run_id, seq, event_name, payload, arrived_ms, key),
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
                (workflow_type, pack_or_none(definition), updated_ms),
            )
        case rec.DeleteRuns(run_ids, before_ms):
            delete_runs(cur, run_ids, before_ms)
        case rec.SaveSchedule(schedule):
            cur.execute(_SAVE_SCHEDULE, _schedule_params(schedule))
        case rec.RemoveSchedule(schedule):
            cur.execute("DELETE FROM schedules WHERE name = ?", (schedule.name,))
        case _:
            raise TypeError(f"unknown storage op {op!r}")


def delete_runs(cur: sqlite3.Cursor, run_ids: list[str], before_ms: int) -> list[str]:
    """Delete the runs among ``run_ids`` that ended before ``before_ms``, with their rows."""
    if not run_ids:
        return []
    marks = ", ".join("?" * len(run_ids))
    gone = [
        r[0]
        for r in cur.execute(
            f"DELETE FROM runs WHERE run_id IN ({marks}) AND ended_ms < ? RETURNING run_id",
            (*run_ids, before_ms),
        ).fetchall()
    ]
    if gone:
        marks = ", ".join("?" * len(gone))
        for table in rec.RUN_TABLES:
            cur.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", gone)
    return gone


_SAVE_SCHEDULE = (
    f"INSERT OR REPLACE INTO schedules ({', '.join(rec.SCHEDULE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(rec.SCHEDULE_COLUMNS))})"
)
SELECT_SCHEDULE = f"SELECT {', '.join(rec.SCHEDULE_COLUMNS)} FROM schedules"


def _schedule_params(s: rec.ScheduleRecord) -> list[Any]:
    return [int(v) if type(v) is bool else v for v in (getattr(s, c) for c in rec.SCHEDULE_COLUMNS)]


def schedule_from_row(row: Any) -> rec.ScheduleRecord:
    data = dict(zip(rec.SCHEDULE_COLUMNS, row, strict=True))
    data["paused"] = bool(data["paused"])
    return rec.ScheduleRecord(**data)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the database to SCHEMA_VERSION: a new one from schema.sql, an older one by
    MIGRATIONS.
    """
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
                f"database {path} has schema version {version}, newer than this grctl "
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
