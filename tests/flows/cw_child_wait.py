"""A parent with 1 s steps that waits for a child with ``ctx.next.wait_for_child``, and the child.

The child's ``mode``: ``slow`` ends ~3 s after it starts (its event wait times out: the daemon
does the waiting), ``held`` waits for a ``release`` event (``{"fail": true}`` fails it), and
``quick`` completes at once. With ``give_up_ms`` the parent waits that long at most, then runs
``cw_gave_up``. With ``early`` the parent awaits the child's result inside its
step first, so the child has ended before the directive commits.
"""

from __future__ import annotations

from datetime import timedelta

from grctl import ChildResult
from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

SHORT = timedelta(seconds=1)

parent = Workflow(workflow_type="CwParent")
child = Workflow(workflow_type="CwChild")


@parent.start()
async def cw_start(
    ctx: Context, mode: str, early: bool = False, give_up_ms: int | None = None
) -> Directive:
    ctx.store.put("mode", mode)
    ctx.store.put("early", early)
    ctx.store.put("give_up_ms", give_up_ms)
    return ctx.next.step(cw_spawn)


@parent.step(timeout=SHORT)
async def cw_spawn(ctx: Context) -> Directive:
    mode = await ctx.store.get("mode")
    handle = await ctx.start("CwChild", f"{ctx.run.wf_id}-child", {"mode": mode})
    if await ctx.store.get("early"):
        await handle.result()
    give_up_ms = await ctx.store.get("give_up_ms")
    if give_up_ms is not None:  # wait that long at most, then run cw_gave_up instead
        return ctx.next.wait_for_child(
            handle,
            step=cw_done,
            timeout=timedelta(milliseconds=give_up_ms),
            timeout_step_name="cw_gave_up",
        )
    return ctx.next.wait_for_child(handle, step=cw_done)


@parent.step(timeout=SHORT)
async def cw_gave_up(ctx: Context) -> Directive:
    return ctx.next.complete({"status": "gave up"})


@parent.step(timeout=SHORT)
async def cw_done(ctx: Context, child: ChildResult) -> Directive:
    outcome = {"status": child.status, "ok": child.ok, "workflow_id": child.workflow_id}
    try:
        outcome["value"] = child.value()
    except Exception as exc:
        outcome["raised"] = type(exc).__name__
        outcome["message"] = child.error.message if child.error else None
    return ctx.next.complete(outcome)


@child.start()
async def child_start(ctx: Context, mode: str) -> Directive:
    if mode == "quick":
        return ctx.next.complete("quick")
    if mode == "slow":
        return ctx.next.wait_for_event(timeout=timedelta(seconds=3), timeout_step_name="slow_end")
    return ctx.next.wait_for_event()


@child.step()
async def slow_end(ctx: Context) -> Directive:
    return ctx.next.complete("slow")


@child.event()
async def release(ctx: Context, fail: bool = False) -> Directive:
    if fail:
        return ctx.next.fail("the child broke")
    return ctx.next.complete("released")
