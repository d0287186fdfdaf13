"""Workflows the benchmark runs: a store chain, an event waiter, a task step, a fanout, an idler,
and a waiter with an optional timeout.

Each maps onto the peers' equivalents (see docs/performance.md): a "step" here is one handler
dispatched by the daemon to the worker and committed with its store writes, which is the durable
unit that DBOS calls a @DBOS.step and llama-index-workflows a @step.
"""

from __future__ import annotations

from datetime import timedelta

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

chain = Workflow(workflow_type="BenchChain")
event_waiter = Workflow(workflow_type="BenchEvent")
tasks = Workflow(workflow_type="BenchTasks")
fanout = Workflow(workflow_type="BenchFanout")
fanout_child = Workflow(workflow_type="BenchFanoutChild")
idler = Workflow(workflow_type="BenchIdle")
waiter = Workflow(workflow_type="BenchWaiting")


# -- chain: K sequential steps, each reads, bumps and writes one store value --------------------
# The start handler is step 1 (it is dispatched and committed like any step); ``bump`` runs the
# other K-1 times.


@chain.start()
async def chain_start(ctx: Context, steps: int) -> Directive:
    ctx.store.put("steps", steps)
    ctx.store.put("i", 1)
    if steps <= 1:
        return ctx.next.complete(1)
    return ctx.next.step(bump)


@chain.step()
async def bump(ctx: Context) -> Directive:
    i = await ctx.store.get("i") + 1
    ctx.store.put("i", i)
    if i >= await ctx.store.get("steps"):
        return ctx.next.complete(i)
    return ctx.next.step(bump)


# -- event: wait for ``go``; its handler ends the run with the payload --------------------------


@event_waiter.start()
async def event_start(ctx: Context) -> Directive:
    return ctx.next.wait_for_event()


@event_waiter.event()
async def go(ctx: Context, value: int) -> Directive:
    return ctx.next.complete(value)


# -- tasks: one step calling N recorded tasks --------------------------------------------------


@task
async def add_one(i: int) -> int:
    return i + 1


@tasks.start()
async def tasks_start(ctx: Context, n: int) -> Directive:
    i = 0
    for _ in range(n):
        i = await add_one(i)
    return ctx.next.complete(i)


# -- fanout: one step starting N child workflows -----------------------------------------------


@fanout.start()
async def fanout_start(ctx: Context, n: int) -> Directive:
    for k in range(n):
        await ctx.start("BenchFanoutChild", f"{ctx.run.wf_id}-c{k}", {"k": k})
    return ctx.next.complete(n)


@fanout_child.start()
async def fanout_child_start(ctx: Context, k: int) -> Directive:
    return ctx.next.complete(k)


# -- idle: a run that waits for an event that never comes --------------------------------------


@idler.start()
async def idle_start(ctx: Context) -> Directive:
    return ctx.next.wait_for_event()


@idler.event()
async def wake(ctx: Context) -> Directive:
    return ctx.next.complete(None)


# -- waiting: wait for ``go``, or with ``timeout_s`` until ``expired`` runs after that long -----


@waiter.start()
async def waiting_start(ctx: Context, timeout_s: float | None) -> Directive:
    if timeout_s is None:
        return ctx.next.wait_for_event()
    return ctx.next.wait_for_event(
        timeout=timedelta(seconds=timeout_s), timeout_step_name="expired"
    )


@waiter.event(name="go")
async def waiting_go(ctx: Context, value: int) -> Directive:
    return ctx.next.complete(value)


@waiter.step()
async def expired(ctx: Context) -> Directive:
    return ctx.next.complete("expired")
