"""A workflow module whose start handler steps to a function that is not a registered step."""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

badstep = Workflow(workflow_type="BiBadStep")


async def helper(ctx: Context) -> Directive:
    return ctx.next.complete("never")


@badstep.start()
async def bi_step_begin(ctx: Context) -> Directive:
    return ctx.next.step(helper)
