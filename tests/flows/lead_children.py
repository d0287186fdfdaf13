"""A parent that learns of its child's end through completion_event, and the child."""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

parent = Workflow(workflow_type="LeadParent")
child = Workflow(workflow_type="LeadChild")


@parent.start()
async def parent_start(ctx: Context, n: int) -> Directive:
    handle = await ctx.start(
        "LeadChild", f"{ctx.run.wf_id}-child", {"n": n}, completion_event="child_done"
    )
    ctx.store.put("child_run_id", handle.run_id)
    return ctx.next.wait_for_event()


@parent.event()
async def child_done(
    ctx: Context, workflow_id: str, run_id: str, status: str, result=None, error=None
) -> Directive:
    return ctx.next.complete(
        {
            "child": workflow_id,
            "status": status,
            "result": result,
            "same_run": run_id == await ctx.store.get("child_run_id"),
        }
    )


@child.start()
async def child_start(ctx: Context, n: int) -> Directive:
    if n < 0:
        return ctx.next.fail("negative")
    return ctx.next.complete(n * 2)
