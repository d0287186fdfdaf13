"""The ``retention`` workload: many short runs under a short ``--retention``; does the file stop
growing?

A daemon with ``--retention 1m`` (pruned every 6 s, a tenth of it) runs ``runs`` BenchChain runs
of ``steps`` steps, ``window`` at most at a time, started at a steady ``rate`` per second (so
that 200,000 runs take minutes, several retention periods, not one).
Every ``sample_s`` it records the runs done, the database size (file + WAL) and SQLite's free
pages (pages freed by deletes, reused before the file grows), plus the runs retention deleted
and the longest delete unit (queued → durable, an upper bound on what one delete batch cost the
step path). Once the first minute has passed, the file should stay flat: every run that ends is
deleted a minute later and its pages go to the next runs.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from bench.harness import Stack, percentile
from grctl.client import Client

_ids = itertools.count()


async def _steady(
    client: Client, runs: int, steps: int, window: int, rate: float, sample_s: float, stack: Stack
) -> tuple[list[dict[str, Any]], list[float]]:
    done = 0
    latencies: list[float] = []
    prefix = f"ret-{next(_ids)}"
    t0 = time.perf_counter()
    samples: list[dict[str, Any]] = []
    queue = iter(range(runs))

    async def one_at_a_time() -> None:
        nonlocal done
        for i in queue:
            late = t0 + i / rate - time.perf_counter()  # run i starts at i / rate: paced
            if late > 0:
                await asyncio.sleep(late)
            started = time.perf_counter()
            h = await client.start_workflow("BenchChain", f"{prefix}-{i}", {"steps": steps})
            assert await h.result() == steps
            latencies.append(time.perf_counter() - started)
            done += 1

    async def sample() -> None:
        while True:
            status = await client.daemon_status()
            backend = status.get("backend", {})
            pruned = status.get("retention", {})
            samples.append(
                {
                    "elapsed_s": round(time.perf_counter() - t0, 1),
                    "runs_done": done,
                    "runs_in_db": sum(status.get("runs", {}).values()),
                    "file_mb": round(
                        sum(p.stat().st_size for p in stack.db.parent.glob(stack.db.name + "*"))
                        / 2**20,
                        2,
                    ),
                    "free_pages": backend.get("free_pages"),
                    "pruned_runs": pruned.get("runs", 0),
                    "max_delete_unit_ms": pruned.get("max_unit_ms", 0.0),
                }
            )
            await asyncio.sleep(sample_s)

    sampler = asyncio.ensure_future(sample())
    try:
        await asyncio.gather(*(one_at_a_time() for _ in range(window)))
    finally:
        sampler.cancel()
    return samples, latencies


def retention(
    runs: int = 200_000,
    steps: int = 2,
    window: int = 200,
    rate: float = 800.0,
    retention: str = "1m",
    sample_s: float = 15.0,
    synchronous: str = "FULL",
) -> dict[str, Any]:
    """Run the workload on a fresh SQLite Stack; the size table and the latency of runs."""
    with Stack(synchronous, daemon_args=["--retention", retention]) as stack:
        t0 = time.perf_counter()

        async def go() -> tuple[list[dict[str, Any]], list[float], dict[str, Any]]:
            client = await stack.client()
            try:
                samples, lat = await _steady(client, runs, steps, window, rate, sample_s, stack)
                return samples, lat, await client.daemon_status()
            finally:
                await client.close()

        samples, lat, final = asyncio.run(go())
        wall = time.perf_counter() - t0
    ms = [x * 1000 for x in lat]
    pruned = final.get("retention", {})
    after_first = [s["file_mb"] for s in samples if s["elapsed_s"] >= 120]
    return {
        "runs": runs,
        "steps": steps,
        "window": window,
        "rate_asked": rate,
        "retention": retention,
        "seconds": wall,
        "runs_per_s": runs / wall,
        "run_p50_ms": percentile(ms, 50),
        "run_p99_ms": percentile(ms, 99),
        "run_max_ms": max(ms),
        "pruned_runs": pruned.get("runs", 0),
        "delete_units": pruned.get("units", 0),
        "delete_unit_mean_ms": pruned.get("total_unit_ms", 0.0) / max(pruned.get("units", 0), 1),
        "delete_unit_max_ms": pruned.get("max_unit_ms", 0.0),
        "file_mb_final": samples[-1]["file_mb"] if samples else 0.0,
        "file_mb_growth_after_2min": (max(after_first) - min(after_first)) if after_first else None,
        "samples": samples,
    }


if __name__ == "__main__":  # PYTHONPATH=. python -m bench.retention [RUNS [SAMPLE_S [RETENTION]]]
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    every = float(sys.argv[2]) if len(sys.argv) > 2 else 15.0
    out = retention(n, sample_s=every, retention=sys.argv[3] if len(sys.argv) > 3 else "1m")
    for s in out["samples"]:
        print(json.dumps(s))
    print(json.dumps({k: v for k, v in out.items() if k != "samples"}, indent=1))
