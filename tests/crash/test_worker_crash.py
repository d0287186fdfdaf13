"""A worker dies (kill -9) or stalls mid-step: another worker replays the step from its records.

Each test holds the victim at a barrier inside the step (see ``flows/crashy.py``), kills it by
pid, lets a second worker take the step over, and then checks from outside: the run's result,
the ledger of side effects against the history, and the database's integrity.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from grctl import protocol as p
from grctl._connection import Connection
from grctl.client import Client
from grctl.errors import StaleDispatchError, WorkflowFailedError
from grctl.models import Directive
from grctl_daemon.config import DEFAULT_HEARTBEAT_TIMEOUT_S
from tests.conftest import wait_until
from tests.crash.support import entries, history, of_kind, reached, release, result
from tests.flows.crashy import stall

pytestmark = pytest.mark.backends

FLOWS = "flows.crashy"


def ledger_env(ledger):
    return {"LEDGER": str(ledger)}


def start(daemon, workflow_type, workflow_id, workflow_input=None):
    return daemon.call(lambda c: c.start_workflow(workflow_type, workflow_id, workflow_input))


def by_pid(ledger):
    return [(op, pid) for op, pid, _ in entries(ledger)]


def test_completed_task_is_not_run_again(daemon, workers, ledger):
    victim = workers(FLOWS, env=ledger_env(ledger))
    start(daemon, "CrashDurableTasks", "durable-1")
    assert reached(ledger, "b") == victim.pid
    victim.kill9()
    survivor = workers(FLOWS, env=ledger_env(ledger))

    # task_a's outcome was recorded before the crash: the replay returns it without running it.
    # task_b was killed before its outcome was recorded, so it runs again. The store write of
    # the killed execution never committed, so the replay does not see it.
    assert result(daemon, "durable-1") == {"a": victim.pid, "b": survivor.pid, "earlier": None}
    assert by_pid(ledger) == [("A", victim.pid), ("B", victim.pid), ("B", survivor.pid)]
    events = history(daemon, "durable-1")
    assert [ev.kind for ev in events] == [
        "workflow_started",
        "step_started",
        "task_completed",
        "worker_lost",
        "step_started",
        "task_completed",
        "step_completed",
        "workflow_completed",
    ]
    assert [ev.data["name"] for ev in of_kind(events, "task_completed")] == ["task_a", "task_b"]
    first, second = of_kind(events, "step_started")
    assert (first.data["attempt"], first.data["replaying"]) == (1, 0)
    assert (second.data["attempt"], second.data["replaying"]) == (2, 1)
    assert first.data["worker"].endswith(f":{victim.pid}")
    assert second.data["worker"].endswith(f":{survivor.pid}")
    assert of_kind(events, "worker_lost")[0].data["attempt"] == 1
    info = daemon.call(lambda c: c.get_workflow_handle("durable-1").describe())
    assert info.store == {"half_done": survivor.pid}
    assert daemon.integrity_ok()


def test_deterministic_values_are_replayed(daemon, workers, ledger):
    victim = workers(FLOWS, env=ledger_env(ledger))
    start(daemon, "CrashValues", "values-1")
    assert reached(ledger, "values") == victim.pid
    victim.kill9()
    survivor = workers(FLOWS, env=ledger_env(ledger))

    out = result(daemon, "values-1")
    (op1, pid1, seen_first), (op2, pid2, seen_replay) = entries(ledger)
    assert (op1, pid1, op2, pid2) == ("values", victim.pid, "values", survivor.pid)
    assert seen_first == seen_replay == [out["now"], repr(out["random"]), out["uuid"]]
    kinds = [ev.kind for ev in history(daemon, "values-1")]
    assert (kinds.count("now"), kinds.count("random"), kinds.count("uuid4")) == (1, 1, 1)
    assert daemon.integrity_ok()


def test_task_retries_resume_at_the_recorded_attempt(daemon, workers, ledger):
    victim = workers(FLOWS, env=ledger_env(ledger))
    start(daemon, "CrashRetries", "retries-1")
    assert reached(ledger, "flaky") == victim.pid
    victim.kill9()
    survivor = workers(FLOWS, env=ledger_env(ledger))

    # Calls 1 and 2 fail and are recorded as attempts 1 and 2. Call 3 (attempt 3) is killed
    # before any outcome is recorded, so the replay makes attempt 3 again: that is call 4, which
    # succeeds. A replay that started over at attempt 1 would record attempts 1 and 2 twice.
    assert result(daemon, "retries-1") == {"call": 4}
    assert by_pid(ledger) == [("flaky", victim.pid)] * 3 + [("flaky", survivor.pid)]
    events = history(daemon, "retries-1")
    assert [ev.data["attempt"] for ev in of_kind(events, "task_attempt_failed")] == [1, 2]
    assert [ev.data["attempt"] for ev in of_kind(events, "task_completed")] == [3]
    assert [ev.data["replaying"] for ev in of_kind(events, "step_started")] == [0, 2]
    assert daemon.integrity_ok()


def test_recorded_terminal_failure_is_raised_again_without_calling_the_task(
    daemon, workers, ledger
):
    victim = workers(FLOWS, env=ledger_env(ledger))
    start(daemon, "CrashTerminalFailure", "terminal-1")
    assert reached(ledger, "terminal") == victim.pid
    victim.kill9()
    survivor = workers(FLOWS, env=ledger_env(ledger))

    assert result(daemon, "terminal-1") == {"caught": "card declined for 42"}
    # The charge ran once; both executions of the step took the except branch.
    assert by_pid(ledger) == [
        ("charge", victim.pid),
        ("caught", victim.pid),
        ("caught", survivor.pid),
    ]
    (failed,) = of_kind(history(daemon, "terminal-1"), "task_failed")
    assert failed.data["name"] == "declined_charge"
    assert failed.data["error"]["type"] == "PaymentDeclined"
    assert daemon.integrity_ok()


@pytest.mark.parametrize("change", ["other-args", "other-task"])
def test_divergent_replay_fails_with_non_determinism(daemon, workers, ledger, change):
    choice = ledger.parent / "choice.txt"
    choice.write_text("first")
    victim = workers(FLOWS, env=ledger_env(ledger))
    start(daemon, "CrashDivergent", "divergent-1")
    assert reached(ledger, "divergent") == victim.pid
    victim.kill9()
    choice.write_text(change)
    workers(FLOWS, env=ledger_env(ledger))

    with pytest.raises(WorkflowFailedError) as failed:
        result(daemon, "divergent-1")
    error = failed.value.details
    assert error["type"] == "StepFailed"
    assert error["details"]["cause"] == "NonDeterminismError"
    assert "diverged from its recorded history at operation #0" in error["message"]
    # The divergent call was refused before it ran: only the first execution's pick happened.
    assert entries(ledger) == [("pick", victim.pid, ["first"])]
    events = history(daemon, "divergent-1")
    assert len(of_kind(events, "task_completed")) == 1
    assert of_kind(events, "step_failed")[0].data["will_retry"] is False
    assert daemon.integrity_ok()


def test_lost_worker_step_is_dispatched_again_at_once(daemon, workers, ledger):
    first = workers(FLOWS, env=ledger_env(ledger))
    second = workers(FLOWS, env=ledger_env(ledger))
    start(daemon, "CrashStall", "stall-1")
    holder = reached(ledger, "stall")
    victim, survivor = (first, second) if holder == first.pid else (second, first)
    assert holder == victim.pid

    killed_at = time.monotonic()
    victim.kill9()
    out = result(daemon, "stall-1")
    # A dropped connection is noticed at once: no wait for the heartbeat timeout.
    assert time.monotonic() - killed_at < 3 < DEFAULT_HEARTBEAT_TIMEOUT_S
    assert out == {"first": victim.pid, "last": survivor.pid}
    assert by_pid(ledger) == [("before", victim.pid), ("after", survivor.pid)]
    events = history(daemon, "stall-1")
    assert len(of_kind(events, "worker_lost")) == 1
    assert [ev.data["attempt"] for ev in of_kind(events, "step_started")] == [1, 2]
    assert daemon.integrity_ok()


def test_stalled_worker_is_replaced_and_its_step_cancelled(daemon, workers, ledger):
    assert daemon.stop() == 0
    daemon.start(env={"GRCTL_HEARTBEAT_TIMEOUT": "3"})  # workers heartbeat every 2 s
    stalled = workers(FLOWS, env=ledger_env(ledger))
    start(daemon, "CrashStall", "stall-2")
    assert reached(ledger, "stall") == stalled.pid
    replacement = workers(FLOWS, env=ledger_env(ledger))

    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        out = result(daemon, "stall-2")
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    assert out == {"first": stalled.pid, "last": replacement.pid}

    # Resumed, the stalled worker finds its connection closed and cancels its step instead of
    # finishing it: the side effect after the barrier happened once, on the replacement.
    cancelled = ledger.parent / "stall.cancelled"
    wait_until(cancelled.exists, message="the stalled worker cancelling its step")
    assert int(cancelled.read_text()) == stalled.pid
    wait_until(lambda: len(daemon.status()["workers"]) == 2, message="stalled worker reconnected")
    assert by_pid(ledger) == [("before", stalled.pid), ("after", replacement.pid)]
    assert "missed its heartbeats" in daemon.log.read_text()
    assert len(of_kind(history(daemon, "stall-2"), "worker_lost")) == 1
    assert daemon.integrity_ok()


def test_late_result_from_a_lost_worker_is_refused(daemon, workers, ledger):
    """A late report carrying the lost dispatch's fencing token changes nothing.

    The SDK worker never sends one (it cancels its steps when its connection drops, see the test
    above), so this test speaks the wire itself to play a worker that does: it takes the step,
    disconnects, and reports on a new connection while the replacement holds the step.
    """

    async def take_step_and_vanish() -> str:
        pushed: asyncio.Queue[p.Message] = asyncio.Queue()
        conn = await Connection.open(daemon.socket, "worker", "zombie", on_push=pushed.put_nowait)
        try:
            await conn.request(lambda r: p.RegisterWorker(r, [stall.definition()], 1))
            async with await Client.connect(daemon.socket) as client:
                await client.start_workflow("CrashStall", "late-1")
            dispatch = await asyncio.wait_for(pushed.get(), 10)
            assert isinstance(dispatch, p.DispatchStep)
            return dispatch.dispatch_id
        finally:
            await conn.close()

    lost_dispatch = asyncio.run(take_step_and_vanish())
    wait_until(lambda: not daemon.status()["workers"], message="the zombie worker gone")
    survivor = workers(FLOWS, env=ledger_env(ledger))
    assert reached(ledger, "stall") == survivor.pid

    async def report_late() -> None:
        conn = await Connection.open(daemon.socket, "worker", "zombie")
        record = {"op": 0, "kind": "task", "name": "before_hold", "status": "ok", "value": 0}
        directive = Directive("complete", result="zombie").to_wire()
        directive["result"] = p.wrap_value("zombie")
        try:
            with pytest.raises(StaleDispatchError):
                await conn.request(
                    lambda r: p.RecordOutcome(r, lost_dispatch, p.wrap_value(record))
                )
            with pytest.raises(StaleDispatchError):
                await conn.request(lambda r: p.CompleteStep(r, lost_dispatch, directive=directive))
        finally:
            await conn.close()

    asyncio.run(report_late())
    release(ledger, "stall")
    assert result(daemon, "late-1") == {"first": survivor.pid, "last": survivor.pid}
    assert by_pid(ledger) == [("before", survivor.pid), ("after", survivor.pid)]
    events = history(daemon, "late-1")
    assert [ev.kind for ev in events] == [
        "workflow_started",
        "step_started",
        "worker_lost",
        "step_started",
        "task_completed",
        "task_completed",
        "step_completed",
        "workflow_completed",
    ]
    assert daemon.integrity_ok()
