"""The three peer workloads, engine-agnostic: each peer script plugs its engine's calls in.

Runs inside bench/.peers-venv (no grctl there): standard library only. Timings are taken in
the peer's own process, which is also where its engine runs (DBOS and llama-index-workflows
are libraries, not servers), so the process CPU time is the whole engine's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", choices=["chain", "latency", "event"], required=True)
    parser.add_argument("--runs", type=int, default=2000, help="chain: runs started together")
    parser.add_argument("--steps", type=int, default=5, help="steps per run")
    parser.add_argument("--samples", type=int, default=200, help="latency/event: samples")
    parser.add_argument("--budget-s", type=float, default=20.0, help="latency/event: time cap")
    parser.add_argument("--tuned", action="store_true", help="DBOS: WAL file and 1 ms polling")
    return parser.parse_args()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summary_ms(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "samples": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms) if ms else 0.0,
    }


async def chain(
    start_and_wait: Callable[[int], Awaitable[Any]], runs: int, steps: int
) -> dict[str, float]:
    """``runs`` runs of ``steps`` steps, all started together; throughput and CPU per step."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(start_and_wait(i) for i in range(runs)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    total = runs * steps
    return {
        "runs": runs,
        "steps": total,
        "seconds": wall,
        "runs_per_s": runs / wall,
        "steps_per_s": total / wall,
        "cpu_us_per_step": cpu * 1e6 / total,
        "cpu_pct": 100 * cpu / wall,
    }


async def sampled(
    one: Callable[[int], Awaitable[float]], samples: int, budget_s: float
) -> dict[str, float]:
    """Up to ``samples`` timed samples, one at a time, stopping early after ``budget_s``."""
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    for i in range(samples):
        times.append(await one(i))
        if time.perf_counter() > deadline and len(times) >= 5:
            break
    return summary_ms(times)


def emit(name: str, version: str, workload: str, metrics: dict[str, Any]) -> None:
    print(json.dumps({"peer": name, "version": version, "workload": workload, **metrics}))
    sys.stdout.flush()
