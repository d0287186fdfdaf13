"""Step hot-path benchmark: dispatch → execute → commit, through the real daemon and workers.

Usage: .venv/bin/python bench/bench_steps.py [--runs 50] [--steps 40] [--workers 1]
       [--synchronous FULL|NORMAL] [--task]

Prints steps per second, the mean step latency of a single run, and how many units each
transaction carried (the group-commit factor).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grctl.client import Client

ROOT = Path(__file__).resolve().parent.parent
GRCTL = str(Path(sys.executable).parent / "grctl")


async def connect(sock: Path, deadline_s: float = 15) -> Client:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await Client.connect(sock)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _wait_socket(sock: Path) -> None:
    await (await connect(sock)).close()


async def bench(args: argparse.Namespace, sock: Path) -> dict[str, float]:
    client = await connect(sock)
    deadline = time.monotonic() + 15
    while len((await client.daemon_status())["workers"]) < args.workers:
        if time.monotonic() > deadline:
            raise SystemExit("workers did not register")
        await asyncio.sleep(0.05)
    inp = {"steps": args.steps, "with_task": args.task}

    # Latency: one run alone, so each step is one dispatch → execute → commit round.
    t0 = time.perf_counter()
    h = await client.start_workflow("BenchLoop", "latency", inp)
    await h.result()
    latency_ms = (time.perf_counter() - t0) * 1000 / args.steps

    before = (await client.daemon_status())["commits"]
    t0 = time.perf_counter()
    handles = await asyncio.gather(
        *(client.start_workflow("BenchLoop", f"run-{i}", inp) for i in range(args.runs))
    )
    await asyncio.gather(*(h.result() for h in handles))
    elapsed = time.perf_counter() - t0
    after = (await client.daemon_status())["commits"]
    await client.close()
    total = args.runs * args.steps
    tx = after["transactions"] - before["transactions"]
    units = after["units"] - before["units"]
    return {
        "steps": total,
        "seconds": elapsed,
        "steps_per_s": total / elapsed,
        "latency_ms_per_step": latency_ms,
        "units_per_transaction": units / max(tx, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--task", action="store_true", help="one recorded task per step")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="grctl-bench-", dir="/tmp"))
    env = {**os.environ, "GRCTL_HOME": str(home)}
    procs = []
    try:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "grctl_daemon",
                "--home",
                str(home),
                "--quiet",
                "--synchronous",
                args.synchronous,
            ],
            env=env,
        )
        procs.append(daemon)
        asyncio.run(_wait_socket(home / "grctl.sock"))
        for _ in range(args.workers):
            procs.append(
                subprocess.Popen(
                    [GRCTL, "worker", "bench.flows"],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        result = asyncio.run(bench(args, home / "grctl.sock"))
        print(
            f"synchronous={args.synchronous} workers={args.workers} runs={args.runs} "
            f"steps/run={args.steps} task={args.task}"
        )
        for key, value in result.items():
            print(f"  {key:>24}: {value:,.2f}")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            p.wait(15)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
