"""DBOS Transact on its SQLite system database: the chain, latency and event workloads.

Run in bench/.peers-venv: ``python dbos_bench.py --workload chain [--tuned]``; prints one JSON
line. As shipped, DBOS makes ``<name>.sqlite`` in the working directory with SQLite's default
rollback journal and polls for notifications every second. ``--tuned`` pre-creates that file
in WAL mode and sets ``notification_listener_polling_interval_sec=0.001``.

How the workloads map: a grctl step is one @DBOS.step (its output is checkpointed in the system
database before the workflow goes on, as grctl commits a step's store writes before the next is
dispatched); the store value is the step's argument and checkpointed return value. The event is
DBOS.send to a workflow blocked in DBOS.recv, whose return ends it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import sqlite3
import tempfile
from importlib.metadata import version

import _common
from dbos import DBOS, DBOSConfig

READY: dict[int, asyncio.Event] = {}


@DBOS.step()
async def bump(value: int) -> int:
    return value + 1


@DBOS.workflow()
async def chain(steps: int) -> int:
    value = 0
    for _ in range(steps):
        value = await bump(value)
    return value


@DBOS.workflow()
async def waiter(key: int) -> int:
    READY[key].set()
    return await DBOS.recv_async("go", timeout_seconds=120)


async def main() -> None:
    args = _common.parse_args()
    name = "dbos-sqlite-tuned" if args.tuned else "dbos-sqlite"
    workdir = tempfile.mkdtemp(prefix="bench-dbos-", dir="/tmp")
    os.chdir(workdir)
    config: DBOSConfig = {"name": "bench", "log_level": "WARNING"}
    poll_s = 1.0  # DBOS's default notification_listener_polling_interval_sec
    if args.tuned:
        conn = sqlite3.connect(os.path.join(workdir, "bench.sqlite"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
        poll_s = 0.001
        config["notification_listener_polling_interval_sec"] = poll_s
    DBOS(config=config)
    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    try:
        # Warm up (imports, first connections, thread pool) outside the timings.
        await (await DBOS.start_workflow_async(chain, args.steps)).get_result()
        if args.workload == "chain":

            async def one_run(i: int) -> int:
                return await (await DBOS.start_workflow_async(chain, args.steps)).get_result()

            metrics = await _common.chain(one_run, args.runs, args.steps)
        elif args.workload == "latency":

            async def timed_run(i: int) -> float:
                t0 = asyncio.get_running_loop().time()
                await (await DBOS.start_workflow_async(chain, args.steps)).get_result()
                return asyncio.get_running_loop().time() - t0

            metrics = await _common.sampled(timed_run, args.samples, args.budget_s)
        else:

            async def timed_event(i: int) -> float:
                READY[i] = asyncio.Event()
                handle = await DBOS.start_workflow_async(waiter, i)
                await READY[i].wait()
                # Let recv register, then send at a random phase of the notification poller: a
                # send right after a poll would otherwise always wait one whole interval.
                await asyncio.sleep(0.005 + random.uniform(0, poll_s))
                t0 = asyncio.get_running_loop().time()
                await DBOS.send_async(handle.workflow_id, i, "go")
                assert await handle.get_result() == i
                return asyncio.get_running_loop().time() - t0

            metrics = await _common.sampled(timed_event, args.samples, args.budget_s)
    finally:
        DBOS.destroy()
        os.chdir("/")
        shutil.rmtree(workdir, ignore_errors=True)
    _common.emit(name, version("dbos"), args.workload, metrics)


if __name__ == "__main__":
    asyncio.run(main())
