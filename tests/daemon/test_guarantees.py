"""SPEC.md section 3 against the real daemon and real worker processes, one test per guarantee.

The flows live in tests/flows/gd_guarantees.py. A step that must be caught mid-flight waits on a
barrier file (``hold(name)`` in tests/flows/gd_util.py): it writes ``reached NAME`` to the ledger,
and the test releases it by creating ``<home>/NAME``. Crash recovery of the daemon itself is
tests/crash/'s job; here a worker is killed at most.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from grctl.client import Client, WorkflowHandle
from grctl.errors import (
    UnknownQueryError,
    WorkflowAlreadyRunningError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotRunningError,
)
from grctl.models.run import HistoryEvent, RunInfo
from grctl.workflow import DEFAULT_STEP_TIMEOUT
from tests.conftest import Daemon, read_ledger, wait_until

pytestmark = pytest.mark.backends

FLOWS = "flows.gd_guarantees"


# -- helpers --------------------------------------------------------------------------------


def release(daemon: Daemon, name: str) -> None:
    (daemon.home / name).touch()


def wait_reached(ledger: Path, name: str, times: int = 1) -> None:
    wait_until(
        lambda: read_ledger(ledger).count(f"reached {name}") >= times,
        message=f"a step at barrier {name!r} ({times}x)",
    )


def start(daemon: Daemon, workflow_type: str, workflow_id: str, workflow_input: Any = None):
    return daemon.call(lambda c: c.start_workflow(workflow_type, workflow_id, workflow_input))


def describe(daemon: Daemon, workflow_id: str) -> RunInfo:
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).describe())


def history(daemon: Daemon, workflow_id: str) -> list[HistoryEvent]:
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).history())


def kinds(daemon: Daemon, workflow_id: str) -> list[str]:
    return [ev.kind for ev in history(daemon, workflow_id)]


def result(daemon: Daemon, workflow_id: str, timeout: float = 10) -> Any:
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).result(timeout=timeout))


def failure(daemon: Daemon, workflow_id: str) -> dict[str, Any]:
    with pytest.raises(WorkflowFailedError) as caught:
        result(daemon, workflow_id)
    return caught.value.details


def status_is(daemon: Daemon, workflow_id: str, status: str) -> bool:
    return describe(daemon, workflow_id).status.value == status


def on(daemon: Daemon, workflow_id: str, method: str, *args: Any) -> Any:
    return daemon.call(lambda c: getattr(c.get_workflow_handle(workflow_id), method)(*args))


# -- 2. one active run per workflow_id ------------------------------------------------------


def test_one_active_run_per_workflow_id_and_a_new_ulid_per_run(daemon, workers):
    workers(FLOWS)

    async def race() -> list[WorkflowHandle | BaseException]:
        clients = [await Client.connect(daemon.socket) for _ in range(8)]
        try:
            return await asyncio.gather(
                *(c.start_workflow("GdSolo", "solo") for c in clients), return_exceptions=True
            )
        finally:
            for c in clients:
                await c.close()

    outcomes = asyncio.run(race())
    winners = [o for o in outcomes if isinstance(o, WorkflowHandle)]
    losers = [o for o in outcomes if not isinstance(o, WorkflowHandle)]
    assert len(winners) == 1, outcomes
    assert len(losers) == 7 and all(isinstance(o, WorkflowAlreadyRunningError) for o in losers)
    first = winners[0].run_id
    assert all(o.workflow_id == "solo" for o in losers)
    assert daemon.call(lambda c: c.list_workflows(workflow_type="GdSolo"))[0].run_id == first

    on(daemon, "solo", "send", "solo_finish", {"value": 1})
    assert result(daemon, "solo") == 1

    second = start(daemon, "GdSolo", "solo").run_id
    assert second != first
    assert ULID.from_str(second).timestamp >= ULID.from_str(first).timestamp
    wait_until(lambda: status_is(daemon, "solo", "waiting"), message="second run waiting")
    runs = daemon.call(lambda c: c.list_workflows(workflow_type="GdSolo"))
    assert [(r.run_id, r.status.value) for r in runs] == [
        (second, "waiting"),
        (first, "completed"),
    ]
    on(daemon, "solo", "send", "solo_finish", {"value": 2})
    assert result(daemon, "solo") == 2


def test_result_right_after_the_last_event_waits_for_the_durable_end(daemon, workers):
    # The run ends in the daemon's memory a moment before the end is committed; a result
    # request landing in between must wait for the commit, not answer "running".
    workers(FLOWS)
    for n in range(15):
        wid = f"quick-{n}"
        start(daemon, "GdSolo", wid)
        wait_until(lambda wid=wid: status_is(daemon, wid, "waiting"), message=wid)
        on(daemon, wid, "send", "solo_finish", {"value": n})
        assert result(daemon, wid) == n


# -- 1. atomic steps (the non-crash part) ---------------------------------------------------


def test_a_step_that_raises_leaves_no_trace_of_its_store_writes(daemon, workers):
    workers(FLOWS)
    start(daemon, "GdAtomic", "atomic-1")
    error = failure(daemon, "atomic-1")
    assert error["type"] == "StepFailed" and error["details"]["cause"] == "RuntimeError"
    info = describe(daemon, "atomic-1")
    assert info.store == {"committed": 1}, "only the start handler's committed write is there"
    completed = [ev for ev in history(daemon, "atomic-1") if ev.kind == "step_completed"]
    assert [ev.step_name for ev in completed] == ["atomic_start"]


# -- 6. FIFO inbox --------------------------------------------------------------------------


def test_events_sent_before_the_wait_are_handled_in_send_order_exactly_once(
    daemon, workers, ledger
):
    workers(FLOWS)
    start(daemon, "GdInbox", "fifo")
    wait_reached(ledger, "fifo")
    for n in range(1, 6):
        on(daemon, "fifo", "send", "item", {"n": n})
    on(daemon, "fifo", "send", "inbox_done")
    pending = daemon.call(lambda c: c.get_workflow_handle("fifo").inbox())
    assert [(e.seq, e.state) for e in pending] == [(n, "pending") for n in range(1, 7)]

    release(daemon, "fifo")
    assert result(daemon, "fifo") == [1, 2, 3, 4, 5]
    assert [line for line in read_ledger(ledger) if line.startswith("item")] == [
        f"item {n}" for n in range(1, 6)
    ]
    inbox = daemon.call(lambda c: c.get_workflow_handle("fifo").inbox())
    assert [(e.seq, e.event_name, e.payload, e.state, e.step_name) for e in inbox] == [
        *[(n, "item", {"n": n}, "dispatched", "item") for n in range(1, 6)],
        (6, "inbox_done", None, "dispatched", "inbox_done"),
    ]
    dispatched = [
        ev.data["inbox_seq"] for ev in history(daemon, "fifo") if ev.kind == "event_dispatched"
    ]
    assert dispatched == [1, 2, 3, 4, 5, 6]


# -- 7. wait timeouts -----------------------------------------------------------------------


def test_a_wait_timeout_runs_the_timeout_step(daemon, workers, ledger):
    workers(FLOWS)
    start(daemon, "GdWait", "w-expires", {"timeout_ms": 500})
    assert result(daemon, "w-expires") == "timed out"
    assert "wait_timed_out" in kinds(daemon, "w-expires")
    assert read_ledger(ledger) == ["w-expires timed out"]


def test_an_event_voids_the_wait_timer_and_a_bare_wait_has_no_limit(daemon, workers, ledger):
    workers(FLOWS)
    start(daemon, "GdWait", "w-bare")
    start(daemon, "GdWait", "w-pinged", {"timeout_ms": 500})
    on(daemon, "w-pinged", "send", "ping")
    wait_until(lambda: "w-pinged ping" in read_ledger(ledger), message="ping handled")
    # A witness armed later than both: once its timeout step ran, every earlier deadline (the
    # voided 0.5 s timer of w-pinged) has passed through the timer heap too, and >1 s went by.
    start(daemon, "GdWait", "w-witness", {"timeout_ms": 1_200})
    assert result(daemon, "w-witness") == "timed out"

    assert "wait_timed_out" not in kinds(daemon, "w-pinged")
    assert "w-pinged timed out" not in read_ledger(ledger)
    pinged = describe(daemon, "w-pinged")
    assert pinged.status.value == "waiting" and pinged.timers == []
    bare = describe(daemon, "w-bare")
    assert bare.status.value == "waiting" and bare.timers == []
    assert (bare.updated_at - bare.created_at).total_seconds() < 1, "nothing happened to it"

    for wid in ("w-bare", "w-pinged"):
        on(daemon, wid, "send", "wait_finish")
        assert result(daemon, wid) == "finished"


# -- 7. step timeouts and retry policies ----------------------------------------------------


def test_a_step_over_its_timeout_fails_the_run_with_step_timeout(daemon, workers):
    w = workers(FLOWS)
    start(daemon, "GdTimeout", "t-sleepy", {"mode": "sleepy"})
    error = failure(daemon, "t-sleepy")
    assert error["type"] == "StepTimeout" and error["details"]["step_name"] == "sleepy"
    timed_out = [ev for ev in history(daemon, "t-sleepy") if ev.kind == "step_timed_out"]
    assert len(timed_out) == 1 and timed_out[0].data["will_retry"] is False
    wait_until(
        lambda: "stopped by the daemon: step timed out" in w.output(),
        message="the worker stopping the timed-out step",
    )


def test_a_step_retry_policy_retries_a_raising_step_until_it_succeeds(daemon, workers, ledger):
    workers(FLOWS)
    start(daemon, "GdTimeout", "t-flaky", {"mode": "flaky"})
    assert result(daemon, "t-flaky") == 3
    assert read_ledger(ledger).count("t-flaky flaky") == 3
    assert describe(daemon, "t-flaky").store == {"try3": 3}, "failed attempts commit nothing"
    failed = [
        ev.data["will_retry"] for ev in history(daemon, "t-flaky") if ev.kind == "step_failed"
    ]
    assert failed == [True, True]


def test_a_step_that_always_raises_fails_with_step_failed_after_max_attempts(
    daemon, workers, ledger
):
    workers(FLOWS)
    start(daemon, "GdTimeout", "t-broken", {"mode": "broken"})
    error = failure(daemon, "t-broken")
    assert error["type"] == "StepFailed"
    assert error["details"] == {"step_name": "always_broken", "cause": "ValueError", "attempts": 3}
    events = history(daemon, "t-broken")
    assert [ev.data["will_retry"] for ev in events if ev.kind == "step_failed"] == [
        True,
        True,
        False,
    ]
    attempts = [ev.data["attempt"] for ev in events if ev.kind == "step_started"]
    assert attempts[-3:] == [1, 2, 3]
    assert read_ledger(ledger).count("t-broken broken") == 3


def test_the_default_step_timeout_is_ten_seconds(daemon, workers, ledger):
    workers(FLOWS)
    start(daemon, "GdTimeout", "t-default", {"mode": "default"})
    wait_reached(ledger, "t-default")
    # Its worker ran it in place after the start, and hands it over at its first wait: the
    # daemon shows it once that hand-over is committed.
    info = wait_until(
        lambda: (i := describe(daemon, "t-default")).step_name == "default_timeout" and i,
        message="the step handed over",
    )
    started = [ev for ev in history(daemon, "t-default") if ev.kind == "step_started"][-1]
    started_ms = round(started.time.timestamp() * 1000)
    assert [t["kind"] for t in info.timers] == ["step"]
    assert abs(info.timers[0]["due_ms"] - started_ms - 10_000) <= 2
    assert DEFAULT_STEP_TIMEOUT.total_seconds() == 10
    release(daemon, "t-default")
    assert result(daemon, "t-default") == "released"


# -- 8. queries -----------------------------------------------------------------------------


def test_queries_read_the_committed_store_and_change_nothing(daemon, workers, ledger):
    workers(FLOWS)
    start(daemon, "GdQuery", "q-1")
    wait_reached(ledger, "q-1")
    # query_second has put status="two" but not returned: the committed value is "one" (once
    # query_first's outcome is committed: its worker ran query_second in place, and reports
    # query_first when query_second waits).
    assert (
        wait_until(lambda: on(daemon, "q-1", "query", "status"), message="first committed") == "one"
    )

    before = describe(daemon, "q-1"), kinds(daemon, "q-1")
    assert on(daemon, "q-1", "query", "meddle") == "meddled"
    assert (describe(daemon, "q-1"), kinds(daemon, "q-1")) == before
    assert on(daemon, "q-1", "query", "status") == "one"

    with pytest.raises(UnknownQueryError, match="'nope'"):
        on(daemon, "q-1", "query", "nope")

    release(daemon, "q-1")
    wait_until(lambda: status_is(daemon, "q-1", "waiting"), message="q-1 waiting")
    assert on(daemon, "q-1", "query", "status") == "two"
    before = describe(daemon, "q-1")
    assert on(daemon, "q-1", "query", "meddle") == "meddled"
    assert describe(daemon, "q-1") == before and before.store == {"status": "two"}
    on(daemon, "q-1", "send", "query_finish")
    assert result(daemon, "q-1") == "two"
    assert on(daemon, "q-1", "query", "status") == "two", "a finished run can still be queried"


# -- 9. cancel and terminate ----------------------------------------------------------------


def test_cancel_lets_the_running_step_finish_and_commits_its_writes(daemon, workers, ledger):
    workers(FLOWS)
    start(daemon, "GdStop", "c-1", {"barrier": "c-gate"})
    wait_reached(ledger, "c-gate")
    on(daemon, "c-1", "cancel", "changed my mind")
    info = describe(daemon, "c-1")
    assert info.status.value == "running" and info.cancel_requested

    release(daemon, "c-gate")
    with pytest.raises(WorkflowCancelledError):
        result(daemon, "c-1")
    info = describe(daemon, "c-1")
    assert info.status.value == "cancelled"
    assert info.store == {"before": True, "after": True}
    assert "c-1 after barrier" in read_ledger(ledger)
    assert "c-1 next step ran" not in read_ledger(ledger)
    assert kinds(daemon, "c-1")[-3:] == ["cancel_requested", "step_completed", "workflow_cancelled"]

    for verb in ("cancel", "terminate"):
        with pytest.raises(WorkflowNotRunningError, match="cancelled"):
            on(daemon, "c-1", verb)


def test_terminate_ends_the_run_at_once_and_stops_the_step(daemon, workers, ledger):
    w = workers(FLOWS)
    start(daemon, "GdStop", "t-1", {"barrier": "t-gate"})
    wait_reached(ledger, "t-gate")
    on(daemon, "t-1", "terminate", "stuck")
    info = describe(daemon, "t-1")
    assert info.status.value == "terminated" and info.store == {}
    wait_until(
        lambda: "stopped by the daemon: run terminated" in w.output(),
        message="the worker stopping the terminated step",
    )
    # A witness run on the same barrier: once it got past the barrier, the terminated step
    # would have too, had the worker not stopped it.
    start(daemon, "GdStop", "witness", {"barrier": "t-gate"})
    wait_reached(ledger, "t-gate", times=2)
    release(daemon, "t-gate")
    assert result(daemon, "witness") is None
    assert "witness after barrier" in read_ledger(ledger)
    assert "t-1 after barrier" not in read_ledger(ledger)
    assert describe(daemon, "t-1").store == {}
    with pytest.raises(WorkflowCancelledError, match="terminated"):
        result(daemon, "t-1")

    for verb in ("cancel", "terminate"):
        with pytest.raises(WorkflowNotRunningError, match="terminated"):
            on(daemon, "t-1", verb)


# -- 10. child workflows --------------------------------------------------------------------


def test_a_child_workflow_starts_once_even_when_the_parent_step_replays(daemon, workers, ledger):
    first = workers(FLOWS)
    start(daemon, "GdParent", "p-1")
    wait_reached(ledger, "p-1")
    first.kill9()
    wait_until(lambda: daemon.status()["workers"] == [], message="the killed worker forgotten")
    workers(FLOWS)
    wait_reached(ledger, "p-1", times=2)  # the parent's step replays up to the barrier again

    release(daemon, "p-1")
    assert result(daemon, "p-1") == {"child_id": "p-1-child", "child_result": 40, "event_n": 4}

    children = daemon.call(lambda c: c.list_workflows(workflow_type="GdChild"))
    assert [(r.workflow_id, r.status.value) for r in children] == [("p-1-child", "completed")]
    assert children[0].parent_workflow_id == "p-1"
    events = history(daemon, "p-1")
    assert [ev.kind for ev in events].count("child_start") == 1
    assert "worker_lost" in [ev.kind for ev in events]
    replay = [ev for ev in events if ev.kind == "step_started"][1]
    assert replay.data["attempt"] == 2 and replay.data["replaying"] >= 1
    assert any(
        ev.kind == "event_received" and ev.data["event_name"] == "child_done" for ev in events
    )
    child_events = [ev.kind for ev in history(daemon, "p-1-child")]
    assert child_events.count("send_to_parent") == 1
