"""Workflows tests/daemon/test_progress.py runs: steps and tasks that emit progress."""

from __future__ import annotations

from flows.gd_util import hold

from grctl.models import Directive
from grctl.worker import emit, task
from grctl.worker.context import Context
from grctl.workflow import Workflow

emits = Workflow(workflow_type="PsEmit")


@task
async def fetch(count: int) -> int:
    for n in range(1, count + 1):
        await emit("items", n)
    return count


@emits.start()
async def emit_start(ctx: Context, barrier: str) -> Directive:
    await hold(barrier)
    await ctx.emit("stage", "fetch")
    await fetch(3)
    await ctx.emit("stage", "done")
    return ctx.next.step(emit_last)


@emits.step()
async def emit_last(ctx: Context) -> Directive:
    await ctx.emit("stage", "last step")
    return ctx.next.complete("ok")


lates = Workflow(workflow_type="PsLate")


@lates.start()
async def late_start(ctx: Context, barrier: str) -> Directive:
    await ctx.emit("stage", "a")
    await ctx.emit("items", 1)
    await ctx.emit("items", 2)
    await ctx.emit("stage", "b")
    await hold(barrier)  # a follower comes in here
    await ctx.emit("stage", "c")
    return ctx.next.complete(None)


floods = Workflow(workflow_type="PsFlood")

PADDING = "x" * 200  # each event ~250 bytes: 10,000 of them far outrun any socket buffer


@floods.start()
async def flood_start(ctx: Context, barrier: str, count: int) -> Directive:
    await hold(barrier)
    for n in range(count):
        await ctx.emit("n", {"n": n, "pad": PADDING})
        if n % 1000 == 0:
            await ctx.emit(f"mark-{n // 1000}", n)
    return ctx.next.complete(count)


bad = Workflow(workflow_type="PsBad")


@bad.start()
async def bad_start(ctx: Context, name: str) -> Directive:
    await ctx.emit(name, 1)
    return ctx.next.complete(None)


quiet = Workflow(workflow_type="PsQuiet")


@quiet.start()
async def quiet_start(ctx: Context) -> Directive:
    return ctx.next.complete("quiet")
