"""CkOrder, as first deployed: the version live runs are parked in (tests/cli/test_check.py).

``mode`` picks where a run parks: ``pay`` stops mid-step after two recorded tasks, ``ship``
stops at the start of step ``ship``, ``wait`` waits for ``approve`` or ``cancel``. The barriers
are ``<workflow_id>-paid`` and ``<workflow_id>-ship`` (tests/flows/gd_util.py).
"""

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
        return ctx.next.step(ship)
    return ctx.next.step(pay)


@orders.step()
async def pay(ctx: Context) -> Directive:
    await reserve(ctx.run.wf_id)
    await charge(ctx.run.wf_id)
    await hold(f"{ctx.run.wf_id}-paid")
    return ctx.next.complete("paid")


@orders.step()
async def ship(ctx: Context) -> Directive:
    await hold(f"{ctx.run.wf_id}-ship")
    return ctx.next.complete("shipped")


@orders.event()
async def approve(ctx: Context) -> Directive:
    return ctx.next.step(ship)


@orders.event()
async def cancel(ctx: Context) -> Directive:
    return ctx.next.complete("cancelled")


@orders.query()
async def stage(ctx: Context) -> str:
    return "ordered"
