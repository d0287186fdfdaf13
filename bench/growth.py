"""The ``growth`` workload: chain throughput with 10k, 100k and 1M finished steps in the database.

Running a million steps would take longer than the whole benchmark may, so the finished runs are
made with SQL instead: one real BenchChain run is executed first (by the real daemon and worker,
so its rows are exactly what grctl writes), then, with the daemon stopped, every row of that run
(runs, history, store, any other table keyed by run_id) is cloned N times under new run_ids in
one transaction. The schema is whatever the real storage module created and migrated (it is
opened once through ``SqliteStorage`` to check that); the clone discovers the tables and their
columns from the database itself, so it follows schema changes. Clones get ids that sort before
real ULIDs and older timestamps, as an older history would have.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench import workloads
from bench.harness import Stack

SEED_PREFIX = "00SEED"  # ULIDs start with a timestamp digit ≥ 0: "00S…" sorts before today's


def finished_steps(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT COUNT(*) FROM history WHERE kind = 'step_completed'"
        ).fetchone()[0]
    finally:
        conn.close()


async def _check_schema(db: Path) -> None:
    from grctl_daemon.storage.sqlite import SqliteStorage

    storage = SqliteStorage(db)
    await storage.open()
    await storage.close()


def seed(db: Path, template_run_id: str, first: int, count: int) -> float:
    """Clone every row of ``template_run_id`` ``count`` times (clone numbers from ``first``)."""
    asyncio.run(_check_schema(db))
    t0 = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        # A bulk load into a throw-away benchmark database: no journal, no fsync.
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA synchronous = OFF")
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        template = conn.execute(
            "SELECT created_ms FROM runs WHERE run_id = ?", (template_run_id,)
        ).fetchone()
        if template is None:
            raise RuntimeError(f"template run {template_run_id} not found in {db}")
        last = first + count - 1
        new_id = f"printf('{SEED_PREFIX}%020d', c.x)"
        conn.execute("BEGIN")
        for table in tables:
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            if "run_id" not in columns:
                continue
            exprs = []
            for col in columns:
                if col == "run_id":
                    exprs.append(new_id)
                elif table == "runs" and col == "workflow_id":
                    exprs.append("printf('seed-%d', c.x)")
                elif table == "runs" and col in ("created_ms", "updated_ms", "ended_ms"):
                    # Older than the template, one millisecond apart, in clone order.
                    exprs.append(f"t.{col} - ({last} + 1 - c.x)")
                else:
                    exprs.append(f"t.{col}")
            conn.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"WITH RECURSIVE c(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
                f"SELECT {', '.join(exprs)} FROM c, {table} t WHERE t.run_id = ? "
                f"ORDER BY c.x",
                (first, last, template_run_id),
            )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    return time.perf_counter() - t0


async def _template(stack: Stack, steps: int) -> str:
    client = await stack.client()
    try:
        handle = await client.start_workflow("BenchChain", "growth-template", {"steps": steps})
        await handle.result()
        assert handle.run_id is not None
        return handle.run_id
    finally:
        await client.close()


def growth(
    levels: list[int], runs: int, steps: int, rounds: int = 2, synchronous: str = "FULL"
) -> dict[str, Any]:
    """Chain steps/s (best of ``rounds``) after each level of finished steps in the database."""
    with Stack(synchronous) as stack:
        template = asyncio.run(_template(stack, steps))
        stack.stop()
        db = stack.db
        clones = 0
        points: list[dict[str, float]] = []
        for level in levels:
            have = finished_steps(db)
            add = max(0, math.ceil((level - have) / steps))
            seed_s = seed(db, template, clones + 1, add) if add else 0.0
            clones += add
            seeded_steps = finished_steps(db)
            stack.start()
            try:
                asyncio.run(workloads.chain(stack, max(runs // 10, 1), steps))  # warm up
                best: dict[str, float] | None = None
                for _ in range(rounds):
                    m = asyncio.run(workloads.chain(stack, runs, steps))
                    if best is None or m["steps_per_s"] > best["steps_per_s"]:
                        best = m
                assert best is not None
                lat = asyncio.run(workloads.latency(stack, 50, steps, 5.0))
            finally:
                stack.stop()
            points.append(
                {
                    "level": level,
                    "finished_steps": seeded_steps,
                    "seeded_runs": clones,
                    "seed_s": seed_s,
                    "database_mb": sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
                    / 2**20,
                    "steps_per_s": best["steps_per_s"],
                    "daemon_cpu_us_per_step": best.get("daemon_cpu_us_per_step", 0.0),
                    "latency_p50_ms": lat["p50_ms"],
                }
            )
    first, last = points[0]["steps_per_s"], points[-1]["steps_per_s"]
    out: dict[str, Any] = {
        "runs": runs,
        "steps": steps,
        "seeded_with_sql": True,
        "points": points,
        "ratio_last_first": last / first,
        "degradation_pct": max(0.0, 100 * (1 - last / first)),
        "within_20pct": last >= 0.8 * first,
    }
    for p in points:
        out[f"steps_per_s_at_{p['level']}"] = p["steps_per_s"]
    return out
