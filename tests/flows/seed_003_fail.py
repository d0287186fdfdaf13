"""Seed 003 (Tasks), "Error Handling": ``ctx.next.fail(ErrorDetails(...))``, as written.

The order, its start, ``charge_payment`` and PaymentDeclinedError are what the snippet assumes;
``charge_payment`` declines amounts over 100.
"""

# ruff: noqa: E402, I001
from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")


class PaymentDeclinedError(Exception):
    """The card was declined."""


@task
async def charge_payment(amount: float) -> str:
    if amount > 100:
        raise PaymentDeclinedError(f"card declined for {amount}")
    return f"txn-{amount}"


@order.start()
async def start(ctx: Context, order_id: str, amount: float) -> Directive:
    ctx.store.put("order_id", order_id)
    ctx.store.put("amount", amount)
    return ctx.next.step(charge)


# fmt: off
from grctl.models import ErrorDetails

@order.step()
async def charge(ctx: Context) -> Directive:
    amount = await ctx.store.get("amount")

    try:
        txn_id = await charge_payment(amount)
    except Exception as e:
        return ctx.next.fail(ErrorDetails(
            type=type(e).__name__,
            message=f"Payment failed: {e}",
        ))

    return ctx.next.complete({"txn_id": txn_id})
# fmt: on
