"""Flows for "nothing leaves the daemon before it is durable" (tests/crash/test_fault_paths.py).

- ``FpHeld``: its start handler notes ``begin PID WORKFLOW_ID`` each time a worker runs it, then
  waits at barrier ``held-WORKFLOW_ID`` (first execution only) and completes.
- ``FpQuery``: the start handler commits store ``x = "old"``; the next step waits at barrier
  ``write-WORKFLOW_ID``, writes ``x = "new"`` and moves on; query ``x`` reads the store.
- ``FpInbox``: waits for ``poke`` events and completes with the first one's ``n``.
"""

from __future__ import annotations

from flows.fp_util import hold, note

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

held = Workflow(workflow_type="FpHeld")


@held.start()
async def fp_held_start(ctx: Context) -> Directive:
    note("begin", ctx.run.wf_id)
    await hold(f"held-{ctx.run.wf_id}")
    return ctx.next.complete({"done": ctx.run.wf_id})


queried = Workflow(workflow_type="FpQuery")


@queried.start()
async def fp_query_start(ctx: Context) -> Directive:
    ctx.store.put("x", "old")
    return ctx.next.step(fp_query_write)


@queried.step()
async def fp_query_write(ctx: Context) -> Directive:
    await hold(f"write-{ctx.run.wf_id}")
    ctx.store.put("x", "new")
    return ctx.next.step(fp_query_done)


@queried.step()
async def fp_query_done(ctx: Context) -> Directive:
    return ctx.next.complete({"x": await ctx.store.get("x")})


@queried.query()
async def x(ctx: Context) -> str | None:
    return await ctx.store.get("x")


inbox = Workflow(workflow_type="FpInbox")


@inbox.start()
async def fp_inbox_start(ctx: Context) -> Directive:
    return ctx.next.wait_for_event()


@inbox.event()
async def poke(ctx: Context, n: int) -> Directive:
    note("poke", ctx.run.wf_id, str(n))
    return ctx.next.complete({"n": n})
