"""The chaos flow: three steps and an event handler, each doing one recorded task with a ledger.

``effect`` appends ``WORKFLOW_ID STEP_NAME PID UNIX_TIME`` to the file env ``LEDGER`` names, then
returns a value computed from its input alone, so a run's result follows from its input ``n``
and the event's ``k`` (see ``expected``). The ledger says how often each task really ran, and
when, against the one ``task_completed`` its run's history holds for it.
"""

from __future__ import annotations

import os
import time

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

STEPS = ("chaos_start", "chaos_mid", "chaos_last", "poke")

chaos = Workflow(workflow_type="Chaos")


def mix(value: int) -> int:
    return (value * 31 + 7) % 1_000_003


def expected(n: int, k: int) -> dict[str, object]:
    """The result of the run started with ``n`` and poked with ``k``."""
    acc = [mix(n)]
    acc.append(mix(acc[-1]))
    acc.append(mix(acc[-1]))
    acc.append(mix(acc[-1] + k))
    return {"n": n, "k": k, "acc": acc}


@task
async def effect(workflow_id: str, step_name: str, value: int) -> int:
    with open(os.environ["LEDGER"], "a") as f:
        f.write(f"{workflow_id} {step_name} {os.getpid()} {time.time():.6f}\n")
    return mix(value)


@chaos.start()
async def chaos_start(ctx: Context, n: int) -> Directive:
    ctx.store.put("n", n)
    ctx.store.put("acc", [await effect(ctx.run.wf_id, "chaos_start", n)])
    return ctx.next.step(chaos_mid)


@chaos.step()
async def chaos_mid(ctx: Context) -> Directive:
    acc = await ctx.store.get("acc", list)
    acc.append(await effect(ctx.run.wf_id, "chaos_mid", acc[-1]))
    ctx.store.put("acc", acc)
    return ctx.next.step(chaos_last)


@chaos.step()
async def chaos_last(ctx: Context) -> Directive:
    acc = await ctx.store.get("acc", list)
    acc.append(await effect(ctx.run.wf_id, "chaos_last", acc[-1]))
    ctx.store.put("acc", acc)
    return ctx.next.wait_for_event()


@chaos.event()
async def poke(ctx: Context, k: int) -> Directive:
    acc = await ctx.store.get("acc", list)
    acc.append(await effect(ctx.run.wf_id, "poke", acc[-1] + k))
    return ctx.next.complete({"n": await ctx.store.get("n"), "k": k, "acc": acc})
