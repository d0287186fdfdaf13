"""Seed 003 (Tasks), "Error Handling": a step catching a task's error and completing anyway.

``charge`` is verbatim; the order, its start, the tasks and PaymentDeclinedError are what the
snippet assumes. ``charge_payment`` declines amounts over 100.
"""

from flows.seed_ledger import note

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")


class PaymentDeclinedError(Exception):
    """The card was declined."""


@task
async def charge_payment(amount: float) -> str:
    note("charge_payment", str(amount))
    if amount > 100:
        raise PaymentDeclinedError(f"card declined for {amount}")
    return f"txn-{amount}"


@task
async def notify_customer(order_id: str, message: str) -> None:
    note("notify_customer", order_id, message)


@order.start()
async def start(ctx: Context, order_id: str, amount: float) -> Directive:
    ctx.store.put("order_id", order_id)
    ctx.store.put("amount", amount)
    return ctx.next.step(charge)


# fmt: off
@order.step()
async def charge(ctx: Context) -> Directive:
    amount = await ctx.store.get("amount")
    order_id = await ctx.store.get("order_id")

    try:
        txn_id = await charge_payment(amount)
    except PaymentDeclinedError:
        await notify_customer(order_id, "payment_failed")
        return ctx.next.complete({"status": "payment_failed"})

    return ctx.next.complete({"txn_id": txn_id, "status": "charged"})
# fmt: on
