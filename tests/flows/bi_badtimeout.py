"""A workflow module whose wait names a timeout_step_name that is no step."""

from datetime import timedelta

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

badtimeout = Workflow(workflow_type="BiBadTimeout")


@badtimeout.start()
async def bi_timeout_begin(ctx: Context) -> Directive:
    return ctx.next.wait_for_event(timeout=timedelta(seconds=5), timeout_step_name="auto_approve")
