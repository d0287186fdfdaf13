"""Several daemons on one PostgreSQL database: members, partition leases, takeover, rebalancing.

Every daemon is a *member*: a row in ``members`` that it renews every third of the lease
(``--lease-timeout``). Runs are spread over ``PARTITIONS`` partitions (``partitions``: one row
each, with its ``holder`` and an ``epoch`` bumped by every change of hands). A member commits
only for the partitions it holds, and every commit checks it still holds them, inside its own
transaction (``fence_sql``): the member row must still be there (it is updated, so its row lock
orders the check against a takeover) and each partition the batch touches must still be held
at the epoch the member took it with.

Each tick (``_tick``) a member renews its row, then:

- *takeover*: members whose lease ran out (dead, paused, cut off) are deleted and their
  partitions freed with a new epoch. Deleting a member waits for its row lock, which a paused
  member may hold inside a transaction: the server ends such a session after the lease
  (``idle_in_transaction_session_timeout``), and meanwhile the takeover gives up quickly
  (``lock_timeout``) and tries again next tick, so the member's own renewals never wait.
- *balance*: each of the ``n`` live members, in order of joining, is due ``PARTITIONS // n``
  partitions (the first ``PARTITIONS % n`` one more). A member under its due claims free
  partitions (``FOR UPDATE SKIP LOCKED``); a member over it, while another is under and none is
  free, hands its extra partitions back, after the runtime let go of them (``releasing``).

After the database was away (a restart, a failover) every lease may have run out meanwhile:
a member takes nobody over for one lease period after it reaches the database again, so the
others have renewed before anyone counts them dead.

A member that finds its own row gone was taken over: it has lost its partitions, and stops
(``lost``). Membership changes are not announced (no LISTEN/NOTIFY): a tick every third of a
lease is soon enough for takeover and rebalancing, and costs two or three statements.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from grctl import codec
from grctl_daemon.storage import base as rec
from grctl_daemon.storage.base import PARTITIONS
from grctl_daemon.storage.postgres_rows import DB_NOW_MS

log = logging.getLogger("grctl.daemon.cluster")

TAKEOVER_LOCK_TIMEOUT = "500ms"
Ownership = Callable[[set[int]], Awaitable[None]]


async def _ignore(_: set[int]) -> None:
    return None


class Cluster:
    """The membership half of ``PostgresStorage`` (a mixin over its connection pool)."""

    holder: str
    database: str
    lease_timeout_s: float
    lost: asyncio.Event
    failed: rec.CommitFailed | None
    _pool: asyncpg.Pool | None

    def _init_cluster(self, member: dict[str, Any] | None) -> None:
        self.member_info = {"host": socket.gethostname(), "socket": None, "address": None}
        self.member_info.update(member or {})
        self.epochs: dict[int, int] = {}  # the partitions we hold → the epoch we took each at
        self.owned: frozenset[int] = frozenset()
        self.status_info: dict[str, Any] = {}  # what other members see of us (daemon status)
        self._members: list[rec.Member] = []
        self._holders: dict[int, str] = {}  # partition → its holder, as last seen
        self._gained: Ownership = _ignore
        self._releasing: Ownership = _ignore
        self._tick_lock = asyncio.Lock()
        self._no_takeover_until = 0.0  # monotonic: after an outage, let the others renew first
        self._slot_rows: dict[str, int] = {}  # type → rows of type_slots known to exist

    def on_ownership(self, gained: Ownership, releasing: Ownership) -> None:
        self._gained, self._releasing = gained, releasing

    # -- joining --------------------------------------------------------------------------------

    async def _join(self, conn: asyncpg.Connection) -> None:
        if self.member_info["socket"]:
            # Our home's previous daemon is dead (we hold the home's lock, which it held until
            # it died): its partitions are ours to take now, not after its lease.
            async with conn.transaction():
                gone = await conn.fetch(
                    "DELETE FROM members WHERE host = $1 AND socket = $2 RETURNING holder",
                    self.member_info["host"],
                    self.member_info["socket"],
                )
                await conn.execute(
                    "UPDATE partitions SET holder = NULL, epoch = epoch + 1 "
                    "WHERE holder = ANY($1::text[])",
                    [r["holder"] for r in gone],
                )
            if gone:
                log.info("took over from this home's previous daemon %s", gone[0]["holder"])
        await conn.execute(
            "INSERT INTO members (holder, host, socket, address, joined_ms, lease_until_ms) "
            f"VALUES ($1, $2, $3, $4, {DB_NOW_MS}, {DB_NOW_MS} + $5)",
            self.holder,
            self.member_info["host"],
            self.member_info["socket"],
            self.member_info["address"],
            int(self.lease_timeout_s * 1000),
        )
        await self._tick(conn)
        log.info(
            "joined %s as member %s: %d of %d partitions, %d member(s)",
            self.database,
            self.holder,
            len(self.owned),
            PARTITIONS,
            len(self._members),
        )

    async def _leave(self) -> None:
        """A clean stop: hand the partitions and the member row back at once."""
        if self._pool is None or self.failed is not None:
            return
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "UPDATE partitions SET holder = NULL, epoch = epoch + 1 WHERE holder = $1",
                    self.holder,
                )
                await conn.execute("DELETE FROM members WHERE holder = $1", self.holder)
                await conn.execute(
                    "UPDATE type_slots SET holder = NULL WHERE holder = $1", self.holder
                )
        except (OSError, asyncpg.PostgresError, TimeoutError):
            pass

    # -- the tick -------------------------------------------------------------------------------

    async def _keep_lease(self) -> None:
        """Tick a few times per lease period; losing the member row stops the daemon."""
        period = self.lease_timeout_s / 3
        while not self.lost.is_set():
            await asyncio.sleep(period)
            try:
                assert self._pool is not None
                async with self._pool.acquire() as conn:
                    await self._tick(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: commits wait, the lease may run out
                log.warning("could not renew the lease on %s: %s", self.database, exc)
                self._no_takeover_until = time.monotonic() + 2 * self.lease_timeout_s

    async def refresh(self) -> None:
        """Read the cluster again now (a forwarded request found the owner moved)."""
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            await self._read_view(conn)

    async def _tick(self, conn: asyncpg.Connection) -> None:
        async with self._tick_lock:
            renewed = await conn.fetchval(
                f"UPDATE members SET lease_until_ms = {DB_NOW_MS} + $2, info = $3 "
                "WHERE holder = $1 RETURNING 1",
                self.holder,
                int(self.lease_timeout_s * 1000),
                codec.pack(self.status_info),
            )
            if renewed is None:
                self._lose("its lease ran out and other members took its partitions over")
                return
            await self._take_over(conn)
            await self._read_view(conn)
            await self._balance(conn)

    def _lose(self, why: str) -> None:
        self.failed = rec.CommitFailed(f"daemon lost its partitions of {self.database}: {why}")
        log.critical("%s; stopping", self.failed)
        self.owned = frozenset()
        self.epochs.clear()
        self.lost.set()

    async def _take_over(self, conn: asyncpg.Connection) -> None:
        """Free the partitions of members whose lease ran out (see the top)."""
        if time.monotonic() < self._no_takeover_until:
            return
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{TAKEOVER_LOCK_TIMEOUT}'")
                dead = await conn.fetch(
                    f"DELETE FROM members WHERE lease_until_ms < {DB_NOW_MS} AND holder <> $1 "
                    "RETURNING holder",
                    self.holder,
                )
                freed = await conn.execute(
                    "UPDATE partitions SET holder = NULL, epoch = epoch + 1 "
                    "WHERE holder IS NOT NULL AND holder NOT IN (SELECT holder FROM members)"
                )
        except asyncpg.LockNotAvailableError:
            return  # a dead member's session still holds its row: next tick
        if dead:
            log.warning(
                "member(s) %s stopped renewing their lease; %s partition(s) freed for takeover",
                ", ".join(r["holder"] for r in dead),
                freed.rsplit(" ", 1)[-1],
            )

    async def _read_view(self, conn: asyncpg.Connection) -> None:
        members = await conn.fetch(
            f"SELECT holder, host, socket, address, joined_ms, lease_until_ms - {DB_NOW_MS} "
            "AS lease_left_ms, info FROM members ORDER BY joined_ms, holder"
        )
        parts = await conn.fetch("SELECT id, holder FROM partitions ORDER BY id")
        self._holders = {r["id"]: r["holder"] for r in parts if r["holder"] is not None}
        held: dict[str, list[int]] = {}
        for pid, holder in self._holders.items():
            held.setdefault(holder, []).append(pid)
        self._members = [
            rec.Member(
                name=r["holder"],
                host=r["host"],
                socket=r["socket"],
                address=r["address"],
                joined_ms=r["joined_ms"],
                lease_left_ms=r["lease_left_ms"],
                partitions=held.get(r["holder"], []),
                info=codec.unpack(r["info"]) if r["info"] else {},
            )
            for r in members
        ]

    async def _balance(self, conn: asyncpg.Connection) -> None:
        names = [m.name for m in self._members]
        if self.holder not in names:
            return
        due = {
            name: PARTITIONS // len(names) + (1 if i < PARTITIONS % len(names) else 0)
            for i, name in enumerate(names)
        }
        mine = sorted(self.epochs)
        free = PARTITIONS - len(self._holders)
        if len(mine) < due[self.holder] and free:
            await self._claim(conn, due[self.holder] - len(mine))
        elif len(mine) > due[self.holder] and not free:
            short = any(len(m.partitions) < due[m.name] for m in self._members)
            if short:
                await self._release(conn, set(mine[due[self.holder] :]))

    async def _claim(self, conn: asyncpg.Connection, count: int) -> None:
        rows = await conn.fetch(
            f"UPDATE partitions SET holder = $1, epoch = epoch + 1, since_ms = {DB_NOW_MS} "
            "WHERE id IN (SELECT id FROM partitions WHERE holder IS NULL ORDER BY id "
            "LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id, epoch",
            self.holder,
            count,
        )
        if not rows:
            return
        gained = {r["id"] for r in rows}
        self.epochs.update({r["id"]: r["epoch"] for r in rows})
        self.owned = frozenset(self.epochs)
        for pid in gained:
            self._holders[pid] = self.holder
        log.info("took %d partition(s) (now %d of %d)", len(gained), len(self.owned), PARTITIONS)
        await self._gained(gained)

    async def _release(self, conn: asyncpg.Connection, ids: set[int]) -> None:
        await self._releasing(ids)  # the runtime let go: nothing of them is left to commit
        for pid in ids:
            self.epochs.pop(pid, None)
        self.owned = frozenset(self.epochs)
        await conn.execute(
            "UPDATE partitions SET holder = NULL, epoch = epoch + 1 "
            "WHERE id = ANY($1::int[]) AND holder = $2",
            sorted(ids),
            self.holder,
        )
        log.info("handed %d partition(s) over for rebalancing", len(ids))

    # -- what the runtime and the server ask ----------------------------------------------------

    def members(self) -> list[rec.Member]:
        return list(self._members)

    def owner_of(self, partition: int) -> rec.Member | None:
        holder = self._holders.get(partition)
        return next((m for m in self._members if m.name == holder), None)

    # -- slots of types with max_concurrent_runs, shared by the members -----------------------

    async def claim_type_slots(self, workflow_type: str, limit: int, count: int) -> list[int]:
        """Take up to ``count`` free rows of the type's ``limit`` (free: no holder, or a holder
        that is no member: taken over, or gone); returns their numbers."""
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            if self._slot_rows.get(workflow_type, 0) < limit:
                await conn.execute(
                    "INSERT INTO type_slots (workflow_type, slot) "
                    "SELECT $1, generate_series(0, $2 - 1) ON CONFLICT DO NOTHING",
                    workflow_type,
                    limit,
                )
                self._slot_rows[workflow_type] = limit
            rows = await conn.fetch(
                "UPDATE type_slots SET holder = $3 WHERE workflow_type = $1 AND slot IN "
                "(SELECT slot FROM type_slots WHERE workflow_type = $1 AND slot < $2 AND "
                "(holder IS NULL OR holder NOT IN (SELECT holder FROM members)) "
                "ORDER BY slot LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING slot",
                workflow_type,
                limit,
                self.holder,
                count,
            )
        return [r["slot"] for r in rows]

    async def release_type_slots(self, workflow_type: str, slots: list[int]) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE type_slots SET holder = NULL "
                "WHERE workflow_type = $1 AND slot = ANY($2::int[]) AND holder = $3",
                workflow_type,
                slots,
                self.holder,
            )

    # -- the fence ------------------------------------------------------------------------------

    def fence_args(self, units: list[list[rec.Op]]) -> tuple[list[int], list[int]]:
        """The partitions a batch touches, with the epochs we hold them at (Fenced if not)."""
        touched: set[int] = set()
        for ops in units:
            for op in ops:
                run = getattr(op, "run", None)
                if run is not None:
                    touched.add(run.partition)
                elif type(op) is rec.DeleteRuns:
                    touched.update(op.partitions)
                elif type(op) in _SCHEDULE_OPS:  # a schedule belongs to a partition too
                    touched.add(op.schedule.partition)
        missing = touched - self.epochs.keys()
        if missing:
            raise rec.Fenced(
                f"a commit touched partition(s) {sorted(missing)} that this daemon does not hold"
            )
        ids = sorted(touched)
        return ids, [self.epochs[i] for i in ids]


_SCHEDULE_OPS = (rec.SaveSchedule, rec.RemoveSchedule)

# Inside every batch's transaction: we are still a member (the row lock orders this against a
# takeover) and still hold each touched partition at our epoch; numbers the batch.
FENCE_SQL = (
    "UPDATE members SET last_batch = $1, last_refused = '{}' WHERE holder = $2 AND "
    "cardinality($3::int[]) = (SELECT count(*) FROM partitions p JOIN unnest($3::int[], "
    "$4::bigint[]) AS o(id, epoch) ON p.id = o.id AND p.epoch = o.epoch WHERE p.holder = $2)"
)
