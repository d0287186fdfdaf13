"""Workflows tests/daemon/test_guarantees.py runs, one small workflow per guarantee."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from flows.gd_util import hold, ledger

from grctl.models import Directive
from grctl.models.directive import RetryPolicy
from grctl.worker.context import Context
from grctl.workflow import Workflow

# -- one active run per workflow_id ---------------------------------------------------------

solo = Workflow(workflow_type="GdSolo")


@solo.start()
async def solo_start(ctx: Context) -> Directive:
    return ctx.next.wait_for_event()


@solo.event()
async def solo_finish(ctx: Context, value: int) -> Directive:
    return ctx.next.complete(value)


# -- atomic steps ---------------------------------------------------------------------------

atomic = Workflow(workflow_type="GdAtomic")


@atomic.start()
async def atomic_start(ctx: Context) -> Directive:
    ctx.store.put("committed", 1)
    return ctx.next.step(atomic_explode)


@atomic.step()
async def atomic_explode(ctx: Context) -> Directive:
    ctx.store.put("committed", 99)
    ctx.store.put("doomed", "never seen")
    raise RuntimeError("exploded after two puts")


# -- FIFO inbox -----------------------------------------------------------------------------

inbox = Workflow(workflow_type="GdInbox")


@inbox.start()
async def inbox_start(ctx: Context) -> Directive:
    await hold(ctx.run.wf_id)
    return ctx.next.wait_for_event()


@inbox.event()
async def item(ctx: Context, n: int) -> Directive:
    seen = await ctx.store.get("seen") or []
    ctx.store.put("seen", [*seen, n])
    ledger(f"item {n}")
    return ctx.next.wait_for_event()


@inbox.event()
async def inbox_done(ctx: Context) -> Directive:
    return ctx.next.complete(await ctx.store.get("seen"))


# -- wait timeouts --------------------------------------------------------------------------

waits = Workflow(workflow_type="GdWait")


@waits.start()
async def wait_start(ctx: Context, timeout_ms: int | None = None) -> Directive:
    if timeout_ms is None:
        return ctx.next.wait_for_event()
    return ctx.next.wait_for_event(
        timeout=timedelta(milliseconds=timeout_ms), timeout_step_name="wait_expired"
    )


@waits.step()
async def wait_expired(ctx: Context) -> Directive:
    ledger(f"{ctx.run.wf_id} timed out")
    return ctx.next.complete("timed out")


@waits.event()
async def ping(ctx: Context) -> Directive:
    ledger(f"{ctx.run.wf_id} ping")
    return ctx.next.wait_for_event()


@waits.event()
async def wait_finish(ctx: Context) -> Directive:
    return ctx.next.complete("finished")


# -- step timeouts and retries --------------------------------------------------------------

timeouts = Workflow(workflow_type="GdTimeout")
RETRY_3 = RetryPolicy(max_attempts=3, initial_delay_ms=10)


@timeouts.start()
async def timeout_start(ctx: Context, mode: str) -> Directive:
    if mode == "sleepy":
        return ctx.next.step(sleepy)
    if mode == "flaky":
        return ctx.next.step(flaky)
    if mode == "broken":
        return ctx.next.step(always_broken)
    return ctx.next.step(default_timeout)


@timeouts.step(timeout=timedelta(milliseconds=300))
async def sleepy(ctx: Context) -> Directive:
    await asyncio.sleep(30)
    return ctx.next.complete("woke")


@timeouts.step(retry_policy=RETRY_3)
async def flaky(ctx: Context) -> Directive:
    n = ledger(f"{ctx.run.wf_id} flaky")
    ctx.store.put(f"try{n}", n)
    if n < 3:
        raise ConnectionError(f"flaky attempt {n}")
    return ctx.next.complete(n)


@timeouts.step(retry_policy=RETRY_3)
async def always_broken(ctx: Context) -> Directive:
    ledger(f"{ctx.run.wf_id} broken")
    raise ValueError("always broken")


@timeouts.step()
async def default_timeout(ctx: Context) -> Directive:
    await hold(ctx.run.wf_id)
    return ctx.next.complete("released")


# -- queries --------------------------------------------------------------------------------

queries = Workflow(workflow_type="GdQuery")


@queries.start()
async def query_start(ctx: Context) -> Directive:
    ctx.store.put("status", "one")
    return ctx.next.step(query_second)


@queries.step()
async def query_second(ctx: Context) -> Directive:
    ctx.store.put("status", "two")
    await hold(ctx.run.wf_id)
    return ctx.next.wait_for_event()


@queries.event()
async def query_finish(ctx: Context) -> Directive:
    return ctx.next.complete(await ctx.store.get("status"))


@queries.query()
async def status(ctx: Context) -> str | None:
    return await ctx.store.get("status")


@queries.query()
async def meddle(ctx: Context) -> str | None:
    ctx.store.put("status", "meddled")
    ctx.store.put("extra", 1)
    return await ctx.store.get("status")


# -- cancel and terminate -------------------------------------------------------------------

stops = Workflow(workflow_type="GdStop")


@stops.start()
async def stop_start(ctx: Context, barrier: str) -> Directive:
    ctx.store.put("before", True)
    await hold(barrier)
    ctx.store.put("after", True)
    ledger(f"{ctx.run.wf_id} after barrier")
    return ctx.next.step(stop_next)


@stops.step()
async def stop_next(ctx: Context) -> Directive:
    ledger(f"{ctx.run.wf_id} next step ran")
    return ctx.next.complete(None)


# -- child workflows ------------------------------------------------------------------------

parent = Workflow(workflow_type="GdParent")


@parent.start()
async def parent_start(ctx: Context) -> Directive:
    child_handle = await ctx.start("GdChild", f"{ctx.run.wf_id}-child", {"n": 4})
    ctx.store.put("child_id", child_handle.workflow_id)
    await hold(ctx.run.wf_id)
    ctx.store.put("child_result", await child_handle.result())
    return ctx.next.wait_for_event()


@parent.event()
async def child_done(ctx: Context, n: int) -> Directive:
    return ctx.next.complete(
        {
            "child_id": await ctx.store.get("child_id"),
            "child_result": await ctx.store.get("child_result"),
            "event_n": n,
        }
    )


child = Workflow(workflow_type="GdChild")


@child.start()
async def child_start(ctx: Context, n: int) -> Directive:
    ledger(f"{ctx.run.wf_id} ran")
    await ctx.send_to_parent("child_done", {"n": n})
    return ctx.next.complete(n * 10)
