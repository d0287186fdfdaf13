"""The read half of the PostgreSQL backend: a small asyncpg pool beside the writer.

A read that finds the database gone answers ``storage_unavailable`` (the pool reconnects by
itself on the next read).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from grctl.errors import StorageUnavailableError
from grctl_daemon.storage import base as rec
from grctl_daemon.storage.postgres_rows import (
    SELECT_RUN,
    SELECT_SCHEDULE,
    run_from_row,
    schedule_from_row,
    unpack_or_none,
)

_GONE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.InterfaceError,
)


class PostgresReads:
    """Reads for ``PostgresStorage`` (a mixin: it holds ``_pool`` and ``database``)."""

    _pool: asyncpg.Pool | None
    database: str

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise StorageUnavailableError(f"the database {self.database} is closed")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _GONE as exc:
            raise StorageUnavailableError(
                f"cannot read the database {self.database} ({type(exc).__name__}: {exc}); "
                "check that PostgreSQL is up, then retry"
            ) from None

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._conn() as conn:
            return await conn.fetch(sql, *args)

    async def load_types(self) -> dict[str, dict[str, Any]]:
        rows = await self._fetch("SELECT workflow_type, definition FROM workflow_types")
        return {name: unpack_or_none(blob) for name, blob in rows}

    async def load_runs(self, run_ids: list[str]) -> dict[str, rec.LoadedRun]:
        """The given runs with their parts, read in one snapshot: five queries for the lot."""
        if not run_ids:
            return {}
        async with (
            self._conn() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            runs = {
                r.run_id: r
                for r in map(
                    run_from_row,
                    await conn.fetch(f"{SELECT_RUN} WHERE run_id = ANY($1::text[])", run_ids),
                )
            }
            if not runs:
                return {}
            ids = list(runs)
            loaded = {rid: rec.LoadedRun(run, {}, [], [], {}) for rid, run in runs.items()}
            for rid, key, value in await conn.fetch(
                "SELECT run_id, key, value FROM store WHERE run_id = ANY($1::text[])", ids
            ):
                loaded[rid].store[key] = value
            for rid, step_seq, record in await conn.fetch(
                "SELECT run_id, step_seq, record FROM step_records WHERE run_id = ANY($1::text[]) "
                "ORDER BY run_id, step_seq, n",
                ids,
            ):
                if step_seq == runs[rid].step_seq:
                    loaded[rid].records.append(record)
            for rid, seq, name, payload in await conn.fetch(
                "SELECT run_id, seq, event_name, payload FROM inbox "
                "WHERE run_id = ANY($1::text[]) AND state = 'pending' ORDER BY run_id, seq",
                ids,
            ):
                loaded[rid].inbox.append((seq, name, payload))
            for rid, kind, due, token in await conn.fetch(
                "SELECT run_id, kind, due_ms, token FROM timers WHERE run_id = ANY($1::text[])",
                ids,
            ):
                loaded[rid].timers[kind] = (due, token)
        return loaded

    async def ready_runs(
        self, after_run_id: str, limit: int, partitions: frozenset[int] | None = None
    ) -> list[tuple[str, str]]:
        rows = await self._fetch(
            "SELECT run_id, workflow_type FROM runs WHERE status = 'running' AND run_id > $1 "
            "AND ($3::int[] IS NULL OR partition = ANY($3::int[])) ORDER BY run_id LIMIT $2",
            after_run_id,
            limit,
            None if partitions is None else sorted(partitions),
        )
        return [(r[0], r[1]) for r in rows]

    async def due_timers(
        self, from_ms: int, to_ms: int, partitions: frozenset[int] | None = None
    ) -> list[rec.DueTimer]:
        rows = await self._fetch(
            "SELECT t.run_id, t.kind, t.due_ms, t.token FROM timers t JOIN runs r USING (run_id) "
            "WHERE t.due_ms >= $1 AND t.due_ms < $2 "
            "AND ($3::int[] IS NULL OR r.partition = ANY($3::int[])) ORDER BY t.due_ms",
            from_ms,
            to_ms,
            None if partitions is None else sorted(partitions),
        )
        return [rec.DueTimer(*r) for r in rows]

    async def find_run(self, workflow_id: str, run_id: str | None) -> rec.RunRecord | None:
        if run_id:
            rows = await self._fetch(
                f"{SELECT_RUN} WHERE run_id = $1 AND workflow_id = $2", run_id, workflow_id
            )
        else:
            rows = await self._fetch(
                f"{SELECT_RUN} WHERE workflow_id = $1 ORDER BY created_ms DESC, run_id DESC "
                "LIMIT 1",
                workflow_id,
            )
        return run_from_row(rows[0]) if rows else None

    async def read_store(self, run_id: str) -> dict[str, bytes]:
        rows = await self._fetch("SELECT key, value FROM store WHERE run_id = $1", run_id)
        return {r[0]: r[1] for r in rows}

    async def read_history(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT seq, ts_ms, kind, step_name, data FROM history WHERE run_id = $1 "
            "AND seq > $2 ORDER BY seq LIMIT $3",
            run_id,
            after_seq,
            limit,
        )
        history = rec.as_dicts(rec.HISTORY_COLUMNS, rows)
        for row in history:
            row["data"] = unpack_or_none(row["data"]) or {}
        return history

    async def read_inbox(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT seq, event_name, payload, arrived_ms, state, step_name, idempotency_key "
            "FROM inbox "
            "WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            run_id,
            after_seq,
            limit,
        )
        return rec.as_dicts(rec.INBOX_COLUMNS, rows)

    async def find_event_key(self, run_id: str, idempotency_key: str) -> int | None:
        rows = await self._fetch(
            "SELECT seq FROM inbox WHERE run_id = $1 AND idempotency_key = $2",
            run_id,
            idempotency_key,
        )
        return rows[0][0] if rows else None

    async def list_workflows(
        self,
        status: str | None,
        workflow_type: str | None,
        limit: int,
        before: tuple[int, str] | None = None,
    ) -> list[rec.RunRecord]:
        where: list[str] = []
        args: list[Any] = []
        if status:
            args.append(status)
            where.append(f"status = ${len(args)}")
        if workflow_type:
            args.append(workflow_type)
            where.append(f"workflow_type = ${len(args)}")
        if before is not None:
            args.extend(before)
            where.append(f"(created_ms, run_id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        sql = SELECT_RUN + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += f" ORDER BY created_ms DESC, run_id DESC LIMIT ${len(args)}"
        return [run_from_row(r) for r in await self._fetch(sql, *args)]

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._fetch("SELECT status, count(*) FROM runs GROUP BY status")
        return {r[0]: r[1] for r in rows}

    async def ended_runs(
        self,
        before_ms: int,
        status: str | None,
        workflow_type: str | None,
        limit: int,
        after: tuple[int, str] | None = None,
        partitions: frozenset[int] | None = None,
    ) -> list[rec.EndedRun]:
        rows = await self._fetch(
            "SELECT run_id, workflow_id, workflow_type, status, ended_ms, partition FROM runs "
            "WHERE ended_ms < $1 AND ($2::text IS NULL OR status = $2) "
            "AND ($3::text IS NULL OR workflow_type = $3) "
            "AND ($4::bigint IS NULL OR (ended_ms, run_id) > ($4, $5::text)) "
            "AND ($6::int[] IS NULL OR partition = ANY($6::int[])) "
            "ORDER BY ended_ms, run_id LIMIT $7",
            before_ms,
            status,
            workflow_type,
            None if after is None else after[0],
            None if after is None else after[1],
            None if partitions is None else sorted(partitions),
            limit,
        )
        return [rec.EndedRun(*r) for r in rows]

    async def count_runs(self, status: str, partitions: list[int] | None = None) -> int:
        if partitions is None:
            rows = await self._fetch("SELECT count(*) FROM runs WHERE status = $1", status)
        else:
            rows = await self._fetch(
                "SELECT count(*) FROM runs WHERE status = $1 AND partition = ANY($2::int[])",
                status,
                partitions,
            )
        return int(rows[0][0])

    async def database_bytes(self) -> int | None:
        # The whole database's files (every schema in it): what fills the server's disk.
        rows = await self._fetch("SELECT pg_database_size(current_database())")
        return int(rows[0][0])

    async def load_schedules(
        self, partitions: frozenset[int] | None = None
    ) -> list[rec.ScheduleRecord]:
        rows = await self._fetch(f"{SELECT_SCHEDULE} ORDER BY name")
        found = [schedule_from_row(r) for r in rows]
        return [s for s in found if partitions is None or s.partition in partitions]

    async def get_schedule(self, name: str) -> rec.ScheduleRecord | None:
        rows = await self._fetch(f"{SELECT_SCHEDULE} WHERE name = $1", name)
        return schedule_from_row(rows[0]) if rows else None
