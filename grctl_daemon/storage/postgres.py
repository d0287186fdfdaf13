"""The PostgreSQL backend (``--db postgresql://…``): group commit over asyncpg.

Why asyncpg: it speaks the binary protocol from the event loop without a thread, passes arrays
natively (a batch is one ``unnest`` statement per table, so a group commit costs a handful of
round trips whatever its size) and pipelines ``executemany``. It is imported only when a
``postgresql://`` URL is used (``pip install grctl[postgres]``).

Theory of operation
-------------------
One connection writes; a small pool reads. ``commit(ops)`` queues a unit and the shared group
commit (``group_commit.py``) hands the queued units to ``_write_batch`` as one transaction, which
starts by fencing itself: ``UPDATE owner SET last_batch = n WHERE epoch = ours``. A daemon that
opened the database later bumped the epoch, so the update matches no row and the batch fails
with ``Fenced`` before it wrote anything; the row lock it takes also orders that check against
a takeover in progress. Commits are durable: ``synchronous_commit = on`` on the writer.

The database going away (a restart, a failover, a network cut) is waited out like a full disk
on SQLite: the writer reconnects and tries the same batch again while the runtime refuses new
work. If the connection broke during COMMIT the batch may have landed: ``owner.last_batch``
(and ``last_refused``, the units refused in it) says so, and the batch is not written twice.
Reads that fail meanwhile answer ``storage_unavailable``.

The URL's ``schema`` parameter (default ``grctl``) names the PostgreSQL schema that holds the
tables; the daemon creates it, and the tables, when missing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
from ulid import ULID

from grctl import _faults as faults
from grctl_daemon.storage import base as rec
from grctl_daemon.storage import display
from grctl_daemon.storage.group_commit import GroupCommit, Outcomes
from grctl_daemon.storage.postgres_reads import PostgresReads
from grctl_daemon.storage.postgres_rows import DB_NOW_MS, Stale, apply_batch, apply_unit, migrate

DEFAULT_SCHEMA = "grctl"
DEFAULT_LEASE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0
READ_POOL = 4
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Tests: while the file this names exists, every commit fails as a full disk makes it fail.
_FAULT_FILE = os.environ.get("GRCTL_FAULT_DISK_FULL") or None

log = logging.getLogger("grctl.daemon.storage")

# The database went away or cannot take writes for now: wait, reconnect, try again.
_TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
)


def split_url(url: str) -> tuple[str, str]:
    """The DSN asyncpg takes, and the schema the ``schema`` query parameter names."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = dict(query).get("schema") or DEFAULT_SCHEMA
    if not _SCHEMA_NAME.fullmatch(schema):
        raise rec.StorageError(
            f"--db {display(url)}: schema {schema!r} is not a plain PostgreSQL name "
            "(letters, digits and _, at most 63)"
        )
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    scheme = "postgresql" if parts.scheme in ("postgresql", "postgres") else parts.scheme
    return parts._replace(scheme=scheme, query=rest).geturl(), schema


class PostgresStorage(PostgresReads, GroupCommit):
    """Storage in one PostgreSQL schema."""

    hint = "Check that PostgreSQL is up and reachable"

    def __init__(self, url: str, lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S) -> None:
        GroupCommit.__init__(self)
        self.lease_timeout_s = lease_timeout_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{ULID()}"
        self._lease_task: asyncio.Task[None] | None = None
        self.url = url
        self.dsn, self.schema = split_url(url)
        self.database = display(url)
        self._writer: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._batch_no = 0  # the batches committed under our epoch
        self._retrying = False  # the batch being written failed once: did it land?
        self._settings = {"search_path": self.schema}

    # -- lifecycle ------------------------------------------------------------------------------

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self.dsn,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={
                **self._settings,
                "synchronous_commit": "on",
                # A daemon paused inside a transaction (SIGSTOP, a VM freeze) would hold the
                # owner row's lock, and a standby could never take over: the server ends such
                # a session once the lease is over. Our transactions are never idle that long.
                "idle_in_transaction_session_timeout": str(int(self.lease_timeout_s * 1000)),
            },
        )

    async def open(self) -> None:
        try:
            conn = await self._connect()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise rec.StorageError(
                f"cannot reach PostgreSQL at {self.database}: {exc}; check the URL, that the "
                "server runs and that it accepts this user"
            ) from None
        await migrate(conn, self.schema)
        self.epoch = await self._take_ownership(conn)
        self._writer = conn
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=0,  # no background reconnects (asyncpg logs each with a traceback)
            max_size=READ_POOL,
            timeout=CONNECT_TIMEOUT_S,
            server_settings=self._settings,
        )
        self._lease_task = asyncio.create_task(self._keep_lease(), name="grctl-lease")
        self.start_writer()

    async def _take_ownership(self, conn: asyncpg.Connection) -> int:
        """Take the database under a lease and a new epoch; wait while another daemon holds it.

        A daemon still writing under an older epoch is fenced from then on. A daemon that holds
        the lease renews it (``_keep_lease``); when it dies or stops renewing, the lease runs out
        after ``lease_timeout_s`` and a standby takes over here.
        """
        await conn.execute(
            "INSERT INTO owner (id, epoch) VALUES (1, 0) ON CONFLICT (id) DO NOTHING"
        )
        waiting = False
        while True:
            epoch = await conn.fetchval(
                "UPDATE owner SET epoch = epoch + 1, holder = $1, last_batch = 0, "
                f"last_refused = '{{}}', lease_until_ms = {DB_NOW_MS} + $2 "
                f"WHERE id = 1 AND (holder IS NULL OR lease_until_ms < {DB_NOW_MS}) "
                "RETURNING epoch",
                self.holder,
                int(self.lease_timeout_s * 1000),
            )
            if epoch is not None:
                if waiting:
                    log.info("took %s over (epoch %d)", self.database, epoch)
                return int(epoch)
            if not waiting:
                row = await conn.fetchrow(
                    f"SELECT holder, lease_until_ms - {DB_NOW_MS} AS left_ms FROM owner"
                )
                log.info(
                    "standing by: %s is held by daemon %s (lease ends in %d ms unless renewed)",
                    self.database,
                    row["holder"],
                    row["left_ms"],
                )
                waiting = True
            await asyncio.sleep(self.lease_timeout_s / 4)

    async def _keep_lease(self) -> None:
        """Renew the lease a few times per lease period; losing it stops the daemon."""
        period = self.lease_timeout_s / 3
        while True:
            await asyncio.sleep(period)
            try:
                assert self._pool is not None
                renewed = await self._pool.fetchval(
                    f"UPDATE owner SET lease_until_ms = {DB_NOW_MS} + $1 "
                    "WHERE id = 1 AND epoch = $2 AND holder = $3 RETURNING epoch",
                    int(self.lease_timeout_s * 1000),
                    self.epoch,
                    self.holder,
                )
            except Exception as exc:  # the database is away: commits wait, the lease may run out
                log.warning("could not renew the lease on %s: %s", self.database, exc)
                continue
            if renewed is None:
                self.failed = rec.CommitFailed(
                    f"daemon lost {self.database} to another daemon (its lease ran out)"
                )
                log.critical("%s; stopping", self.failed)
                self.lost.set()
                return

    async def close(self) -> None:
        await self.stop_writer()
        if self._lease_task is not None:
            self._lease_task.cancel()
        if self._pool is not None and self.failed is None:
            try:  # a clean stop hands the database over at once
                await self._pool.execute(
                    "UPDATE owner SET holder = NULL, lease_until_ms = 0 WHERE id = 1 AND epoch = $1",
                    self.epoch,
                )
            except (OSError, asyncpg.PostgresError, TimeoutError):
                pass
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
        if self._writer is not None:
            conn, self._writer = self._writer, None
            try:
                await conn.close(timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                conn.terminate()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "postgresql",
            "database": self.database,
            "schema": self.schema,
            "database_bytes": None,
            "synchronous": "synchronous_commit=on",
            "epoch": self.epoch,
            "holder": self.holder,
            "lease_timeout_s": self.lease_timeout_s,
        }

    # -- writes ---------------------------------------------------------------------------------

    def _transient(self, exc: BaseException) -> bool:
        # An InterfaceError or InternalClientError here means the connection is unusable: the
        # server ended it while it was idle (a restart sends FATAL between our batches, which
        # leaves asyncpg's protocol state broken). A fresh connection is the cure.
        if isinstance(exc, _TRANSIENT) or isinstance(
            exc, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError
        ):
            self._retrying = True
            if self._writer is not None:
                self._writer.terminate()
                self._writer = None
            return True
        return False

    async def _write_batch(self, units: list[list[rec.Op]]) -> Outcomes:
        if self._writer is None:
            self._writer = await self._connect()
        conn = self._writer
        if self._retrying:
            landed = await self._landed(conn, len(units))
            if landed is not None:
                self._retrying = False
                return landed
        started = time.perf_counter()
        batch_no = self._batch_no + 1
        outcomes: Outcomes = [None] * len(units)
        try:
            async with conn.transaction():
                await self._fence(conn, batch_no)
                if faults.FAIL_ARMED and faults.fail_due("commit"):
                    raise rec.StorageError("disk I/O error (injected by GRCTL_FAIL_AT)")
                if _FAULT_FILE is not None and os.path.exists(_FAULT_FILE):
                    raise asyncpg.exceptions.DiskFullError("could not extend file: No space left")
                # Optimistic: units are almost never refused, so no savepoint per unit.
                await apply_batch(conn, units)
                if faults.ARMED:
                    faults.hit("before_commit")
                committing = time.perf_counter()
        except (asyncpg.UniqueViolationError, Stale):
            # A unit was refused and the transaction is void: redo the batch with one
            # savepoint per unit, so that unit alone is refused.
            async with conn.transaction():
                await self._fence(conn, batch_no)
                outcomes = [await self._write_unit(conn, ops) for ops in units]
                refused = [i for i, o in enumerate(outcomes) if o is not None]
                await conn.execute("UPDATE owner SET last_refused = $1 WHERE id = 1", refused)
                if faults.ARMED:
                    faults.hit("before_commit")
                committing = time.perf_counter()
        done = time.perf_counter()
        self._batch_no = batch_no
        self._retrying = False
        self.write_s += done - started
        self.commit_s += done - committing
        if faults.ARMED:
            faults.hit("after_commit")
        return outcomes

    async def _fence(self, conn: asyncpg.Connection, batch_no: int) -> None:
        """Inside the transaction: we still own the database, and this batch is numbered."""
        status = await conn.execute(
            "UPDATE owner SET last_batch = $1, last_refused = '{}' WHERE id = 1 AND epoch = $2",
            batch_no,
            self.epoch,
        )
        if status != "UPDATE 1":
            epoch = await conn.fetchval("SELECT epoch FROM owner WHERE id = 1")
            raise rec.Fenced(
                f"another daemon opened {self.database} (epoch {epoch}, ours {self.epoch}); "
                "this one may no longer write it"
            )

    async def _landed(self, conn: asyncpg.Connection, count: int) -> Outcomes | None:
        """After a lost connection: the outcomes of the batch if it committed, else None."""
        row = await conn.fetchrow("SELECT epoch, last_batch, last_refused FROM owner WHERE id = 1")
        if row is None or row["epoch"] != self.epoch or row["last_batch"] != self._batch_no + 1:
            return None
        log.info("the batch written when the connection broke had committed; not writing it again")
        self._batch_no += 1
        refused = set(row["last_refused"])
        return [
            rec.UnitRefused("refused (found after a reconnect)") if i in refused else None
            for i in range(count)
        ]

    @staticmethod
    async def _write_unit(conn: asyncpg.Connection, ops: list[rec.Op]) -> Exception | None:
        try:
            async with conn.transaction():
                await apply_unit(conn, ops)
        except (asyncpg.UniqueViolationError, Stale) as exc:
            return rec.UnitRefused(str(exc))
        return None
