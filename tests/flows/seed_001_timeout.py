"""Seed 001 (Events), "Event Timeout", as written (a 24-hour wait).

``approve`` is added so a test can show that an event arriving in time voids the timeout.
"""

# ruff: noqa: E402, I001
from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")

# fmt: off
from datetime import timedelta
@order.start()
async def start(ctx: Context, order_id: str) -> Directive:
    ctx.store.put("order_id", order_id)
    return ctx.next.wait_for_event(
        timeout=timedelta(hours=24),
        timeout_step_name="auto_approve",
    )
@order.step()
async def auto_approve(ctx: Context) -> Directive:
    ctx.logger.info("No approval received — auto-approving")
    ctx.store.put("status", "auto-approved")
    return ctx.next.complete("auto-approved")
# fmt: on


@order.event()
async def approve(ctx: Context) -> Directive:
    ctx.store.put("status", "approved")
    return ctx.next.complete("approved")
