"""A workflow module whose workflow has no start handler: ``grctl worker`` must refuse it."""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

nostart = Workflow(workflow_type="GdNoStart")


@nostart.step()
async def lonely(ctx: Context) -> Directive:
    return ctx.next.complete(None)
