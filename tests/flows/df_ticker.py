"""The disk-full flow: a run that keeps committing (a tick every 30 ms) until it gets ``finish``.

A tick step has a 2 s timeout and no retry policy: if the time its worker spends waiting for a
full disk counted against it, the run would fail.

Each tick is a step with one recorded task that appends ``WORKFLOW_ID TICK`` to the ledger (env
``LEDGER``), so the test can hold every side effect against the run's history. The result says
how many ticks ran; the ticks are the same every time for a given count, so it is checkable.
"""

from __future__ import annotations

import os
from datetime import timedelta

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

TICK = timedelta(milliseconds=30)
STEP_TIMEOUT = timedelta(seconds=2)  # the test keeps the disk full for longer than this

ticker = Workflow(workflow_type="DfTicker")


@task
async def tick_effect(workflow_id: str, n: int) -> str:
    with open(os.environ["LEDGER"], "a") as f:
        f.write(f"{workflow_id} {n}\n")
    return f"t{n}"


@ticker.start()
async def df_start(ctx: Context, n: int) -> Directive:
    ctx.store.put("n", n)
    ctx.store.put("ticks", [])
    return ctx.next.wait_for_event(timeout=TICK, timeout_step_name="df_tick")


@ticker.step(timeout=STEP_TIMEOUT)
async def df_tick(ctx: Context) -> Directive:
    ticks = await ctx.store.get("ticks", list)
    ticks.append(await tick_effect(ctx.run.wf_id, len(ticks)))
    ctx.store.put("ticks", ticks)
    return ctx.next.wait_for_event(timeout=TICK, timeout_step_name="df_tick")


@ticker.event()
async def finish(ctx: Context, tag: str) -> Directive:
    ticks = await ctx.store.get("ticks", list)
    return ctx.next.complete({"n": await ctx.store.get("n"), "tag": tag, "ticks": ticks})
