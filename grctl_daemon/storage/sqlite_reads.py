"""The read half of the SQLite backend: one aiosqlite connection on its own thread (WAL lets it
read beside the writer), used for loads at start-up and by the run cache, and for listings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiosqlite

from grctl_daemon.storage import base as rec
from grctl_daemon.storage.sqlite_rows import (
    SELECT_RUN,
    SELECT_SCHEDULE,
    run_from_row,
    schedule_from_row,
    unpack_or_none,
)

MAX_LOAD_BATCH = 500  # runs read back in one go (SQLite allows 32,766 parameters)


class SqliteReads:
    """Reads for ``SqliteStorage`` (a mixin: it holds ``_reader``, ``_loader``, ``_load_lock``).

    Every read but a load is one statement on ``_reader``, outside any transaction, so it sees
    everything committed before it began. A load (``load_runs``) reads five tables in one
    transaction on ``_loader``: were it on ``_reader``, the reads that ran meanwhile would see
    the load's snapshot, missing writes already acknowledged.
    """

    _reader: aiosqlite.Connection | None
    _loader: aiosqlite.Connection | None
    _load_lock: asyncio.Lock

    async def _fetch(
        self, sql: str, params: tuple[Any, ...] = (), conn: aiosqlite.Connection | None = None
    ) -> list[Any]:
        conn = conn or self._reader
        assert conn is not None
        # One job on the connection's thread: a read cancelled half-way (its client hung up)
        # must not leave a statement open, or every later read would see that old snapshot.
        return list(await conn.execute_fetchall(sql, params))

    async def load_types(self) -> dict[str, dict[str, Any]]:
        rows = await self._fetch("SELECT workflow_type, definition FROM workflow_types")
        return {name: unpack_or_none(blob) for name, blob in rows}

    async def load_runs(self, run_ids: list[str]) -> dict[str, rec.LoadedRun]:
        """The given runs with their parts: five queries for the lot, not five per run."""
        found: dict[str, rec.LoadedRun] = {}
        for start in range(0, len(run_ids), MAX_LOAD_BATCH):
            chunk = run_ids[start : start + MAX_LOAD_BATCH]
            async with self._load_lock:  # one read transaction: one committed state
                found.update(await self._load_chunk(chunk))
        return found

    async def _load_chunk(self, run_ids: list[str]) -> dict[str, rec.LoadedRun]:
        conn = self._loader
        assert conn is not None
        marks = ", ".join("?" * len(run_ids))
        ids = tuple(run_ids)
        await conn.execute("BEGIN")
        try:
            runs = {
                run.run_id: run
                for run in map(
                    run_from_row,
                    await self._fetch(f"{SELECT_RUN} WHERE run_id IN ({marks})", ids, conn),
                )
            }
            if not runs:
                return {}
            loaded = {rid: rec.LoadedRun(run, {}, [], [], {}) for rid, run in runs.items()}
            for rid, key, value in await self._fetch(
                f"SELECT run_id, key, value FROM store WHERE run_id IN ({marks})", ids, conn
            ):
                loaded[rid].store[key] = value
            for rid, step_seq, record in await self._fetch(
                "SELECT run_id, step_seq, record FROM step_records "
                f"WHERE run_id IN ({marks}) ORDER BY run_id, step_seq, n",
                ids,
                conn,
            ):
                if step_seq == runs[rid].step_seq:
                    loaded[rid].records.append(record)
            for rid, seq, name, payload in await self._fetch(
                "SELECT run_id, seq, event_name, payload FROM inbox "
                f"WHERE run_id IN ({marks}) AND state = 'pending' ORDER BY run_id, seq",
                ids,
                conn,
            ):
                loaded[rid].inbox.append((seq, name, payload))
            for rid, kind, due, token in await self._fetch(
                f"SELECT run_id, kind, due_ms, token FROM timers WHERE run_id IN ({marks})",
                ids,
                conn,
            ):
                loaded[rid].timers[kind] = (due, token)
        finally:
            await conn.execute("COMMIT")
        return loaded

    async def ready_runs(
        self, after_run_id: str, limit: int, partitions: frozenset[int] | None = None
    ) -> list[tuple[str, str]]:
        # A SQLite database has one daemon, which owns every partition: ``partitions`` is moot.
        return [
            (run_id, wtype)
            for run_id, wtype in await self._fetch(
                "SELECT run_id, workflow_type FROM runs WHERE status = 'running' AND run_id > ? "
                "ORDER BY run_id LIMIT ?",
                (after_run_id, limit),
            )
        ]

    async def due_timers(
        self, from_ms: int, to_ms: int, partitions: frozenset[int] | None = None
    ) -> list[rec.DueTimer]:
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
                f"{SELECT_RUN} WHERE run_id = ? AND workflow_id = ?", (run_id, workflow_id)
            )
        else:
            rows = await self._fetch(
                f"{SELECT_RUN} WHERE workflow_id = ? ORDER BY created_ms DESC, run_id DESC LIMIT 1",
                (workflow_id,),
            )
        return run_from_row(rows[0]) if rows else None

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
            "WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (run_id, after_seq, -1 if limit is None else limit),
        )
        return rec.as_dicts(rec.INBOX_COLUMNS, rows)

    async def find_event_key(self, run_id: str, idempotency_key: str) -> int | None:
        rows = await self._fetch(
            "SELECT seq FROM inbox WHERE run_id = ? AND idempotency_key = ?",
            (run_id, idempotency_key),
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
        sql = SELECT_RUN + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created_ms DESC, run_id DESC LIMIT ?"
        return [run_from_row(r) for r in await self._fetch(sql, (*params, limit))]

    async def count_by_status(self) -> dict[str, int]:
        return dict(await self._fetch("SELECT status, COUNT(*) FROM runs GROUP BY status"))

    async def ended_runs(
        self,
        before_ms: int,
        status: str | None,
        workflow_type: str | None,
        limit: int,
        after: tuple[int, str] | None = None,
        partitions: frozenset[int] | None = None,
    ) -> list[rec.EndedRun]:
        # One daemon owns every partition of a SQLite database: ``partitions`` is moot.
        where = ["ended_ms < ?"]
        params: list[Any] = [before_ms]
        if status:
            where.append("status = ?")
            params.append(status)
        if workflow_type:
            where.append("workflow_type = ?")
            params.append(workflow_type)
        if after is not None:
            where.append("(ended_ms, run_id) > (?, ?)")
            params.extend(after)
        rows = await self._fetch(
            "SELECT run_id, workflow_id, workflow_type, status, ended_ms, partition FROM runs "
            f"INDEXED BY runs_by_ended WHERE {' AND '.join(where)} "
            "ORDER BY ended_ms, run_id LIMIT ?",
            (*params, limit),
        )
        return [rec.EndedRun(*row) for row in rows]

    async def count_runs(self, status: str, partitions: list[int] | None = None) -> int:
        # One daemon owns every partition of a SQLite database: ``partitions`` changes nothing.
        rows = await self._fetch("SELECT COUNT(*) FROM runs WHERE status = ?", (status,))
        return int(rows[0][0])

    async def database_bytes(self) -> int | None:
        return self.describe()["database_bytes"]

    async def load_schedules(
        self, partitions: frozenset[int] | None = None
    ) -> list[rec.ScheduleRecord]:
        rows = await self._fetch(f"{SELECT_SCHEDULE} ORDER BY name")
        found = [schedule_from_row(r) for r in rows]
        return [s for s in found if partitions is None or s.partition in partitions]

    async def get_schedule(self, name: str) -> rec.ScheduleRecord | None:
        rows = await self._fetch(f"{SELECT_SCHEDULE} WHERE name = ?", (name,))
        return schedule_from_row(rows[0]) if rows else None
