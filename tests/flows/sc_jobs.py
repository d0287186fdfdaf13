"""Workflows that schedules start (tests/daemon/test_schedules.py)."""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

quick = Workflow(workflow_type="ScQuick")
held = Workflow(workflow_type="ScHeld")


@quick.start()
async def start_quick(ctx: Context, tag: str = "none") -> Directive:
    return ctx.next.complete({"tag": tag})


@held.start()
async def start_held(ctx: Context) -> Directive:
    return ctx.next.wait_for_event()


@held.event()
async def release(ctx: Context) -> Directive:
    return ctx.next.complete("released")
