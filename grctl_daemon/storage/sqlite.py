"""The SQLite backend: group commit on the event loop, two aiosqlite readers.

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
aiosqlite connection on its own thread, which WAL lets run alongside the writer: each is one
statement outside any transaction, so it sees every unit committed before it began. Loads of
runs into memory read five tables in one transaction, on a second connection: on the first,
the reads that ran meanwhile would have seen that transaction's older snapshot.

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
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite

from grctl import _faults as faults
from grctl_daemon.storage import base as rec
from grctl_daemon.storage.group_commit import GroupCommit, Outcomes
from grctl_daemon.storage.sqlite_reads import SqliteReads
from grctl_daemon.storage.sqlite_rows import SCHEMA_VERSION, apply_batch, apply_op, migrate

__all__ = ["SCHEMA_VERSION", "SqliteStorage"]


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


class SqliteStorage(SqliteReads, GroupCommit):
    """Storage on one SQLite file in WAL mode."""

    hint = FULL_HINT

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        GroupCommit.__init__(self)
        self.path = path
        self.database = str(path)
        self.synchronous = synchronous
        self._wconn: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._loader: aiosqlite.Connection | None = None
        self._load_lock = asyncio.Lock()
        # One daemon owns a SQLite database, so every partition: there is no cluster.
        self.owned = frozenset(range(rec.PARTITIONS))
        self.holder = f"{socket.gethostname()}:{os.getpid()}"

    def on_ownership(self, gained: Any, releasing: Any) -> None:
        return None  # ownership never changes

    def members(self) -> list[rec.Member]:
        return []

    def owner_of(self, partition: int) -> rec.Member | None:
        return None

    async def refresh(self) -> None:
        return None

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        self._open_writer()  # start-up: migrations run here, before anything is served
        self._reader = await aiosqlite.connect(str(self.path))
        # Loads read a run's parts in one transaction (one committed state); on a connection of
        # their own, so that a read issued meanwhile is never inside that older snapshot.
        self._loader = await aiosqlite.connect(str(self.path))
        for conn in (self._reader, self._loader):
            await conn.execute("PRAGMA query_only = ON")
            # A first read opens the connection's WAL files: now, not in the middle of serving.
            await conn.execute_fetchall("SELECT COUNT(*) FROM sqlite_master")
        self.start_writer()

    def _open_writer(self) -> None:
        fresh = not self.path.exists()
        conn = sqlite3.connect(str(self.path), isolation_level=None)
        if fresh:
            os.chmod(self.path, 0o600)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA busy_timeout = 5000")
        migrate(conn, self.path)
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

    async def close(self) -> None:
        """Finish every queued commit (waiting a little for space), then close."""
        await self.stop_writer()
        for conn in (self._reader, self._loader):
            if conn is not None:
                await conn.close()
        self._reader = self._loader = None
        if self._wconn is not None:
            conn, self._wconn = self._wconn, None
            conn.close()

    def _transient(self, exc: BaseException) -> bool:
        return _disk_full(exc)

    def describe(self) -> dict[str, Any]:
        size = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                size += os.path.getsize(f"{self.path}{suffix}")
            except OSError:
                pass
        free_pages = page_size = None
        if self._wconn is not None:  # two header reads: no transaction, no lock
            (free_pages,) = self._wconn.execute("PRAGMA freelist_count").fetchone()
            (page_size,) = self._wconn.execute("PRAGMA page_size").fetchone()
        return {
            "backend": "sqlite",
            "database": str(self.path),
            "database_bytes": size,
            # Pages freed by deletes (retention) that new rows reuse before the file grows.
            "free_pages": free_pages,
            "page_size": page_size,
            "synchronous": self.synchronous,
            "epoch": self.epoch,
        }

    async def _write_batch(self, units: list[list[rec.Op]]) -> Outcomes:
        # On the loop's own thread, on purpose (see the top of this module).
        return self._write_sync(units)

    def _write_sync(self, units: list[list[rec.Op]]) -> Outcomes:
        conn = self._wconn
        assert conn is not None
        outcomes: list[Exception | None] = []
        started = time.perf_counter()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            self._check_epoch(cur)
            if faults.FAIL_ARMED and faults.fail_due("commit"):
                raise sqlite3.OperationalError("disk I/O error (injected by GRCTL_FAIL_AT)")
            try:
                # Optimistic: units are almost never refused, so no savepoint per unit...
                apply_batch(cur, units)
                outcomes = [None] * len(units)
            except sqlite3.IntegrityError:
                # ...and when one is (a second run of a workflow_id), redo the batch with one
                # savepoint per unit so that only that unit is refused.
                cur.execute("ROLLBACK")
                cur.execute("BEGIN IMMEDIATE")
                self._check_epoch(cur)  # the lock was let go for a moment
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

    def _check_epoch(self, cur: sqlite3.Cursor) -> None:
        """Inside the transaction: this daemon still owns the database (no newer one opened it)."""
        (epoch,) = cur.execute("SELECT epoch FROM owner WHERE id = 1").fetchone()
        if epoch != self.epoch:
            raise rec.Fenced(
                f"another daemon opened {self.path} (epoch {epoch}, ours {self.epoch}); "
                "this one may no longer write it"
            )

    @staticmethod
    def _write_unit(cur: sqlite3.Cursor, ops: list[rec.Op]) -> Exception | None:
        cur.execute("SAVEPOINT unit")
        try:
            for op in ops:
                apply_op(cur, op)
        except sqlite3.IntegrityError as exc:
            cur.execute("ROLLBACK TO unit")
            return rec.UnitRefused(str(exc))
        finally:
            cur.execute("RELEASE unit")
        return None
