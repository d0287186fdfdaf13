"""``--db postgresql://…``: the PostgreSQL side of a Stack, seen from a connection of our own.

The daemon writes its own schema (``?schema=bench_<pid>_<n>``, fresh per Stack, dropped after)
and tags its connections with ``application_name``, which asyncpg takes from the URL's query.
That tag is how we find the server processes that serve it (``pg_stat_activity``), whose CPU we
read from /proc like the daemon's and the worker's: ``postgres`` is those backends; ``postgres
aux`` the server's own processes (postmaster, WAL writer, checkpointer, background writer,
autovacuum), shared with anyone else on the server but working for us while the bench runs.

Counters (``counters()``), read before and after a workload:

* ``xact_commit`` of ``pg_stat_database``: every transaction committed in the database, read
  or write. A backend publishes its counts at most once a second while busy and, once idle,
  only after ``PGSTAT_IDLE_INTERVAL`` (10 s in PostgreSQL 15); ``pg_stat_force_next_flush()``
  flushes the calling backend's only, not the daemon's. So ``settle()`` waits that long first.
* the next transaction id (``pg_current_snapshot``): one per transaction, or savepoint, that
  wrote; exact at once, but counted over the whole server.
* the WAL position: bytes of WAL written, server-wide.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

# PostgreSQL 15's PGSTAT_IDLE_INTERVAL (an idle backend publishes its pending stats after it),
# plus a margin.
STATS_SETTLE_S = 11.0
PROBE_APP = "grctl-bench-probe"
_schemas = itertools.count()


def is_postgres(url: str | None) -> bool:
    return bool(url) and urlsplit(url).scheme in ("postgresql", "postgres")


def with_query(url: str, **params: str) -> str:
    """``url`` with these query parameters set (replacing any of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return parts._replace(query=urlencode([*query, *params.items()])).geturl()


def without_query(url: str, *names: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
    return parts._replace(query=urlencode(query)).geturl()


def fresh_schema() -> str:
    return f"bench_{os.getpid()}_{next(_schemas)}"


class PgProbe:
    """One asyncpg connection on a thread of its own, so that sync code can query any time."""

    def __init__(self, url: str) -> None:
        import asyncpg  # only with --db postgresql://…

        self.statements = 0
        self.dsn = without_query(url, "schema", "application_name")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._conn = self._run(
            asyncpg.connect(self.dsn, server_settings={"application_name": PROBE_APP})
        )
        self.database: str = self.val("SELECT current_database()")
        self.version: str = self.val("SHOW server_version")
        self.synchronous_commit: str = self.val("SHOW synchronous_commit")
        self.fsync: str = self.val("SHOW fsync")

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def rows(self, sql: str, *args: Any) -> list[Any]:
        self.statements += 1  # each one a transaction of its own (autocommit)
        return self._run(self._conn.fetch(sql, *args))

    def val(self, sql: str, *args: Any) -> Any:
        self.statements += 1
        return self._run(self._conn.fetchval(sql, *args))

    def close(self) -> None:
        try:
            self._run(self._conn.close(timeout=2))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def drop_schema(self, schema: str) -> None:
        self.statements += 1
        self._run(self._conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    def backends(self, application_name: str) -> list[int]:
        """The server processes serving connections tagged ``application_name``."""
        return [
            r["pid"]
            for r in self.rows(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1", application_name
            )
        ]

    def aux(self) -> list[int]:
        """The server's own processes: postmaster, WAL writer, checkpointer, autovacuum…"""
        pids = [
            r["pid"]
            for r in self.rows(
                "SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'"
            )
        ]
        if pids:
            postmaster = _ppid(pids[0])
            if postmaster:
                pids.append(postmaster)
        return pids

    def counters(self) -> dict[str, int]:
        self.val("SELECT pg_stat_force_next_flush()")  # our own backend's pending counts
        ours = self.statements  # the read below is counted by the next read, if any
        row = self.rows(
            "SELECT xact_commit, xact_rollback, "
            "pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid, "
            "pg_current_wal_lsn() - '0/0'::pg_lsn AS wal_bytes "
            "FROM pg_stat_database WHERE datname = current_database()"
        )[0]
        out = {k: int(row[k]) for k in ("xact_commit", "xact_rollback", "next_xid", "wal_bytes")}
        return {**out, "probe_xacts": ours, "other_clients": self.other_clients()}

    def other_clients(self) -> int:
        """Client connections to the database that are neither the probe nor a bench daemon's."""
        return int(
            self.val(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND application_name NOT LIKE 'grctl-bench_%'"
            )
        )


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def counter_delta(
    before: dict[str, int], stop: dict[str, int], settled: dict[str, int], steps: int
) -> dict[str, float]:
    """The counters' growth over a workload of ``steps`` steps, per step.

    ``before`` is read (settled) just before the workload, ``stop`` just after it, ``settled``
    once the backends have published their counts. Transaction ids and WAL come from
    ``before`` → ``stop``, the workload alone; ``xact_commit`` from ``before`` → ``settled``,
    which also holds whatever other clients of the database did during the settle. The probe's
    own transactions in between (its CPU and counter reads) are taken out of ``xact_commit``.
    """
    steps = max(steps, 1)
    probe = settled["probe_xacts"] - before["probe_xacts"]
    xact = settled["xact_commit"] - before["xact_commit"] - probe
    return {
        "pg_xact_commit": xact,
        "pg_xact_commit_per_step": xact / steps,
        "pg_xact_rollback": settled["xact_rollback"] - before["xact_rollback"],
        "pg_write_xids": stop["next_xid"] - before["next_xid"],
        "pg_write_xids_per_step": (stop["next_xid"] - before["next_xid"]) / steps,
        "pg_wal_bytes_per_step": (stop["wal_bytes"] - before["wal_bytes"]) / steps,
        "pg_other_clients": max(before["other_clients"], stop["other_clients"]),
    }
