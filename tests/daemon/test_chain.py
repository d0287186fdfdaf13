"""Chained steps (``grctl.worker._chain``): a worker runs a run's next pure steps in place and
reports them in one CompleteStep, which the daemon decides step by step and commits as one unit.

Real daemon, real worker processes, both backends; a raw worker connection for what a careless
or hostile worker may send.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest

from grctl import protocol as p
from grctl._connection import Connection
from grctl.errors import InvalidInputError, StaleDispatchError, WorkflowAlreadyRunningError
from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow
from tests.conftest import GRCTL, Daemon, read_ledger, wait_until
from tests.daemon.test_guarantees import describe, history, result, start

pytestmark = pytest.mark.backends

FLOWS = "flows.ch_chain"
# The worker chains steps for 5 ms, then reports: on a loaded machine a chain may be cut short
# there (still correct, less chained). These tests count chained steps, so the clock is lifted.
UNCUT = {"GRCTL_CHAIN_BUDGET_MS": "60000"}


def started(daemon: Daemon, workflow_id: str) -> list[tuple[str | None, dict[str, Any]]]:
    return [(e.step_name, e.data) for e in history(daemon, workflow_id) if e.kind == "step_started"]


def test_pure_steps_run_in_place_and_pass_the_store_on_as_written(daemon, workers, ledger):
    workers(FLOWS, env=UNCUT)
    start(daemon, "ChFive", "five-1", {"n": 7})
    trail = ["start", "two", "three", "four", "five"]
    assert result(daemon, "five-1") == {"trail": trail, "n": 7}
    # Each step ran once, and the history tells each one, in order, the chained ones marked.
    assert read_ledger(ledger) == [f"five-1 {name}" for name in trail]
    steps = started(daemon, "five-1")
    assert [name for name, _ in steps] == [
        "five_start",
        "five_two",
        "five_three",
        "five_four",
        "five_five",
    ]
    assert [data.get("chained", False) for _, data in steps] == [False] + [True] * 4
    assert all(data["attempt"] == 1 for _, data in steps)
    kinds = [e.kind for e in history(daemon, "five-1")]
    assert kinds.count("step_completed") == 5 and kinds[-1] == "workflow_completed"
    assert describe(daemon, "five-1").store == {"trail": trail, "n": 7}
    # Timed when they ran on the worker, in order: five_five's 50 ms show, the others' do not.
    events = history(daemon, "five-1")
    times = [e.time for e in events]
    assert times == sorted(times)
    spans = {
        e.step_name: e.time
        for e in events
        if e.kind == "step_started" and e.step_name in ("five_four", "five_five")
    }
    ended = {e.step_name: e.time for e in events if e.kind == "step_completed"}
    took = {name: (ended[name] - began).total_seconds() for name, began in spans.items()}
    assert took["five_five"] >= 0.05
    # Not a bound on a clock (a loaded machine may pause any step): five_four, timed on its own,
    # took less than five_five, which also slept 50 ms.
    assert took["five_four"] < took["five_five"], took
    # grctl history says which steps ran chained.
    table = subprocess.run(
        [GRCTL, "history", "five-1"], env=daemon.env(), capture_output=True, text=True, timeout=30
    )
    assert table.returncode == 0, table.stderr
    assert table.stdout.count(" chained") == 4, table.stdout


def test_a_run_of_five_pure_steps_takes_far_fewer_commits_than_steps(daemon, workers, ledger):
    workers(FLOWS, env=UNCUT)
    start(daemon, "ChFive", "five-warm", {"n": 0})  # the first run of a type, out of the count
    result(daemon, "five-warm")
    before = daemon.status()["commits"]["transactions"]
    start(daemon, "ChFive", "five-2", {"n": 2})
    assert result(daemon, "five-2")["n"] == 2
    # One step per commit would be six (the start, then each step); five with the first step
    # handed out early and committed with the start. Chained too, it is one; two if the writer
    # stopped waiting for the chain, three if a busy machine also cut the chain short.
    assert daemon.status()["commits"]["transactions"] - before <= 3


def test_a_chained_step_waits_for_the_commit_before_its_task_runs(daemon, workers, ledger):
    workers(FLOWS, env=UNCUT)
    start(daemon, "ChTask", "task-1")
    assert result(daemon, "task-1") == "receipt-42"
    assert read_ledger(ledger) == ["task-1 start", "task-1 before the task", "task-1 charged 42"]
    events = history(daemon, "task-1")
    kinds = [(e.kind, e.step_name) for e in events]
    # tasked_start is committed before the task's outcome: the task ran after that commit.
    assert kinds.index(("step_completed", "tasked_start")) < kinds.index(
        ("task_completed", "tasked_charge")
    )
    steps = started(daemon, "task-1")
    assert [(name, data.get("chained", False)) for name, data in steps] == [
        ("tasked_start", False),
        ("tasked_charge", True),  # adopted by its worker when the task asked for the commit
        ("tasked_done", True),
    ]


def test_chaining_off_reports_every_step_alone(daemon, workers, ledger):
    daemon.stop()
    daemon.start(env={"GRCTL_CHAIN_STEPS": "0"})
    workers(FLOWS, env=UNCUT)
    start(daemon, "ChFive", "five-off", {"n": 1})
    assert result(daemon, "five-off")["n"] == 1
    steps = started(daemon, "five-off")
    assert len(steps) == 5 and not any(data.get("chained") for _, data in steps)


def test_a_worker_killed_in_a_chain_loses_only_uncommitted_steps(daemon, workers, ledger):
    first = workers(FLOWS, env=UNCUT)
    start(daemon, "ChStuck", "stuck-1")
    wait_until(lambda: "stuck-1 block" in read_ledger(ledger), message="the chained step runs")
    first.kill9()  # the start step's outcome was never reported: it goes out again
    (daemon.home / "unblock").touch()
    workers(FLOWS, env=UNCUT)
    assert result(daemon, "stuck-1") == 1
    steps = started(daemon, "stuck-1")
    assert [(name, data["attempt"]) for name, data in steps] == [
        ("stuck_start", 1),
        ("stuck_start", 2),  # after a worker loss a step goes alone: no chain
        ("stuck_block", 1),
    ]
    kinds = [e.kind for e in history(daemon, "stuck-1")]
    assert kinds.count("step_completed") == 2
    assert read_ledger(ledger) == [
        "stuck-1 start",
        "stuck-1 block",
        "stuck-1 start",
        "stuck-1 block",
    ]


def test_a_start_the_database_refuses_runs_no_task_of_its_early_step(daemon, workers, ledger):
    workers(FLOWS, env=UNCUT)
    start(daemon, "ChOnce", "once-1")
    wait_until(lambda: describe(daemon, "once-1").status.value == "waiting", message="waiting")
    assert daemon.stop() == 0  # the restarted daemon holds no run in memory
    daemon.start()
    wait_until(lambda: daemon.status()["workers"], message="the worker registered again")
    # Only the database knows once-1 is running: the start is decided, its first step handed
    # out early, and the unit refused by the one-active-run index. The step's task asked
    # first (Settle) and was told no, or the step was stopped before it asked.
    with pytest.raises(WorkflowAlreadyRunningError):
        start(daemon, "ChOnce", "once-1")
    daemon.call(lambda c: c.get_workflow_handle("once-1").send("once_done"))
    assert result(daemon, "once-1") == "done"
    assert read_ledger(ledger) == ["once-1 charged 1"]


# -- what a careless or hostile worker may send -------------------------------------------------

raw = Workflow(workflow_type="ChRaw")


@raw.start()
async def raw_start(ctx: Context) -> Directive:
    return ctx.next.step(raw_next)


@raw.step()
async def raw_next(ctx: Context) -> Directive:
    return ctx.next.complete("done")


def test_a_bad_chain_is_refused_whole_and_a_wrong_one_is_cut(daemon):
    async def go() -> None:
        pushes: asyncio.Queue[p.Message] = asyncio.Queue()
        conn = await Connection.open(daemon.socket, "worker", "raw", on_push=pushes.put_nowait)
        try:
            await conn.request(lambda r: p.RegisterWorker(r, [raw.definition()], 10))
            client = await Connection.open(daemon.socket)
            await client.request(lambda r: p.StartWorkflow(r, "ChRaw", "raw-1", p.wrap_value(None)))
            await client.close()
            d = await asyncio.wait_for(pushes.get(), 10)
            assert isinstance(d, p.DispatchStep) and d.chain > 0
            # A run's first step goes out early: Settle answers once its start is durable; a
            # dispatch that is not current is refused.
            assert d.early
            assert await conn.request(lambda r: p.Settle(r, d.dispatch_id)) is None
            with pytest.raises(StaleDispatchError):
                await conn.request(lambda r: p.Settle(r, "nope.1.1"))
            directive = {"kind": "step", "step_name": "raw_next", "result": p.wrap_value(None)}
            for chain in ([1], [{"directive": {}}], [{"step_name": "raw_next", "store_writes": 3}]):
                with pytest.raises(InvalidInputError):
                    await conn.request(
                        lambda r, chain=chain: p.CompleteStep(
                            r, d.dispatch_id, directive=directive, chain=chain
                        )
                    )
            with pytest.raises(InvalidInputError, match="allows"):
                await conn.request(
                    lambda r: p.CompleteStep(
                        r, d.dispatch_id, directive=directive, chain=[{"step_name": "x"}] * 5000
                    )
                )
            # A chained step the daemon did not schedule is dropped: the step it did goes out.
            wrong = {"step_name": "raw_start", "directive": {"kind": "complete", "result": None}}
            await conn.request(
                lambda r: p.CompleteStep(r, d.dispatch_id, directive=directive, chain=[wrong])
            )
            nxt = await asyncio.wait_for(pushes.get(), 10)
            assert isinstance(nxt, p.DispatchStep) and nxt.step_name == "raw_next"
            done = {"kind": "complete", "result": p.wrap_value("done")}
            await conn.request(lambda r: p.CompleteStep(r, nxt.dispatch_id, directive=done))
        finally:
            await conn.close()

    asyncio.run(go())
    assert result(daemon, "raw-1") == "done"
    assert [name for name, _ in started(daemon, "raw-1")] == ["raw_start", "raw_next"]


@pytest.mark.parametrize("budget", ["soon", "-1", "600000"])
def test_a_bad_chain_budget_stops_the_worker_in_one_line(daemon, workers, budget):
    w = workers(FLOWS, env={"GRCTL_CHAIN_BUDGET_MS": budget}, wait=False)
    assert w.proc.wait(15) == 2
    out = w.output()
    assert "GRCTL_CHAIN_BUDGET_MS must be a number of milliseconds" in out, out
    assert repr(budget) in out and "Traceback" not in out, out
    assert daemon.status()["workers"] == []
