"""Seed 002 (Context), "Store": typed reads with ``ctx.store.get(key, type)``.

``start`` and ``validate`` are verbatim; ``charge`` is the step ``validate`` transitions to.
"""

# ruff: noqa: F841
from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")


# fmt: off
@order.start()
async def start(ctx: Context, order_id: str, amount: float) -> Directive:
    ctx.store.put("order_id", order_id)
    ctx.store.put("amount", amount)
    return ctx.next.step(validate)

@order.step()
async def validate(ctx: Context) -> Directive:
    order_id = await ctx.store.get("order_id", str)  # raises KeyError if not set
    amount = await ctx.store.get("amount", float)
    return ctx.next.step(charge)
# fmt: on


@order.step()
async def charge(ctx: Context) -> Directive:
    amount = await ctx.store.get("amount", float)
    return ctx.next.complete(
        {
            "order_id": await ctx.store.get("order_id", str),
            "amount": amount,
            "amount_type": type(amount).__name__,
        }
    )
