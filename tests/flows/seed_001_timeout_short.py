"""Seed 001 (Events), "Event Timeout", with a 300 ms wait instead of 24 hours so it can fire."""

from datetime import timedelta

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")


@order.start()
async def start(ctx: Context, order_id: str) -> Directive:
    ctx.store.put("order_id", order_id)
    return ctx.next.wait_for_event(
        timeout=timedelta(milliseconds=300),
        timeout_step_name="auto_approve",
    )


@order.step()
async def auto_approve(ctx: Context) -> Directive:
    ctx.logger.info("No approval received — auto-approving")
    ctx.store.put("status", "auto-approved")
    return ctx.next.complete("auto-approved")
