"""Seed 003 (Tasks), "Compensating Actions": undo a reservation when the charge is declined.

``fulfill`` is verbatim; the order, its start and the three tasks are what it assumes.
``charge_payment`` declines order ids starting with "declined".
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
async def reserve_inventory(order_id: str) -> str:
    note("reserve_inventory", order_id)
    return f"res-{order_id}"


@task
async def charge_payment(order_id: str) -> str:
    note("charge_payment", order_id)
    if order_id.startswith("declined"):
        raise PaymentDeclinedError(f"card declined for {order_id}")
    return f"txn-{order_id}"


@task
async def release_inventory(reservation_id: str) -> None:
    note("release_inventory", reservation_id)


@order.start()
async def start(ctx: Context, order_id: str) -> Directive:
    ctx.store.put("order_id", order_id)
    return ctx.next.step(fulfill)


# fmt: off
@order.step()
async def fulfill(ctx: Context) -> Directive:
    order_id = await ctx.store.get("order_id")

    reservation_id = await reserve_inventory(order_id)

    try:
        await charge_payment(order_id)
    except PaymentDeclinedError:
        await release_inventory(reservation_id)  # undo the reservation
        return ctx.next.complete({"status": "payment_failed"})

    return ctx.next.complete({"status": "fulfilled"})
# fmt: on
