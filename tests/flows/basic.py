"""A small approval flow used by smoke tests."""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

order = Workflow(workflow_type="BasicOrder")


@task
async def charge(order_id: str) -> str:
    return f"txn-{order_id}"


@order.start()
async def start(ctx: Context, order_id: str) -> Directive:
    ctx.store.put("order_id", order_id)
    return ctx.next.wait_for_event()


@order.event()
async def approve(ctx: Context) -> Directive:
    ctx.store.put("status", "approved")
    return ctx.next.step(fulfill)


@order.step()
async def fulfill(ctx: Context) -> Directive:
    txn = await charge(await ctx.store.get("order_id"))
    return ctx.next.complete({"txn": txn})


@order.query()
async def status(ctx: Context) -> str | None:
    return await ctx.store.get("status")
