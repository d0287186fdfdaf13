"""Seed 000 (Workflows), "Start Handler": a start handler that does all the work and completes.

``order`` and ``charge_payment`` are what the snippet assumes; the start handler is verbatim.
"""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")


@task
async def charge_payment(order_id: str, amount: float) -> dict:
    return {"order_id": order_id, "charged": amount, "txn_id": f"txn-{order_id}"}


# fmt: off
@order.start()
async def start(ctx: Context, order_id: str, amount: float) -> Directive:
    result = await charge_payment(order_id, amount)
    return ctx.next.complete(result)
# fmt: on
