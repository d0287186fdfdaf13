"""A run of ``steps`` steps whose store is a counter each step increments, for the commit-failure
test: the database must always hold a store that agrees with the history.

Every step (the start handler too) adds 1 to the store's ``count`` and runs one task whose side
effect is the ledger line ``tick PID WORKFLOW_ID N`` (N the step's count). So in any committed
state ``count`` equals the number of ``step_completed`` events, and a step committed on top of
a lost one would show as a mismatch or a gap in the history.
"""

from __future__ import annotations

from flows.fp_util import note

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

counter = Workflow(workflow_type="FpCounter")


@task
async def fp_tick(workflow_id: str, n: int) -> int:
    note("tick", workflow_id, str(n))
    return n


async def _advance(ctx: Context, done: int) -> Directive:
    n = done + 1
    await fp_tick(ctx.run.wf_id, n)
    ctx.store.put("count", n)
    if n >= await ctx.store.get("steps", int):
        return ctx.next.complete({"count": n})
    return ctx.next.step(fp_count)


@counter.start()
async def fp_count_start(ctx: Context, steps: int) -> Directive:
    ctx.store.put("steps", steps)
    return await _advance(ctx, 0)


@counter.step()
async def fp_count(ctx: Context) -> Directive:
    return await _advance(ctx, await ctx.store.get("count", int))
