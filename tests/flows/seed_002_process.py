"""Seed 002 (Context), the opening example: a step reading the store and completing.

``order`` and ``start`` are what the snippet assumes; the snippet itself is verbatim.
"""

# ruff: noqa: E402, I001
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")

# fmt: off
from grctl.worker.context import Context
from grctl.models import Directive

@order.step()
async def process(ctx: Context) -> Directive:
    order_id = await ctx.store.get("order_id")
    # ... do work ...
    return ctx.next.complete({"order_id": order_id})
# fmt: on


@order.start()
async def start(ctx: Context, order_id: str) -> Directive:
    ctx.store.put("order_id", order_id)
    return ctx.next.step(process)
