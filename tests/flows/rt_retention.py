"""Retention tests: a run that waits for ``finish``, and a parent that ends before its child."""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

held = Workflow(workflow_type="RtHeld")
parent = Workflow(workflow_type="RtParent")
child = Workflow(workflow_type="RtChild")


@held.start()
async def held_start(ctx: Context, n: int) -> Directive:
    ctx.store.put("n", n)
    return ctx.next.wait_for_event()


@held.event()
async def finish(ctx: Context, fail: bool = False) -> Directive:
    if fail:
        return ctx.next.fail("asked to fail")
    return ctx.next.complete(await ctx.store.get("n"))


@parent.start()
async def parent_start(ctx: Context) -> Directive:
    await ctx.start("RtChild", f"{ctx.run.wf_id}-child", {}, completion_event="child_done")
    return ctx.next.complete("parent done first")


@parent.event()
async def child_done(
    ctx: Context, workflow_id: str, run_id: str, status: str, result=None, error=None
) -> Directive:
    return ctx.next.complete(result)


@child.start()
async def child_start(ctx: Context) -> Directive:
    return ctx.next.wait_for_event()


@child.event()
async def go(ctx: Context) -> Directive:
    return ctx.next.complete("child done")
