"""Retention: ended runs past ``--retention`` deleted by the daemon, and ``grctl prune``.

A prune reads the ended runs to delete by the index on ``ended_ms``, ``PRUNE_BATCH_RUNS`` at a
time, on the read side (SQLite's reader thread, a PostgreSQL pool connection), then deletes each
batch as one unit of the group commit (``DeleteRuns``): the step path never waits on more than
one small batch (a few milliseconds; see docs/performance.md), and a running daemon stays the
only writer. Between batches the prune yields to the loop.

Why it is safe beside the step path: an ended run never changes again (every request to it is
refused, a child's end to a gone parent is dropped), and ``DeleteRuns`` deletes only rows still
ended before the cut-off, so a read that has moved on deletes nothing it should not. A deleted
run is dropped from the run cache once the unit is durable, so no reply shows it afterwards.

In a cluster each daemon prunes the runs of the partitions it owns (its commits are fenced on
them), so retention needs no coordination: every partition has an owner that prunes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from grctl import protocol as p
from grctl.errors import InvalidInputError
from grctl_daemon.storage import base as rec
from grctl_daemon.timers import now_ms

if TYPE_CHECKING:
    from grctl_daemon.runtime import Runtime

log = logging.getLogger("grctl.daemon")

PRUNE_BATCH_RUNS = 200  # runs deleted per unit: their rows take a few ms to delete
SHOWN_RUNS = 100
MAX_OLDER_THAN_MS = (
    100 * 365 * 86_400_000
)  # past it, nothing could have ended: a typo  # runs a prune lists in its reply (the counts cover them all)


class Retention:
    """The retention half of the Runtime (a mixin: see ``runtime/__init__.py``)."""

    # For ``daemon status`` and the benchmark: runs deleted, delete units, and the longest a
    # delete unit took from queued to durable (an upper bound on what it cost the step path:
    # it includes the other units of its transaction and the wait for the writer).
    pruned: dict[str, float]

    async def retention_loop(self: Runtime) -> None:
        """Every ``prune_interval_ms``, delete the runs that ended more than retention ago."""
        interval = self.config.prune_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            if self.fault() is not None:
                continue  # commits wait on a fault: deleting can wait too
            try:
                done = await self.prune_runs(self.config.retention_ms, None, None, False)
            except rec.CommitFailed:
                return  # the daemon is stopping
            except Exception as exc:  # a read that failed (a lost connection): try next time
                log.warning("retention: could not delete old runs this time (%s)", exc)
                continue
            if done["removed"]:
                log.info(
                    "retention: deleted %d run(s) that ended more than %ss ago",
                    done["removed"],
                    self.config.retention_ms / 1000,
                )

    async def prune(self: Runtime, m: p.PruneRuns) -> dict[str, Any]:
        if type(m.older_than_ms) is not int or not 0 <= m.older_than_ms <= MAX_OLDER_THAN_MS:
            raise InvalidInputError(
                "--older-than must be a duration from 0 to 100 years (e.g. 30d, 12h, 90m)"
            )
        for name, value in (("--status", m.status), ("--type", m.workflow_type)):
            if value is not None and not isinstance(value, str):
                raise InvalidInputError(f"{name} must be a string")
        if m.status is not None and m.status not in rec.ENDED_STATUSES:
            raise InvalidInputError(
                f"prune deletes ended runs only; --status must be one of "
                f"{', '.join(rec.ENDED_STATUSES)}, not {m.status!r}"
            )
        return await self.prune_runs(m.older_than_ms, m.status, m.workflow_type, m.dry_run)

    async def prune_runs(
        self: Runtime,
        older_than_ms: int,
        status: str | None,
        workflow_type: str | None,
        dry_run: bool,
    ) -> dict[str, Any]:
        """Delete (or with ``dry_run`` count) the matching runs, a batch per unit."""
        before_ms = now_ms() - older_than_ms
        by_status: Counter[str] = Counter()
        by_type: Counter[str] = Counter()
        shown: list[dict[str, Any]] = []
        after: tuple[int, str] | None = None
        removed = 0
        while True:
            owned = frozenset(x for x in self.storage.owned if x not in self.leaving)
            batch = await self.storage.ended_runs(
                before_ms, status, workflow_type, PRUNE_BATCH_RUNS, after, owned
            )
            if not batch:
                break
            after = (batch[-1].ended_ms, batch[-1].run_id)
            full = len(batch) == PRUNE_BATCH_RUNS
            if not dry_run:
                # Checked with no await before the commit is queued: a partition being handed
                # over is in ``leaving`` before its barrier unit, so this unit either precedes
                # the barrier (still ours) or leaves its runs out (a commit touching a
                # partition we no longer hold would stop the daemon).
                batch = [r for r in batch if self.owns(r.partition)]
                ids = [r.run_id for r in batch]
                parts = sorted({r.partition for r in batch})
                if not ids:
                    break
                started = time.perf_counter()
                await self.storage.commit([rec.DeleteRuns(ids, before_ms, parts)])
                took_ms = (time.perf_counter() - started) * 1000
                stats = self.pruned
                stats["runs"] += len(ids)
                stats["units"] += 1
                stats["total_unit_ms"] += took_ms
                stats["max_unit_ms"] = max(stats["max_unit_ms"], took_ms)
                for run_id in ids:
                    state = self.cache.get(run_id)
                    if state is not None and not state.is_active:
                        self.cache.forget(run_id)
            removed += len(batch)
            for r in batch:
                by_status[r.status] += 1
                by_type[r.workflow_type] += 1
                if len(shown) < SHOWN_RUNS:
                    shown.append(
                        {
                            "workflow_id": r.workflow_id,
                            "run_id": r.run_id,
                            "workflow_type": r.workflow_type,
                            "status": r.status,
                            "ended_ms": r.ended_ms,
                        }
                    )
            if not full:
                break
            await asyncio.sleep(0)  # let the step path in between batches
        return {
            "dry_run": dry_run,
            "removed": removed,
            "before_ms": before_ms,
            "by_status": dict(by_status),
            "by_type": dict(by_type),
            "runs": shown,
        }
