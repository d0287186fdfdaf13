"""Seed 000 (Workflows), "Start Handler" (second form), "Steps" and "Step Timeouts", as written."""

# ruff: noqa: E402, I001, F841
from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")


# fmt: off
@order.start()
async def start(ctx: Context, order_id: str, amount: float) -> Directive:
    # Initialize workflow state
    ctx.store.put("order_id", order_id)
    ctx.store.put("amount", amount)

    # Transition to next step
    return ctx.next.step(validate)

@order.step()
async def validate(ctx: Context) -> Directive:
    order_id = await ctx.store.get("order_id")
    # ... validate order ...
    return ctx.next.step(charge)

@order.step()
async def charge(ctx: Context) -> Directive:
    amount = await ctx.store.get("amount")
    # ... charge payment ...
    return ctx.next.complete("charged")

from datetime import timedelta

@order.step(timeout=timedelta(seconds=60))
async def long_running_step(ctx: Context) -> Directive:
    # This step has 60 seconds to complete
    ...
# fmt: on
