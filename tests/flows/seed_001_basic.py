"""Seed 001 (Events): "Basic Usage" and "Event Payload" as written, plus seed 000's ``cancel`` event.

``fulfill`` is the step the ``approve`` handler transitions to; the seeds do not show it.
"""

# ruff: noqa: I001
# fmt: off
from grctl.workflow import Workflow
from grctl.worker.context import Context
from grctl.models import Directive
order = Workflow(workflow_type="ProcessOrder")
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
async def reject(ctx: Context) -> Directive:
    ctx.store.put("status", "rejected")
    return ctx.next.complete("rejected")

@order.event()
async def update_quantity(ctx: Context, item_id: str, qty: int) -> Directive:
    ctx.store.put(f"qty_{item_id}", qty)
    return ctx.next.wait_for_event()

@order.event()
async def set_priority(ctx: Context, priority: str) -> Directive:
    ctx.store.put("priority", priority)
    return ctx.next.wait_for_event()

@order.event()
async def cancel(ctx: Context) -> Directive:
    ctx.store.put("status", "cancelled")
    return ctx.next.complete("cancelled")
# fmt: on


@order.step()
async def fulfill(ctx: Context) -> Directive:
    return ctx.next.complete(
        {"order_id": await ctx.store.get("order_id"), "status": await ctx.store.get("status")}
    )
