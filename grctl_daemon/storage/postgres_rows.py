"""The PostgreSQL schema and rows: versions and migrations, run rows, and the ops as statements.

A batch is written with one statement per table, the rows passed as arrays and expanded with
``unnest``: the round trips of a group commit do not grow with the number of steps in it.
Saves are checked against the version they were decided on (``UPDATE … WHERE version = …``);
the number of rows updated tells a stale one. Ops that come one at a time (inbox, records,
timers, types) go in order, consecutive ones of a kind as one pipelined ``executemany``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg

from grctl import codec
from grctl_daemon.storage import base as rec
from grctl_daemon.storage.base import PARTITIONS

SCHEMA_VERSION = 4
# version → the statements that bring a database at version-1 to it; append, never edit.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # Ownership under a lease: a standby daemon takes the database over when it expires.
    2: (
        "ALTER TABLE owner ADD COLUMN holder text",
        "ALTER TABLE owner ADD COLUMN lease_until_ms bigint NOT NULL DEFAULT 0",
    ),
    # Several active daemons (postgres_cluster.py): members under leases, partitions of runs
    # held by one member at a time. The single owner row goes; its runs land in partition 0.
    3: (
        "ALTER TABLE runs ADD COLUMN partition integer NOT NULL DEFAULT 0",
        "CREATE INDEX runs_ready ON runs (partition, run_id) WHERE status = 'running'",
        """CREATE TABLE members (
            holder         text PRIMARY KEY,
            host           text NOT NULL,
            socket         text,
            address        text,
            joined_ms      bigint NOT NULL,
            lease_until_ms bigint NOT NULL,
            last_batch     bigint NOT NULL DEFAULT 0,
            last_refused   integer[] NOT NULL DEFAULT '{}',
            info           bytea)""",
        """CREATE TABLE partitions (
            id       integer PRIMARY KEY,
            holder   text,
            epoch    bigint NOT NULL DEFAULT 0,
            since_ms bigint NOT NULL DEFAULT 0)""",
        f"INSERT INTO partitions (id) SELECT generate_series(0, {PARTITIONS - 1})",
        "DROP TABLE owner",
    ),
    # Operating it (SPEC 7). Idempotent events: a send's key is stored with its event, at
    # most once per run. Retention: ended runs are found, and pruned, by when they ended
    # (partial: an active run has no entry, so starting or stepping one does not touch it).
    # Schedules: durable cron schedules, one row each (runtime/schedules.py).
    4: (
        "ALTER TABLE inbox ADD COLUMN idempotency_key text",
        "CREATE UNIQUE INDEX inbox_by_key ON inbox (run_id, idempotency_key) "
        "WHERE idempotency_key IS NOT NULL",
        "CREATE INDEX runs_by_ended ON runs (ended_ms) WHERE ended_ms IS NOT NULL",
        """CREATE TABLE schedules (
            name             text PRIMARY KEY,
            workflow_type    text NOT NULL,
            cron             text NOT NULL,
            timezone         text NOT NULL,
            input            bytea,
            overlap          text NOT NULL,
            paused           boolean NOT NULL DEFAULT false,
            next_fire_ms     bigint NOT NULL,
            created_ms       bigint NOT NULL,
            updated_ms       bigint NOT NULL,
            partition        integer NOT NULL,
            last_fire_ms     bigint,
            last_workflow_id text,
            last_run_id      text,
            skips            integer NOT NULL DEFAULT 0,
            last_skip_ms     bigint)""",
        # max_concurrent_runs across a cluster: N rows per limited type, each held by the
        # member that dispatched a run with it; a holder that is no member holds nothing.
        """CREATE TABLE type_slots (
            workflow_type text NOT NULL,
            slot          integer NOT NULL,
            holder        text,
            PRIMARY KEY (workflow_type, slot))""",
    ),
}
# Lease times are the database's clock, the one clock every daemon shares.
DB_NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)",
    """CREATE TABLE IF NOT EXISTS workflow_types (
        workflow_type text PRIMARY KEY,
        definition    bytea NOT NULL,
        updated_ms    bigint NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id             text PRIMARY KEY,
        workflow_id        text NOT NULL,
        workflow_type      text NOT NULL,
        status             text NOT NULL,
        created_ms         bigint NOT NULL,
        updated_ms         bigint NOT NULL,
        input              bytea,
        result             bytea,
        error              bytea,
        reason             text,
        step_name          text,
        handler_kind       text,
        step_args          bytea,
        attempt            integer NOT NULL DEFAULT 0,
        failures           integer NOT NULL DEFAULT 0,
        step_seq           integer NOT NULL DEFAULT 0,
        wait_timeout_step  text,
        cancel_requested   boolean NOT NULL DEFAULT false,
        parent_workflow_id text,
        parent_run_id      text,
        completion_event   text,
        history_seq        integer NOT NULL DEFAULT 0,
        inbox_seq          integer NOT NULL DEFAULT 0,
        ended_ms           bigint,
        worker_losses      integer NOT NULL DEFAULT 0,
        version            bigint NOT NULL DEFAULT 0)""",
    # The ownership epoch, and the last batch committed under it (found again after a
    # connection was lost during COMMIT: did that batch land?).
    """CREATE TABLE IF NOT EXISTS owner (
        id           integer PRIMARY KEY CHECK (id = 1),
        epoch        bigint NOT NULL,
        last_batch   bigint NOT NULL DEFAULT 0,
        last_refused integer[] NOT NULL DEFAULT '{}')""",
    # One active run per workflow_id, enforced by the database itself.
    """CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active ON runs (workflow_id)
        WHERE status IN ('running', 'waiting')""",
    "CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow_id, created_ms)",
    "CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_ms, run_id)",
    "CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_ms)",
    "CREATE INDEX IF NOT EXISTS runs_by_type ON runs (workflow_type, created_ms)",
    "CREATE INDEX IF NOT EXISTS runs_running ON runs (run_id) WHERE status = 'running'",
    """CREATE TABLE IF NOT EXISTS store (
        run_id text NOT NULL, key text NOT NULL, value bytea, PRIMARY KEY (run_id, key))""",
    """CREATE TABLE IF NOT EXISTS history (
        run_id text NOT NULL, seq integer NOT NULL, ts_ms bigint NOT NULL, kind text NOT NULL,
        step_name text, data bytea, PRIMARY KEY (run_id, seq))""",
    """CREATE TABLE IF NOT EXISTS inbox (
        run_id text NOT NULL, seq integer NOT NULL, event_name text NOT NULL, payload bytea,
        arrived_ms bigint NOT NULL, state text NOT NULL, step_name text,
        PRIMARY KEY (run_id, seq))""",
    """CREATE TABLE IF NOT EXISTS step_records (
        run_id text NOT NULL, step_seq integer NOT NULL, n integer NOT NULL,
        record bytea NOT NULL, PRIMARY KEY (run_id, step_seq, n))""",
    """CREATE TABLE IF NOT EXISTS timers (
        run_id text NOT NULL, kind text NOT NULL, due_ms bigint NOT NULL, token text NOT NULL,
        PRIMARY KEY (run_id, kind))""",
    "CREATE INDEX IF NOT EXISTS timers_by_due ON timers (due_ms)",
)

_TYPES = {
    str: "text",
    int: "bigint",
    bool: "boolean",
    bytes: "bytea",
    "str": "text",
    "int": "bigint",
    "bool": "boolean",
    "bytes | None": "bytea",
    "str | None": "text",
    "int | None": "bigint",
    "dict[str, Any] | None": "bytea",
}
RUN_COLUMNS = tuple(f.name for f in dataclasses.fields(rec.RunRecord))
_RUN_TYPES = {f.name: _TYPES[f.type] for f in dataclasses.fields(rec.RunRecord)}
_WRITTEN_ONCE = rec.WRITTEN_ONCE
_MUTABLE = tuple(c for c in RUN_COLUMNS if c not in _WRITTEN_ONCE)
_STEP = tuple(c for c in _MUTABLE if c != "status")  # a save that keeps the status
SELECT_RUN = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"


def _unnest(columns: tuple[str, ...], types: dict[str, str]) -> str:
    return ", ".join(f"${i}::{types[c]}[]" for i, c in enumerate(columns, 1))


_INSERT_RUNS = (
    f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) "
    f"SELECT * FROM unnest({_unnest(RUN_COLUMNS, _RUN_TYPES)})"
)


def _update(columns: tuple[str, ...]) -> str:
    keys = (*columns, "run_id")
    types = {**_RUN_TYPES, "expect": "bigint"}
    sets = ", ".join(f"{c} = v.{c}" for c in columns)
    return (
        f"UPDATE runs AS r SET {sets} FROM unnest({_unnest((*keys, 'expect'), types)}) "
        f"AS v({', '.join((*keys, 'expect'))}) WHERE r.run_id = v.run_id AND r.version = v.expect"
    )


_SAVED = {True: (_update(_MUTABLE), _MUTABLE), False: (_update(_STEP), _STEP)}
_INSERT_HISTORY = (
    "INSERT INTO history (run_id, seq, ts_ms, kind, step_name, data) "
    "SELECT * FROM unnest($1::text[], $2::integer[], $3::bigint[], $4::text[], $5::text[], "
    "$6::bytea[])"
)
_UPSERT_STORE = (
    "INSERT INTO store (run_id, key, value) SELECT * FROM unnest($1::text[], $2::text[], "
    "$3::bytea[]) ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value"
)
# The ops that come one at a time, each kind as one statement over arrays. A group is a run of
# consecutive ops of one kind (order across kinds is kept: a records delete, then an insert);
# statements that upsert or update by key keep the last op of a key (PostgreSQL refuses to
# touch a row twice in one statement).
_GROUPED: dict[type, tuple[str, Any, Any] | None] = {
    rec.AddInbox: (
        "INSERT INTO inbox (run_id, seq, event_name, payload, arrived_ms, state, idempotency_key) "
        "SELECT r, s, e, p, a, 'pending', k FROM unnest($1::text[], $2::integer[], $3::text[], "
        "$4::bytea[], $5::bigint[], $6::text[]) AS v(r, s, e, p, a, k)",
        lambda o: (o.run_id, o.seq, o.event_name, o.payload, o.arrived_ms, o.idempotency_key),
        None,
    ),
    rec.MarkInbox: (
        "UPDATE inbox AS i SET state = v.st, step_name = v.sn FROM unnest($1::text[], "
        "$2::integer[], $3::text[], $4::text[]) AS v(r, s, st, sn) "
        "WHERE i.run_id = v.r AND i.seq = v.s",
        lambda o: (o.run_id, o.seq, o.state, o.step_name),
        lambda o: (o.run_id, o.seq),
    ),
    rec.AddRecord: (
        "INSERT INTO step_records (run_id, step_seq, n, record) "
        "SELECT * FROM unnest($1::text[], $2::integer[], $3::integer[], $4::bytea[])",
        lambda o: (o.run_id, o.step_seq, o.n, o.record),
        None,
    ),
    rec.ClearRecords: (
        "DELETE FROM step_records WHERE run_id = ANY($1::text[])",
        lambda o: (o.run_id,),
        lambda o: o.run_id,
    ),
    rec.SetTimer: (
        "INSERT INTO timers (run_id, kind, due_ms, token) SELECT * FROM unnest($1::text[], "
        "$2::text[], $3::bigint[], $4::text[]) ON CONFLICT (run_id, kind) DO UPDATE SET "
        "due_ms = excluded.due_ms, token = excluded.token",
        lambda o: (o.run_id, o.kind, o.due_ms, o.token),
        lambda o: (o.run_id, o.kind),
    ),
    rec.ClearTimer: (
        "DELETE FROM timers AS t USING unnest($1::text[], $2::text[]) AS v(r, k) "
        "WHERE t.run_id = v.r AND (v.k IS NULL OR t.kind = v.k)",
        lambda o: (o.run_id, o.kind),
        lambda o: (o.run_id, o.kind),
    ),
    # Schedules change one at a time (runtime/schedules.py): no array form needed.
    rec.SaveSchedule: None,
    rec.RemoveSchedule: None,
    rec.SaveType: (
        "INSERT INTO workflow_types (workflow_type, definition, updated_ms) "
        "SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[]) "
        "ON CONFLICT (workflow_type) DO UPDATE SET definition = excluded.definition, "
        "updated_ms = excluded.updated_ms",
        lambda o: (o.workflow_type, codec.pack(o.definition), o.updated_ms),
        lambda o: o.workflow_type,
    ),
}


_SCHEDULE_COLUMNS = rec.SCHEDULE_COLUMNS
_SAVE_SCHEDULE = (
    f"INSERT INTO schedules ({', '.join(_SCHEDULE_COLUMNS)}) VALUES "
    f"({', '.join(f'${i + 1}' for i in range(len(_SCHEDULE_COLUMNS)))}) ON CONFLICT (name) DO "
    f"UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _SCHEDULE_COLUMNS if c != 'name')}"
)
SELECT_SCHEDULE = f"SELECT {', '.join(_SCHEDULE_COLUMNS)} FROM schedules"


async def _schedule_op(conn: asyncpg.Connection, op: Any) -> None:
    if type(op) is rec.SaveSchedule:
        await conn.execute(_SAVE_SCHEDULE, *(getattr(op.schedule, c) for c in _SCHEDULE_COLUMNS))
    else:
        await conn.execute("DELETE FROM schedules WHERE name = $1", op.schedule.name)


def schedule_from_row(row: Any) -> rec.ScheduleRecord:
    return rec.ScheduleRecord(**dict(zip(_SCHEDULE_COLUMNS, row, strict=True)))


class Stale(Exception):
    """A save found its run's row at another version than the one it was decided on."""


def pack_or_none(value: Any) -> bytes | None:
    return None if value is None else codec.pack(value)


def unpack_or_none(data: bytes | None) -> Any:
    return None if data is None else codec.unpack(data)


def _column(runs: list[rec.RunRecord], name: str) -> list[Any]:
    if name == "error":
        return [pack_or_none(r.error) for r in runs]
    return [getattr(r, name) for r in runs]


def run_from_row(row: Any) -> rec.RunRecord:
    data = dict(zip(RUN_COLUMNS, row, strict=True))
    data["error"] = unpack_or_none(data["error"])
    return rec.RunRecord(**data)


def _count(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


async def apply_batch(conn: asyncpg.Connection, units: list[list[rec.Op]]) -> None:
    """Every op of a batch: one statement per hot table, the rest in order (see the top)."""
    inserts: list[rec.RunRecord] = []
    saves: dict[str, tuple[rec.RunRecord, int, bool]] = {}
    history: list[rec.AppendHistory] = []
    store: dict[tuple[str, str], bytes] = {}
    rest: list[rec.Op] = []
    for ops in units:
        for op in ops:
            kind = type(op)
            if kind is rec.AppendHistory:
                history.append(op)
            elif kind is rec.SaveRun:
                first = saves.get(op.run.run_id)
                if first is None:
                    saves[op.run.run_id] = (op.run, op.run.version - 1, op.status_changed)
                else:
                    saves[op.run.run_id] = (op.run, first[1], first[2] or op.status_changed)
            elif kind is rec.PutStore:
                for key, value in op.writes.items():
                    store[(op.run_id, key)] = value  # the last write of a key wins
            elif kind is rec.InsertRun:
                inserts.append(op.run)
            else:
                rest.append(op)
    if inserts:
        await conn.execute(_INSERT_RUNS, *(_column(inserts, c) for c in RUN_COLUMNS))
    if saves:
        await _save(conn, list(saves.values()))
    if history:
        await conn.execute(
            _INSERT_HISTORY,
            [h.run_id for h in history],
            [h.seq for h in history],
            [h.ts_ms for h in history],
            [h.kind for h in history],
            [h.step_name for h in history],
            [pack_or_none(h.data) for h in history],
        )
    if store:
        keys = list(store)
        await conn.execute(
            _UPSERT_STORE, [k[0] for k in keys], [k[1] for k in keys], list(store.values())
        )
    await apply_in_order(conn, rest)


async def _save(conn: asyncpg.Connection, saves: list[tuple[rec.RunRecord, int, bool]]) -> None:
    saved = 0
    for changed in (False, True):
        group = [(r, v) for r, v, c in saves if c is changed]
        if not group:
            continue
        sql, columns = _SAVED[changed]
        runs = [r for r, _ in group]
        args = [_column(runs, c) for c in columns]
        args.append([r.run_id for r in runs])
        args.append([v for _, v in group])
        saved += _count(await conn.execute(sql, *args))
    if saved != len(saves):
        raise Stale(f"{len(saves) - saved} run save(s) decided on a stale state")


async def delete_runs(conn: asyncpg.Connection, run_ids: list[str], before_ms: int) -> list[str]:
    """Delete the runs among ``run_ids`` that ended before ``before_ms``, with their rows."""
    gone = [
        r[0]
        for r in await conn.fetch(
            "DELETE FROM runs WHERE run_id = ANY($1::text[]) AND ended_ms < $2 RETURNING run_id",
            run_ids,
            before_ms,
        )
    ]
    if gone:
        for table in rec.RUN_TABLES:
            await conn.execute(f"DELETE FROM {table} WHERE run_id = ANY($1::text[])", gone)
    return gone


async def apply_in_order(conn: asyncpg.Connection, ops: list[rec.Op]) -> None:
    """Ops in their order; a run of consecutive ops of one kind is one statement over arrays."""
    start = 0
    while start < len(ops):
        kind = type(ops[start])
        if kind is rec.DeleteRuns:
            op = ops[start]
            await delete_runs(conn, op.run_ids, op.before_ms)  # type: ignore[union-attr]
            start += 1
            continue
        end = start
        while end < len(ops) and type(ops[end]) is kind:
            end += 1
        if kind not in _GROUPED:
            raise TypeError(f"unknown storage op {ops[start]!r}")
        if _GROUPED[kind] is None:
            for op in ops[start:end]:
                await _schedule_op(conn, op)
            start = end
            continue
        sql, row, key = _GROUPED[kind]
        group = ops[start:end]
        if key is not None:  # the last op of a key wins
            group = list({key(o): o for o in group}.values())
        rows = [row(o) for o in group]
        await conn.execute(sql, *(list(col) for col in zip(*rows, strict=True)))
        start = end


async def apply_unit(conn: asyncpg.Connection, ops: list[rec.Op]) -> None:
    """One unit on its own (inside a savepoint), for the path where some unit was refused.

    A unit that saves a run before it inserts one (a reset ends the old run of a workflow_id
    and starts its new run) goes in two parts, in its order: the batch path puts inserts
    first, which the one-active-run index refuses for such a unit.
    """
    cut = next((i for i, op in enumerate(ops) if type(op) is rec.InsertRun), 0)
    if cut and any(type(op) is rec.SaveRun for op in ops[:cut]):
        await apply_batch(conn, [ops[:cut]])
        await apply_batch(conn, [ops[cut:]])
        return
    await apply_batch(conn, [ops])


async def migrate(conn: asyncpg.Connection, schema: str) -> None:
    """Create the schema and its tables, or bring them forward; one daemon at a time."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"grctl:{schema}")
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        exists = await conn.fetchval(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 "
            "AND table_name = 'schema_version'",
            schema,
        )
        version = await conn.fetchval("SELECT max(version) FROM schema_version") if exists else 0
        version = version or 0
        if version > SCHEMA_VERSION:
            raise rec.StorageError(
                f"schema {schema!r} has grctl schema version {version}, newer than this grctl "
                f"({SCHEMA_VERSION}); upgrade grctl or use another ?schema="
            )
        if version == 0:
            for statement in SCHEMA:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", 1)
            version = 1
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", target)
