"""The seeds' ProcessOrder: wait for an approval, then fulfil the order with a recorded task."""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")


@task
async def charge_payment(order_id: str) -> str:
    # Call your payment API here; the outcome is recorded, so a replay never charges twice.
    return f"txn_{order_id}"


@order.start()
async def start(ctx: Context, order_id: str) -> Directive:
    ctx.store.put("order_id", order_id)
    # Pause until an event arrives
    return ctx.next.wait_for_event()


@order.event()
async def approve(ctx: Context) -> Directive:
    ctx.store.put("status", "approved")
    return ctx.next.step(fulfill)


@order.event()
async def reject(ctx: Context, reason: str | None = None) -> Directive:
    # grctl send order-abc reject --payload '{"reason": "out of stock"}'
    ctx.store.put("status", "rejected")
    return ctx.next.complete({"status": "rejected", "reason": reason})


@order.step()
async def fulfill(ctx: Context) -> Directive:
    order_id = await ctx.store.get("order_id")
    txn_id = await charge_payment(order_id)
    ctx.logger.info("order %s charged: %s", order_id, txn_id)
    return ctx.next.complete({"order_id": order_id, "status": "done", "txn_id": txn_id})


@order.query()
async def status(ctx: Context) -> str | None:
    return await ctx.store.get("status")
