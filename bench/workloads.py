"""grctl's workloads, each against a running Stack (daemon + one worker): timed from the client.

Every workload returns a flat dict of numbers. Workflow ids carry a per-process counter so a
workload can run many times against the same daemon.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from typing import Any

from bench.harness import CpuMeter, Stack, percentile, rss_bytes
from bench.pg import counter_delta
from grctl.client import Client, WorkflowHandle

_ids = itertools.count()


def _prefix(name: str) -> str:
    return f"{name}-{next(_ids)}"


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "samples": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms) if ms else 0.0,
    }


async def _commits(client: Client) -> dict[str, float]:
    status = await client.daemon_status()
    return status.get("commits") or {"transactions": 0, "units": 0}


async def _db_counters(stack: Stack) -> dict[str, int]:
    """PostgreSQL's counters once every backend has published its counts; {} on SQLite."""
    if stack.pg is None:
        return {}
    await asyncio.sleep(stack.stats_settle_s)  # see bench/pg.py: idle backends publish after 10 s
    return stack.db_counters()


async def _start_all(
    client: Client, workflow_type: str, prefix: str, n: int, inp: Any, batch: int = 1000
) -> list[WorkflowHandle]:
    handles: list[WorkflowHandle] = []
    for lo in range(0, n, batch):
        handles += await asyncio.gather(
            *(
                client.start_workflow(workflow_type, f"{prefix}-{i}", inp)
                for i in range(lo, min(n, lo + batch))
            )
        )
    return handles


async def chain(stack: Stack, runs: int, steps: int, db_counters: bool = True) -> dict[str, float]:
    """``runs`` runs of ``steps`` read/bump/write steps, all started together.

    On PostgreSQL with ``db_counters`` also the database's transactions and WAL per step, which
    costs two waits of ``stack.stats_settle_s`` (off for warm-ups).
    """
    client = await stack.client()
    try:
        prefix = _prefix("chain")
        meter = CpuMeter(stack)
        db_before = await _db_counters(stack) if db_counters else {}
        before = await _commits(client)
        meter.start()
        handles = await _start_all(client, "BenchChain", prefix, runs, {"steps": steps})
        results = await asyncio.gather(*(h.result() for h in handles))
        meter.stop()
        db_stop = stack.db_counters() if db_before else {}  # xids and WAL: exact at once
        after = await _commits(client)
        db_after = await _db_counters(stack) if db_before else {}  # xact_commit: settled
    finally:
        await client.close()
    assert all(r == steps for r in results), "a chain run returned a wrong count"
    total = runs * steps
    tx = after["transactions"] - before["transactions"]
    units = after["units"] - before["units"]
    # Optional daemon counters (seconds the writer spent in a batch / in COMMIT), if it has them.
    commit_share = {}
    if "write_s" in after:
        commit_share["writer_busy_pct"] = 100 * (after["write_s"] - before["write_s"]) / meter.wall
    if "commit_s" in after:
        commit_share["commit_ms_per_transaction"] = (
            1000 * (after["commit_s"] - before["commit_s"]) / max(tx, 1)
        )
        commit_share["commit_pct"] = 100 * (after["commit_s"] - before["commit_s"]) / meter.wall
    if db_before:
        commit_share.update(counter_delta(db_before, db_stop, db_after, total))
    return {
        "runs": runs,
        "steps": total,
        "seconds": meter.wall,
        "runs_per_s": runs / meter.wall,
        "steps_per_s": total / meter.wall,
        **meter.per_unit_us(total),
        **meter.utilisation(),
        "transactions": tx,
        "units_per_transaction": units / max(tx, 1),
        "transactions_per_step": tx / max(total, 1),
        **commit_share,
    }


async def latency(stack: Stack, samples: int, steps: int, budget_s: float) -> dict[str, float]:
    """One ``steps``-step run at a time, start → result."""
    client = await stack.client()
    prefix = _prefix("lat")
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    try:
        for i in range(samples):
            t0 = time.perf_counter()
            handle = await client.start_workflow("BenchChain", f"{prefix}-{i}", {"steps": steps})
            await handle.result()
            times.append(time.perf_counter() - t0)
            if time.perf_counter() > deadline and len(times) >= 5:
                break
    finally:
        await client.close()
    return summary_ms(times)


async def _until_waiting(handle: WorkflowHandle, deadline_s: float = 10) -> None:
    deadline = time.monotonic() + deadline_s
    while (await handle.describe()).status.value != "waiting":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{handle.workflow_id} never reached 'waiting'")
        await asyncio.sleep(0.001)


async def event(stack: Stack, samples: int, budget_s: float) -> dict[str, float]:
    """A run waiting for an event: send → handler done → result, one at a time."""
    client = await stack.client()
    prefix = _prefix("ev")
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    try:
        for i in range(samples):
            handle = await client.start_workflow("BenchEvent", f"{prefix}-{i}", None)
            await _until_waiting(handle)
            t0 = time.perf_counter()
            await handle.send("go", {"value": i})
            result = await handle.result()
            times.append(time.perf_counter() - t0)
            assert result == i
            if time.perf_counter() > deadline and len(times) >= 5:
                break
    finally:
        await client.close()
    return summary_ms(times)


async def tasks(stack: Stack, runs: int, per_step: int) -> dict[str, float]:
    """``runs`` one-step runs started together, each step calling ``per_step`` recorded tasks."""
    client = await stack.client()
    try:
        # Alone first (median of 3): the cost of one recorded task without contention.
        alone_runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            await (
                await client.start_workflow("BenchTasks", _prefix("task1"), {"n": per_step})
            ).result()
            alone_runs.append(time.perf_counter() - t0)
        alone = statistics.median(alone_runs)
        meter = CpuMeter(stack)
        meter.start()
        handles = await _start_all(client, "BenchTasks", _prefix("tasks"), runs, {"n": per_step})
        results = await asyncio.gather(*(h.result() for h in handles))
        meter.stop()
    finally:
        await client.close()
    assert all(r == per_step for r in results)
    total = runs * per_step
    return {
        "runs": runs,
        "tasks": total,
        "seconds": meter.wall,
        "tasks_per_s": total / meter.wall,
        "one_run_ms": alone * 1000,
        "ms_per_task_alone": alone * 1000 / per_step,
        **{k.replace("_step", "_task"): v for k, v in meter.per_unit_us(total).items()},
        **meter.utilisation(),
    }


async def fanout(stack: Stack, parents: int, children: int) -> dict[str, float]:
    """One parent at a time whose step starts ``children`` child workflows."""
    client = await stack.client()
    prefix = _prefix("fan")
    step_times: list[float] = []
    done_times: list[float] = []
    total_t0 = time.perf_counter()
    try:
        for i in range(parents):
            wid = f"{prefix}-{i}"
            t0 = time.perf_counter()
            await (await client.start_workflow("BenchFanout", wid, {"n": children})).result()
            step_times.append(time.perf_counter() - t0)
            await asyncio.gather(
                *(client.get_workflow_handle(f"{wid}-c{k}").result() for k in range(children))
            )
            done_times.append(time.perf_counter() - t0)
    finally:
        await client.close()
    total = time.perf_counter() - total_t0
    step = summary_ms(step_times)
    done = summary_ms(done_times)
    return {
        "parents": parents,
        "children_per_parent": children,
        "parent_p50_ms": step["p50_ms"],
        "parent_p99_ms": step["p99_ms"],
        "all_children_done_p50_ms": done["p50_ms"],
        "all_children_done_p99_ms": done["p99_ms"],
        "children_per_s": parents * children / total,
    }


async def idle(stack: Stack, runs: int, window_s: float) -> dict[str, float]:
    """``runs`` runs waiting for events; daemon and worker CPU over ``window_s`` and memory."""
    pids = stack.pids()
    rss_before = {k: rss_bytes(p) for k, p in pids.items()}
    client = await stack.client()
    try:
        t0 = time.perf_counter()
        await _start_all(client, "BenchIdle", _prefix("idle"), runs, None, batch=500)
        deadline = time.monotonic() + 120
        while (await client.daemon_status())["runs"].get("waiting", 0) < runs:
            if time.monotonic() > deadline:
                raise RuntimeError("idle runs did not all reach 'waiting'")
            await asyncio.sleep(0.1)
        settle = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # let the last replies and GC settle before the window
        meter = CpuMeter(stack)
        meter.start()
        await asyncio.sleep(window_s)
        meter.stop()
        status = await client.daemon_status()
    finally:
        await client.close()
    rss = {k: rss_bytes(p) for k, p in pids.items()}
    return {
        "runs": runs,
        "window_s": meter.wall,
        "start_to_all_waiting_s": settle,
        "daemon_cpu_s": meter.spent["daemon"],
        "worker_cpu_s": meter.spent["worker"],
        "daemon_cpu_pct": 100 * meter.spent["daemon"] / meter.wall,
        "worker_cpu_pct": 100 * meter.spent["worker"] / meter.wall,
        "daemon_rss_mb": rss["daemon"] / 2**20,
        "worker_rss_mb": rss["worker"] / 2**20,
        "daemon_rss_mb_before": rss_before["daemon"] / 2**20,
        "daemon_rss_kb_per_waiting_run": (rss["daemon"] - rss_before["daemon"]) / 1024 / runs,
        "database_mb": status.get("database_bytes", 0) / 2**20,
    }
