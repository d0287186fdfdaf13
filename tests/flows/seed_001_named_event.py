"""Seed 001 (Events), "Defining Event Handlers": a handler named by ``@order.event(name=...)``.

The two handlers are verbatim, bodies ``...`` included (so they return None, which the worker
reports as a clear error); ``start`` is the waiting start handler the snippet assumes.
"""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")


@order.start()
async def start(ctx: Context, order_id: str) -> Directive:
    ctx.store.put("order_id", order_id)
    return ctx.next.wait_for_event()


# fmt: off
@order.event()
async def approve(ctx: Context) -> Directive:
    # Triggered by handle.send("approve")
    ...
@order.event(name="order.rejected")
async def handle_rejection(ctx: Context) -> Directive:
    # Triggered by handle.send("order.rejected")
    ...
# fmt: on
