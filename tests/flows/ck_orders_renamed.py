"""CkOrder, change 1: step ``ship`` renamed ``dispatch_order`` (a run at ``ship`` breaks)."""

from __future__ import annotations

from flows.ck_util import charge, reserve
from flows.gd_util import hold

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

orders = Workflow(workflow_type="CkOrder")


@orders.start()
async def begin(ctx: Context, mode: str) -> Directive:
    if mode == "wait":
        return ctx.next.wait_for_event()
    if mode == "ship":
        return ctx.next.step(dispatch_order)
    return ctx.next.step(pay)


@orders.step()
async def pay(ctx: Context) -> Directive:
    await reserve(ctx.run.wf_id)
    await charge(ctx.run.wf_id)
    await hold(f"{ctx.run.wf_id}-paid")
    return ctx.next.complete("paid")


@orders.step()
async def dispatch_order(ctx: Context) -> Directive:
    await hold(f"{ctx.run.wf_id}-ship")
    return ctx.next.complete("shipped")


@orders.event()
async def approve(ctx: Context) -> Directive:
    return ctx.next.step(dispatch_order)


@orders.event()
async def cancel(ctx: Context) -> Directive:
    return ctx.next.complete("cancelled")


@orders.query()
async def stage(ctx: Context) -> str:
    return "ordered"
