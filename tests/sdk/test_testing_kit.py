"""The test kit itself: time holds still while a step works, queries, run timeouts, misuse, and
the pytest plugin as a user meets it (through ``pytester``).

The seed examples under the kit are in test_testing_seeds.py.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from grctl import _clock
from grctl.errors import RunTimeout, TestEnvironmentError
from grctl.models import Directive
from grctl.testing import WorkflowEnvironment
from grctl.worker.context import Context
from grctl.workflow import Workflow

pytest_plugins = ["pytester"]

MS = timedelta(milliseconds=1)


class Gate:
    """Events the held step and the test share (the worker runs in the test's loop)."""

    entered: asyncio.Event
    release: asyncio.Event


held = Workflow(workflow_type="Held")


@held.start()
async def start(ctx: Context) -> Directive:
    ctx.store.put("phase", "holding")
    return ctx.next.step(work)


@held.step(timeout=timedelta(seconds=1))
async def work(ctx: Context) -> Directive:
    Gate.entered.set()
    await Gate.release.wait()
    return ctx.next.complete("finished")


@held.query()
async def phase(ctx: Context) -> str:
    return await ctx.store.get("phase")


waiter = Workflow(workflow_type="Waiter")


@waiter.start()
async def wait_start(ctx: Context) -> Directive:
    return ctx.next.wait_for_event()


@waiter.event()
async def go(ctx: Context) -> Directive:
    return ctx.next.complete("went")


async def test_time_holds_still_while_a_step_works(grctl_env):
    env = await grctl_env(held)
    Gate.entered, Gate.release = asyncio.Event(), asyncio.Event()
    before = env.now() - MS  # the engine counts whole milliseconds
    await env.start(held, "h1")
    await Gate.entered.wait()
    assert await env.query("h1", "phase") == "holding"

    result = asyncio.ensure_future(env.result("h1"))  # awaiting a result skips time when idle
    skip = asyncio.ensure_future(env.skip(timedelta(hours=1)))
    # A kit that jumped now would fire the step's 1 s deadline: give it every chance to.
    done, _ = await asyncio.wait({result, skip}, timeout=0.1)
    assert not done
    assert env.now() - before < timedelta(hours=1)

    Gate.release.set()
    await skip
    assert await result == "finished"
    assert env.now() - before >= timedelta(hours=1)
    steps = [ev.step_name for ev in await env.history("h1") if ev.kind == "step_started"]
    assert steps == ["start", "work"]


async def test_a_run_timeout_fires_at_once_and_an_unlimited_wait_does_not_move_time(grctl_env):
    env = await grctl_env(waiter)
    await env.start(waiter, "forever", run_timeout=timedelta(hours=2))
    with pytest.raises(RunTimeout):
        await env.result("forever")

    before = env.now() - MS  # the engine counts whole milliseconds
    await env.start("Waiter", "patient")
    await env.skip(timedelta())  # settles: the run waits for its event
    info = await env.describe("patient")
    assert info.status == "waiting" and info.timers == []
    assert env.now() - before < timedelta(minutes=1)
    await env.send("patient", "go")
    assert await env.result("patient") == "went"


def test_misuse_gets_one_clear_error():
    with pytest.raises(TestEnvironmentError, match="takes Workflow objects"):
        WorkflowEnvironment(workflows=["Held"])  # type: ignore[list-item]
    with pytest.raises(TestEnvironmentError, match="not open"):
        WorkflowEnvironment(workflows=[held]).client  # noqa: B018

    async def both() -> None:
        async with WorkflowEnvironment(workflows=[held]) as env:
            with pytest.raises(TestEnvironmentError, match="time only moves forward"):
                await env.skip(timedelta(seconds=-1))
            with pytest.raises(TestEnvironmentError, match="another WorkflowEnvironment"):
                async with WorkflowEnvironment(workflows=[waiter]):
                    pass
            assert _clock.installed() is env.clock
        assert _clock.installed() is None

    asyncio.run(both())


USER_TESTS = """
import asyncio
from datetime import timedelta

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")


@order.start()
async def start(ctx: Context, order_id: str) -> Directive:
    return ctx.next.wait_for_event(
        timeout=timedelta(hours=24), timeout_step_name="auto_approve"
    )


@order.step()
async def auto_approve(ctx: Context) -> Directive:
    return ctx.next.complete("auto-approved")


@order.event()
async def approve(ctx: Context) -> Directive:
    return ctx.next.complete("approved")


async def test_nothing_arrives(grctl_env):
    env = await grctl_env(order)
    await env.start(order, "o1", {"order_id": "1"})
    assert await env.result("o1") == "auto-approved"


async def test_approved_in_time(grctl_env):
    async with grctl_env(order) as env:
        await env.start(order, "o2", {"order_id": "2"})
        await env.skip(timedelta(hours=23))
        await env.send("o2", "approve")
        assert await env.result("o2") == "approved"


async def test_fails_and_still_closes(grctl_env):
    env = await grctl_env(order)
    assert await env.result("nope") == "?"


def test_the_failing_one_was_closed():
    from grctl import _clock

    assert _clock.installed() is None


def test_a_sync_test_leaves_it_open(grctl_env):
    async def main():
        env = await grctl_env(order)
        await env.start(order, "o3", {"order_id": "3"})

    asyncio.run(main())
"""


def test_the_pytest_plugin_runs_async_tests_with_grctl_env(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*WorkflowNotFoundError*nope*"])
    result.stdout.fnmatch_lines(["*left open on an event loop that has ended*"])


asker = Workflow(workflow_type="Asker")
slow_child = Workflow(workflow_type="SlowChild")


@asker.start()
async def ask(ctx: Context, child_wait_s: int) -> Directive:
    handle = await ctx.start("SlowChild", f"{ctx.run.wf_id}-child", {"wait_s": child_wait_s})
    return ctx.next.complete(await handle.result())  # inside the step: its 10 s timeout holds


@slow_child.start()
async def slow_start(ctx: Context, wait_s: int) -> Directive:
    return ctx.next.wait_for_event(
        timeout=timedelta(seconds=wait_s), timeout_step_name="slow_gave_up"
    )


@slow_child.step()
async def slow_gave_up(ctx: Context) -> Directive:
    return ctx.next.complete("nobody came")


@slow_child.event()
async def come(ctx: Context) -> Directive:
    return ctx.next.complete("came")


async def test_a_step_awaiting_its_childs_result_lets_the_childs_timers_skip(grctl_env):
    env = await grctl_env(asker, slow_child)
    before = env.now()
    # The child's 5 s wait ends by a skip, not by 5 real seconds passing: the clock shows it.
    await env.start(asker, "asker-1", {"child_wait_s": 5})
    assert await env.result("asker-1") == "nobody came"
    assert env.now() - before >= timedelta(seconds=5)
    assert env.clock.skipped_ms >= 4000, "the parent's step held the clock still"
    # A child that outlasts the parent's step timeout fails that step, as in production: the
    # parent's step timer (10 s) comes before the child's hour.
    handle = await env.start(asker, "asker-2", {"child_wait_s": 3600})
    with pytest.raises(Exception) as failed:
        await handle.result()
    assert "timed out" in str(failed.value) or "StepTimeout" in str(failed.value), failed.value
