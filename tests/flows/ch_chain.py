"""Workflows tests/daemon/test_chain.py runs: steps a worker runs in place (chained)."""

from __future__ import annotations

import time

from flows.gd_util import home, ledger

from grctl.models import Directive
from grctl.worker import task
from grctl.worker.context import Context
from grctl.workflow import Workflow

# -- five pure steps, each passing the store on -------------------------------------------------

five = Workflow(workflow_type="ChFive")


@five.start()
async def five_start(ctx: Context, n: int) -> Directive:
    ledger(f"{ctx.run.wf_id} start")
    ctx.store.put("trail", ["start"])
    ctx.store.put("n", n)
    return ctx.next.step(five_two)


async def _add(ctx: Context, name: str) -> None:
    ledger(f"{ctx.run.wf_id} {name}")
    trail = await ctx.store.get("trail")
    ctx.store.put("trail", [*trail, name])
    trail.append("mutated after put: never seen")  # the next step sees the value as written


@five.step()
async def five_two(ctx: Context) -> Directive:
    await _add(ctx, "two")
    return ctx.next.step(five_three)


@five.step()
async def five_three(ctx: Context) -> Directive:
    await _add(ctx, "three")
    return ctx.next.step(five_four)


@five.step()
async def five_four(ctx: Context) -> Directive:
    await _add(ctx, "four")
    return ctx.next.step(five_five)


@five.step()
async def five_five(ctx: Context) -> Directive:
    await _add(ctx, "five")
    time.sleep(0.05)  # pure work, no await: still chained, and its history shows how long
    return ctx.next.complete({"trail": await ctx.store.get("trail"), "n": await ctx.store.get("n")})


# -- a task in the middle of a chain ----------------------------------------------------------


@task
async def charge(wf_id: str, amount: int) -> str:
    ledger(f"{wf_id} charged {amount}")
    return f"receipt-{amount}"


tasked = Workflow(workflow_type="ChTask")


@tasked.start()
async def tasked_start(ctx: Context) -> Directive:
    ledger(f"{ctx.run.wf_id} start")
    return ctx.next.step(tasked_charge)


@tasked.step()
async def tasked_charge(ctx: Context) -> Directive:
    ledger(f"{ctx.run.wf_id} before the task")
    ctx.store.put("receipt", await charge(ctx.run.wf_id, 42))
    return ctx.next.step(tasked_done)


@tasked.step()
async def tasked_done(ctx: Context) -> Directive:
    return ctx.next.complete(await ctx.store.get("receipt"))


# -- a worker killed while a chained step runs --------------------------------------------------

stuck = Workflow(workflow_type="ChStuck")


@stuck.start()
async def stuck_start(ctx: Context) -> Directive:
    ledger(f"{ctx.run.wf_id} start")
    ctx.store.put("first", 1)
    return ctx.next.step(stuck_block)


@stuck.step()
async def stuck_block(ctx: Context) -> Directive:
    ledger(f"{ctx.run.wf_id} block")
    # Blocks the worker's loop (no await): nothing of the chain can be reported meanwhile.
    gate = home() / "unblock"
    while not gate.exists():
        time.sleep(0.01)
    return ctx.next.complete(await ctx.store.get("first"))


# -- a start the database refuses (its workflow_id is running, but not in the daemon's memory) --

once = Workflow(workflow_type="ChOnce")


@once.start()
async def once_start(ctx: Context) -> Directive:
    await charge(ctx.run.wf_id, 1)
    return ctx.next.wait_for_event()


@once.event()
async def once_done(ctx: Context) -> Directive:
    return ctx.next.complete("done")
