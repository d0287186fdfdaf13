"""Workflows tests/daemon/test_run_timeout.py runs: a run that waits, one that holds a step."""

from __future__ import annotations

from datetime import timedelta

from flows.gd_util import hold, ledger

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

waits = Workflow(workflow_type="RtWait")


@waits.start()
async def wait_start(ctx: Context) -> Directive:
    return ctx.next.wait_for_event()


@waits.event()
async def rt_go(ctx: Context) -> Directive:
    return ctx.next.complete("done")


@waits.event()
async def rt_poke(ctx: Context) -> Directive:
    return ctx.next.wait_for_event()


holds = Workflow(workflow_type="RtHold")


@holds.start()
async def hold_start(ctx: Context, barrier: str) -> Directive:
    await hold(barrier)
    ledger(f"{ctx.run.wf_id} after barrier")
    return ctx.next.complete(None)


sleeps = Workflow(workflow_type="RtSleep")


@sleeps.start()
async def sleep_start(ctx: Context) -> Directive:
    await ctx.sleep(timedelta(hours=1))
    return ctx.next.complete("woke")


parents = Workflow(workflow_type="RtParent")


@parents.start()
async def parent_start(ctx: Context, child_timeout_ms: int) -> Directive:
    await ctx.start(
        "RtWait",
        f"{ctx.run.wf_id}-child",
        completion_event="child_ended",
        run_timeout=timedelta(milliseconds=child_timeout_ms),
    )
    return ctx.next.wait_for_event()


@parents.event()
async def child_ended(ctx: Context, **outcome) -> Directive:
    error = outcome.get("error") or {}
    return ctx.next.complete({"status": outcome["status"], "error": error.get("type")})
