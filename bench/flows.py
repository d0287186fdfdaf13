"""Workflows the benchmark runs: a loop of steps, with and without a task per step."""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

loop = Workflow(workflow_type="BenchLoop")


@task
async def work(i: int) -> int:
    return i + 1


@loop.start()
async def start(ctx: Context, steps: int, with_task: bool = False) -> Directive:
    ctx.store.put("i", 0)
    ctx.store.put("steps", steps)
    ctx.store.put("with_task", with_task)
    return ctx.next.step(tick)


@loop.step()
async def tick(ctx: Context) -> Directive:
    i = await ctx.store.get("i")
    if await ctx.store.get("with_task"):
        i = await work(i)
    else:
        i += 1
    ctx.store.put("i", i)
    if i >= await ctx.store.get("steps"):
        return ctx.next.complete(i)
    return ctx.next.step(tick)
