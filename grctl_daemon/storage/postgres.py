"""The PostgreSQL backend (``--db postgresql://…``): group commit over asyncpg.

Why asyncpg: it speaks the binary protocol from the event loop without a thread, passes arrays
natively (a batch is one ``unnest`` statement per table, so a group commit costs a handful of
round trips whatever its size) and pipelines ``executemany``. It is imported only when a
``postgresql://`` URL is used (``pip install grctl[postgres]``).

Theory of operation
-------------------
One connection writes; a small pool reads. ``commit(ops)`` queues a unit and the shared group
commit (``group_commit.py``) hands the queued units to ``_write_batch`` as one transaction, which
starts by fencing itself (``postgres_cluster.FENCE_SQL``): this daemon is still a member of the
cluster and still holds, at its epoch, every partition the batch touches. If not (its lease ran
out and another member took over) the batch fails with ``Fenced`` before it wrote anything.
Commits are durable: ``synchronous_commit = on`` on the writer. Membership, takeover and
rebalancing are in ``postgres_cluster.py``.

The database going away (a restart, a failover, a network cut) is waited out like a full disk
on SQLite: the writer reconnects and tries the same batch again while the runtime refuses new
work. If the connection broke during COMMIT the batch may have landed: ``members.last_batch``
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
from grctl_daemon.storage.postgres_cluster import FENCE_SQL, Cluster
from grctl_daemon.storage.postgres_reads import PostgresReads
from grctl_daemon.storage.postgres_rows import Stale, apply_batch, apply_unit, migrate

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


class PostgresStorage(PostgresReads, Cluster, GroupCommit):
    """Storage in one PostgreSQL schema, shared with the other daemons of a cluster."""

    hint = "Check that PostgreSQL is up and reachable"

    def __init__(
        self,
        url: str,
        lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
        member: dict[str, Any] | None = None,
    ) -> None:
        GroupCommit.__init__(self)
        self.lease_timeout_s = lease_timeout_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{ULID()}"
        self.epoch = 0  # per partition here: see ``epochs``
        self._init_cluster(member)
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
        await self._join(conn)
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

    async def close(self) -> None:
        await self.stop_writer()
        if self._lease_task is not None:
            self._lease_task.cancel()
        await self._leave()
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
            "member": self.holder,
            "partitions": len(self.owned),
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
        fence = self.fence_args(units)
        outcomes: Outcomes = [None] * len(units)
        try:
            async with conn.transaction():
                await self._fence(conn, batch_no, fence)
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
                await self._fence(conn, batch_no, fence)
                outcomes = [await self._write_unit(conn, ops) for ops in units]
                refused = [i for i, o in enumerate(outcomes) if o is not None]
                await conn.execute(
                    "UPDATE members SET last_refused = $1 WHERE holder = $2", refused, self.holder
                )
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

    async def _fence(
        self, conn: asyncpg.Connection, batch_no: int, fence: tuple[list[int], list[int]]
    ) -> None:
        """Inside the transaction: we still hold what the batch touches; the batch is numbered."""
        status = await conn.execute(FENCE_SQL, batch_no, self.holder, *fence)
        if status != "UPDATE 1":
            raise rec.Fenced(
                f"this daemon no longer holds partition(s) {fence[0]} of {self.database} "
                "(another member took them over after its lease ran out); it may not commit"
            )

    async def _landed(self, conn: asyncpg.Connection, count: int) -> Outcomes | None:
        """After a lost connection: the outcomes of the batch if it committed, else None."""
        row = await conn.fetchrow(
            "SELECT last_batch, last_refused FROM members WHERE holder = $1", self.holder
        )
        if row is None or row["last_batch"] != self._batch_no + 1:
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
