"""SQLite reads see every committed write: while a load holds its read transaction, and after
a read that was cancelled half-way.

A load (``load_runs``) reads a run's five tables in one transaction. When it shared the
reader connection, a list or describe that ran meanwhile landed inside that transaction and
saw its older snapshot: a run acknowledged to its client was missing from ``grctl list``
(CI of stop 17). This drives the real storage on a real file: one task keeps loading many
runs while rows are committed by another connection (as the daemon's writer does) and listed
at once.

A read cancelled half-way (its client hung up: ``history --follow`` interrupted, a CLI that
timed out) used to leave its statement open on the reader, and every later read on that
connection saw the snapshot of that moment (CI of stop 18: ``grctl list`` missed three runs
acknowledged after a Ctrl-C in an earlier test). A read is now one job on the connection's
thread (``execute_fetchall``), whole or not at all.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from grctl_daemon.storage.sqlite import SqliteStorage

BULK = 20_000  # enough rows that a load spans many reads
PROBES = 60


def _insert(conn: sqlite3.Connection, i: int, workflow_type: str) -> str:
    run_id = f"r{i:08d}"
    conn.execute(
        "INSERT INTO runs (run_id, workflow_id, workflow_type, status, created_ms, updated_ms) "
        "VALUES (?, ?, ?, 'completed', ?, ?)",
        (run_id, f"w{i}", workflow_type, i, i),
    )
    return run_id


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[tuple[SqliteStorage, sqlite3.Connection]]:
    """The real storage on ``path``, and a second connection that commits as the writer does."""
    storage = SqliteStorage(path)
    await storage.open()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA busy_timeout = 5000")
    try:
        yield storage, writer
    finally:
        writer.close()
        await storage.close()


def test_a_read_during_a_load_sees_what_was_committed_before_it(tmp_path: Path) -> None:
    async def go() -> tuple[int, list[str]]:
        async with opened(tmp_path / "grctl.db") as (storage, writer):
            writer.execute("BEGIN")
            bulk = [_insert(writer, i, "Bulk") for i in range(BULK)]
            writer.execute("COMMIT")
            done = asyncio.Event()

            async def keep_loading() -> int:
                loads = 0
                while not done.is_set():
                    assert len(await storage.load_runs(bulk)) == BULK
                    loads += 1
                return loads

            loading = asyncio.create_task(keep_loading())
            missed = []
            for k in range(PROBES):
                run_id = _insert(writer, BULK + k, "Probe")  # committed (autocommit) here
                newest = await storage.list_workflows(None, "Probe", 1)
                if [r.run_id for r in newest] != [run_id]:
                    missed.append(run_id)
                await asyncio.sleep(0.002)  # let the load move on between probes
            done.set()
            return await loading, missed

    loads, missed = asyncio.run(go())
    assert loads >= 1, "the load never ran, so the probes proved nothing"
    assert missed == [], f"{len(missed)} of {PROBES} committed runs were not listed"


def test_a_read_after_cancelled_reads_sees_what_was_committed(tmp_path: Path) -> None:
    async def go() -> list[int]:
        async with opened(tmp_path / "grctl.db") as (storage, writer):
            writer.execute("BEGIN")
            for i in range(2_000):
                _insert(writer, i, "Bulk")
            writer.execute("COMMIT")
            missed = []
            for k in range(PROBES):
                read = asyncio.ensure_future(storage.list_workflows(None, "Bulk", 1_000))
                for _ in range(k % 4):  # cancelled at each point of the read in turn
                    await asyncio.sleep(0)
                read.cancel()
                await asyncio.gather(read, return_exceptions=True)
                run_id = _insert(writer, 10_000 + k, "Probe")
                newest = await storage.list_workflows(None, "Probe", 1)
                if [r.run_id for r in newest] != [run_id]:
                    missed.append(k)
            return missed

    missed = asyncio.run(go())
    assert missed == [], f"{len(missed)} of {PROBES} reads after a cancelled one were stale"
