"""Workflows the CLI tests drive: an order that waits for events, one that fails, a timed wait.

``CliOrder`` holds in its ``hold`` step until the ``barrier`` file (from the input) exists, so a
test can send events while a step runs and see them pending in the inbox.
"""

import asyncio
import os
from datetime import timedelta

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

order = Workflow(workflow_type="CliOrder")
quick = Workflow(workflow_type="CliQuick")
broken = Workflow(workflow_type="CliBroken")
timed = Workflow(workflow_type="CliTimed")

BARRIER_POLL_S = 0.02


@task
async def charge(order_id: str, qty: int) -> str:
    return f"txn-{order_id}-{qty}"


@order.start()
async def begin(ctx: Context, order_id: str, qty: int = 1, barrier: str | None = None) -> Directive:
    ctx.store.put("order_id", order_id)
    ctx.store.put("qty", qty)
    ctx.store.put("status", "new")
    if barrier:
        ctx.store.put("barrier", barrier)
        return ctx.next.step(hold)
    return ctx.next.wait_for_event()


@order.step(timeout=timedelta(seconds=30))
async def hold(ctx: Context) -> Directive:
    barrier = await ctx.store.get("barrier")
    while not os.path.exists(barrier):
        await asyncio.sleep(BARRIER_POLL_S)
    return ctx.next.wait_for_event()


@order.event()
async def note(ctx: Context, text: str) -> Directive:
    notes = await ctx.store.get("notes") or []
    ctx.store.put("notes", [*notes, text])
    return ctx.next.wait_for_event()


@order.event()
async def approve(ctx: Context, qty: int | None = None) -> Directive:
    if qty is not None:
        ctx.store.put("qty", qty)
    ctx.store.put("status", "approved")
    return ctx.next.step(fulfill)


@order.step()
async def fulfill(ctx: Context) -> Directive:
    txn = await charge(await ctx.store.get("order_id"), await ctx.store.get("qty"))
    return ctx.next.complete({"txn": txn, "note": "x" * 200})


@order.query()
async def status(ctx: Context) -> str | None:
    return await ctx.store.get("status")


@quick.start()
async def run_quick(ctx: Context, n: int = 1) -> Directive:
    return ctx.next.complete({"doubled": n * 2})


@broken.start()
async def explode(ctx: Context) -> Directive:
    raise ValueError("the order book is on fire")


@timed.start()
async def wait_a_while(ctx: Context) -> Directive:
    return ctx.next.wait_for_event(timeout=timedelta(minutes=5), timeout_step_name="give_up")


@timed.event()
async def poke(ctx: Context) -> Directive:
    return ctx.next.complete("poked")


@timed.step()
async def give_up(ctx: Context) -> Directive:
    return ctx.next.complete("gave up")
