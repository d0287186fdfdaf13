"""The soak flow: several steps with recorded tasks, an event, and a ledger of side effects."""

import os

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

soak = Workflow(workflow_type="Soak")
ROUNDS = 3


@task
async def effect(workflow_id: str, op: str) -> str:
    with open(os.environ["LEDGER"], "a") as f:
        f.write(f"{workflow_id} {op}\n")
    return op


@soak.start()
async def soak_start(ctx: Context, n: int) -> Directive:
    ctx.store.put("n", n)
    ctx.store.put("done", [await effect(ctx.run.wf_id, "start")])
    ctx.store.put("round", 0)
    return ctx.next.step(soak_round)


@soak.step()
async def soak_round(ctx: Context) -> Directive:
    r = await ctx.store.get("round", int)
    done = await ctx.store.get("done", list)
    done.append(await effect(ctx.run.wf_id, f"round{r}"))
    ctx.store.put("roll", await ctx.random())
    ctx.store.put("done", done)
    ctx.store.put("round", r + 1)
    if r + 1 < ROUNDS:
        return ctx.next.step(soak_round)
    return ctx.next.wait_for_event()


@soak.event()
async def go(ctx: Context, tag: str) -> Directive:
    done = await ctx.store.get("done", list)
    done.append(await effect(ctx.run.wf_id, f"go-{tag}"))
    return ctx.next.complete({"n": await ctx.store.get("n"), "done": done})
