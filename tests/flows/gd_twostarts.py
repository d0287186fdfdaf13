"""A workflow module with two start handlers: importing it fails, naming both."""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

twostarts = Workflow(workflow_type="GdTwoStarts")


@twostarts.start()
async def first_start(ctx: Context) -> Directive:
    return ctx.next.complete(1)


@twostarts.start()
async def second_start(ctx: Context) -> Directive:
    return ctx.next.complete(2)
