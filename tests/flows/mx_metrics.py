"""A flow for the metrics tests: completes, fails (one step, no retry) or waits, as asked."""

from grctl.models import Directive, ErrorDetails
from grctl.worker.context import Context
from grctl.workflow import Workflow

flow = Workflow(workflow_type="MxFlow")


@flow.start()
async def start(ctx: Context, mode: str) -> Directive:
    if mode == "wait":
        return ctx.next.wait_for_event()
    return ctx.next.step(finish)


@flow.step()
async def finish(ctx: Context) -> Directive:
    return ctx.next.complete("done")


@flow.event()
async def go(ctx: Context) -> Directive:
    return ctx.next.fail(ErrorDetails(type="Refused", message="asked to fail"))
