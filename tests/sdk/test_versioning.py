"""``ctx.patched`` replay, in-process, and the static check ``grctl check`` runs on a step.

A step is run on a ``StepRun`` fed with the records an earlier execution left (no daemon):
first by code written before a patch, then by the patched code, as a replay after a crash and
as a first execution. ``grctl.versioning`` is then asked about the same code.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from grctl import task
from grctl.errors import NonDeterminismError, WorkflowDefinitionError
from grctl.versioning import Op, operations, replays
from grctl.worker._replay import StepRun, current_step
from grctl.worker.context import Context, RunInfo
from grctl.workflow import Workflow

done: list[str] = []


@task
async def reserve() -> str:
    done.append("reserve")
    return "r"


@task
async def fraud_check() -> str:
    done.append("fraud_check")
    return "f"


@task
async def charge() -> str:
    done.append("charge")
    return "c"


wf = Workflow(workflow_type="VsOrder")


@wf.start()
async def begin(ctx: Context) -> Any:
    return ctx.next.complete()


async def old_pay(ctx: Context) -> Any:
    await reserve()
    await charge()
    return ctx.next.complete()


async def new_pay(ctx: Context) -> Any:
    await reserve()
    if await ctx.patched("add-fraud-check"):
        await fraud_check()
    await charge()
    return ctx.next.complete()


async def unguarded_pay(ctx: Context) -> Any:
    await reserve()
    await fraud_check()
    await charge()
    return ctx.next.complete()


def execute(fn: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``fn`` as a step over ``records``; returns the records the step added."""
    added: list[dict[str, Any]] = []

    async def record(rec: dict[str, Any]) -> None:
        added.append(rec)

    async def go() -> None:
        step = StepRun("pay", records, record)
        ctx = Context(wf, RunInfo("01RUN", "vs-1", "VsOrder"), "pay", {}, step, None)  # type: ignore[arg-type]
        token = current_step.set(step)
        try:
            await fn(ctx)
            step.check_finished()
        finally:
            current_step.reset(token)

    done.clear()
    asyncio.run(go())
    return added


def kinds(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["kind"], r.get("name", "")) for r in records]


def test_patched_is_true_and_recorded_on_a_first_execution():
    added = execute(new_pay, [])
    assert done == ["reserve", "fraud_check", "charge"]
    assert kinds(added) == [
        ("task", "reserve"),
        ("patched", "add-fraud-check"),
        ("task", "fraud_check"),
        ("task", "charge"),
    ]
    assert added[1]["value"] is True and [r["op"] for r in added] == [0, 1, 2, 3]


def test_patched_replays_its_record_and_its_branch():
    first = execute(new_pay, [])
    assert execute(new_pay, first) == [] and done == []


def test_patched_is_false_in_a_step_recorded_by_the_old_code_and_keeps_its_ops_aligned():
    old = execute(old_pay, [])
    assert execute(new_pay, old) == [], "nothing re-run, nothing recorded"
    assert done == []


def test_patched_is_false_mid_way_then_new_code_runs_past_the_old_records():
    old = execute(old_pay, [])[:1]  # the old code crashed after reserve
    added = execute(new_pay, old)
    # At op 1 nothing is recorded: the step runs new code from there on.
    assert done == ["fraud_check", "charge"]
    assert kinds(added) == [
        ("patched", "add-fraud-check"),
        ("task", "fraud_check"),
        ("task", "charge"),
    ]


def test_without_patched_the_old_records_do_not_replay():
    old = execute(old_pay, [])
    with pytest.raises(NonDeterminismError, match="operation #1"):
        execute(unguarded_pay, old)


def test_patched_needs_a_change_id():
    async def bad(ctx: Context) -> Any:
        await ctx.patched("")

    with pytest.raises(WorkflowDefinitionError, match="change id"):
        execute(bad, [])


OLD = [Op("task", "reserve"), Op("task", "charge")]


def test_the_static_check_agrees_with_replay():
    assert replays(OLD, operations(old_pay)).ok
    assert replays(OLD, operations(new_pay)).ok
    patched = [Op("task", "reserve"), Op("patched", "add-fraud-check"), Op("task", "fraud_check")]
    assert replays(patched, operations(new_pay)).ok
    verdict = replays(OLD, operations(unguarded_pay))
    assert not verdict.ok and verdict.at_op == 1
    assert verdict.why() == (
        "recorded operation #1 is task 'charge', where the new code makes task 'fraud_check'"
    )


def test_a_removed_operation_and_an_early_return_are_found():
    async def shorter(ctx: Context) -> Any:
        await reserve()
        return ctx.next.complete()

    verdict = replays(OLD, operations(shorter))
    assert not verdict.ok and "returns before it" in verdict.why()


def test_branches_loops_and_ctx_values_are_followed():
    async def looped(ctx: Context) -> Any:
        when = await ctx.now()
        for _ in range(3):
            await reserve()
        if when.year > 2000:
            await charge()
        else:
            await fraud_check()
        await asyncio.sleep(0)  # not an operation
        return ctx.next.complete()

    pattern = operations(looped)
    assert pattern is not None
    reserves = [Op("task", "reserve")] * 3
    assert replays([Op("now", ""), *reserves, Op("task", "charge")], pattern).ok
    assert replays([Op("now", ""), Op("task", "fraud_check")], pattern).ok
    assert not replays([Op("task", "reserve")], pattern).ok


def test_a_helper_it_cannot_see_into_matches_anything():
    async def helper() -> None:
        await charge()

    async def with_helper(ctx: Context) -> Any:
        await reserve()
        await helper()
        return ctx.next.complete()

    assert replays(OLD, operations(with_helper)).ok


def test_a_try_may_stop_anywhere_in_its_body_and_go_on_in_its_handler():
    async def guarded(ctx: Context) -> Any:
        try:
            await reserve()
            await charge()
        except RuntimeError:
            await fraud_check()
        return ctx.next.complete()

    pattern = operations(guarded)
    assert pattern is not None
    assert replays([Op("task", "reserve"), Op("task", "fraud_check")], pattern).ok
    assert replays([Op("task", "fraud_check")], pattern).ok
    assert not replays([Op("task", "charge")], pattern).ok


def test_patched_kept_in_a_variable_is_optional_too():
    async def flagged(ctx: Context) -> Any:
        await reserve()
        check = await ctx.patched("add-fraud-check")
        if check:
            await fraud_check()
        await charge()
        return ctx.next.complete()

    assert replays(OLD, operations(flagged)).ok
    assert execute(flagged, execute(old_pay, [])) == []


def test_a_long_loop_is_checked_without_deep_recursion():
    async def many(ctx: Context) -> Any:
        for _ in range(20_000):
            await ctx.random()
            await charge()
        return ctx.next.complete()

    records = [Op("random", ""), Op("task", "charge")] * 10_000
    assert replays(records, operations(many)).ok
    assert not replays([*records, Op("task", "reserve")], operations(many)).ok


def test_check_judges_a_run_waiting_for_its_child_by_the_step_it_wakes_at():
    from grctl import ChildResult
    from grctl.workflow import Workflow
    from grctl_cli.check_runs import judge

    wf = Workflow(workflow_type="ChildWaiter")

    @wf.start()
    async def begin(ctx):
        return ctx.next.complete()

    @wf.step()
    async def on_child(ctx, child: ChildResult):
        return ctx.next.complete()

    waiting = {
        "workflow_id": "p-1",
        "run_id": "R1",
        "workflow_type": "ChildWaiter",
        "status": "waiting",
        "handler_kind": "child",
        "deployed": {"events": ["approve"], "queries": [], "steps": ["on_child"]},
    }
    assert not judge({**waiting, "step_name": "on_child"}, [], wf).findings
    gone = judge({**waiting, "step_name": "on_kid"}, [], wf)
    assert gone.breaks and "'on_kid'" in gone.findings[0].why
