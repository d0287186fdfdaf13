"""Seed 000 (Workflows), "Looping Steps": the Counter example as written."""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

# fmt: off
counter = Workflow(workflow_type="Counter")

@counter.start()
async def start(ctx: Context, target: int) -> Directive:
    ctx.store.put("count", 0)
    ctx.store.put("target", target)
    return ctx.next.step(increment)

@counter.step()
async def increment(ctx: Context) -> Directive:
    count = await ctx.store.get("count")
    target = await ctx.store.get("target")

    # Do a batch of work
    for _ in range(10):
        count += 1

    ctx.store.put("count", count)

    if count >= target:
        return ctx.next.complete(count)

    # Loop back — state is persisted between iterations
    return ctx.next.step(increment)
# fmt: on
