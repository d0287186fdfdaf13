"""Reset: four steps that each append to the store's ``trail``; ``three`` fails while the file
named by the run's input exists, so a test can fail a run at step three, remove the file and
reset it to ``two``. ``two`` also counts its executions per run in ``twos``. ``four`` holds
while the file ``<flag>.hold`` exists (at most 20 s), to keep a run active.
"""

import asyncio
import os

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

flow = Workflow(workflow_type="ResetFlow")


async def _append(ctx: Context, name: str) -> list[str]:
    trail = [*(await ctx.store.get("trail")), name]
    ctx.store.put("trail", trail)
    return trail


@flow.start()
async def start(ctx: Context, flag: str) -> Directive:
    ctx.store.put("flag", flag)
    ctx.store.put("trail", ["start"])
    ctx.store.put("twos", 0)
    return ctx.next.step(two)


@flow.step()
async def two(ctx: Context) -> Directive:
    await _append(ctx, "two")
    ctx.store.put("twos", await ctx.store.get("twos") + 1)
    return ctx.next.step(three)


@flow.step()
async def three(ctx: Context) -> Directive:
    await _append(ctx, "three")
    if os.path.exists(await ctx.store.get("flag")):
        raise RuntimeError("the flag file is there: step three fails")
    return ctx.next.step(four)


@flow.step()
async def four(ctx: Context) -> Directive:
    hold = f"{await ctx.store.get('flag')}.hold"
    for _ in range(400):
        if not os.path.exists(hold):
            break
        await asyncio.sleep(0.05)
    trail = await _append(ctx, "four")
    return ctx.next.complete({"trail": trail, "twos": await ctx.store.get("twos")})


@flow.step()
async def never(ctx: Context) -> Directive:
    return ctx.next.complete(None)
