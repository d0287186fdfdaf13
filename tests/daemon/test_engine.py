"""The pure engine as tables: (state, message, now) → Decision. No daemon, no I/O, no clocks.

Each test drives the one entry point, ``grctl_daemon.engine.decide.decide``, through the small
helpers below (one per message) and asserts on the three parts of a Decision: the records to
commit (``ops``), the effects to perform after the commit, and the new state. A refusal is a
Decision with ``error`` set and the state left as it was.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from grctl.errors import StaleDispatchError, WorkflowNotRunningError
from grctl.models.directive import RetryPolicy
from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.decide import (
    Cancel,
    DispatchTo,
    Recorded,
    Send,
    Start,
    StepReturned,
    Terminate,
    TimerFired,
    WorkerLost,
    decide,
)
from grctl_daemon.engine.state import DEFAULT_STEP_TIMEOUT_MS, RunState, StepSpec, TypeDef
from grctl_daemon.storage import base as rec

T0 = 1_000_000

TDEF = TypeDef(
    workflow_type="Order",
    start_name="begin",
    start_params=[["order_id", "POSITIONAL_OR_KEYWORD", False]],
    steps={
        "charge": StepSpec("charge", 2_000, None),
        "flaky": StepSpec("flaky", 1_000, RetryPolicy(max_attempts=3, initial_delay_ms=10)),
        "expired": StepSpec("expired", 5_000, None),
    },
    events={"approve": [], "note": [["text", "POSITIONAL_OR_KEYWORD", False]]},
    queries=frozenset({"status"}),
)


# -- one helper per message -----------------------------------------------------------------


def start(workflow_id: str, run_id: str, blob: bytes | None, now: int) -> tr.Decision:
    return decide(None, Start(TDEF, TDEF.workflow_type, workflow_id, run_id, blob), now)


def dispatch(state: RunState, worker: str, now: int) -> tr.Decision:
    return decide(state, DispatchTo(TDEF, worker), now)


def returned(state, dispatch_id, directive, writes, now) -> tr.Decision:
    return decide(state, StepReturned(TDEF, dispatch_id, directive, writes), now)


def failed(state, dispatch_id, error, now) -> tr.Decision:
    return decide(state, StepReturned(TDEF, dispatch_id, None, {}, error), now)


def fired(state, kind, token, now) -> tr.Decision:
    return decide(state, TimerFired(TDEF, kind, token), now)


def sent(state, event_name, payload, now) -> tr.Decision:
    return decide(state, Send(TDEF, event_name, payload), now)


def cancel(state, reason, now) -> tr.Decision:
    return decide(state, Cancel(reason), now)


def terminate(state, reason, now) -> tr.Decision:
    return decide(state, Terminate(reason), now)


def lost(state, dispatch_id, now, max_losses: int = 3) -> tr.Decision:
    return decide(state, WorkerLost(TDEF, dispatch_id, max_losses), now)


def record(state, dispatch_id, summary: dict[str, Any], now) -> tr.Decision:
    return decide(state, Recorded(dispatch_id, packed(summary)), now)


def packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# -- helpers --------------------------------------------------------------------------------


def started(now: int = T0) -> RunState:
    d = start("order-1", "RUN1", b"\x81\xa8order_id\xa11", now)
    assert d.state is not None
    return d.state


def dispatched(state: RunState, now: int = T0 + 1, worker: str = "w1") -> RunState:
    d = dispatch(state, worker, now)
    assert d.error is None and d.state is not None
    return d.state


def completed(state: RunState, directive: dict[str, Any], writes=None, now: int = T0 + 2):
    return returned(state, state.dispatch_id, directive, writes or {}, now)


def waiting(timeout_ms: int | None = None) -> RunState:
    directive: dict[str, Any] = {"kind": "wait_for_event"}
    if timeout_ms is not None:
        directive |= {"timeout_ms": timeout_ms, "timeout_step_name": "expired"}
    d = completed(dispatched(started()), directive)
    assert d.state is not None and d.state.status == "waiting"
    return d.state


def ops_of(d: tr.Decision, kind: type) -> list[Any]:
    return [op for op in d.ops if isinstance(op, kind)]


def history(d: tr.Decision) -> list[str]:
    return [op.kind for op in ops_of(d, rec.AppendHistory)]


def effects_of(d: tr.Decision, kind: type) -> list[Any]:
    return [e for e in d.effects if isinstance(e, kind)]


def assert_refused(d: tr.Decision, before: RunState, error: type) -> None:
    assert isinstance(d.error, error)
    assert d.state is before, "a refusal keeps the state object as it was"
    assert d.ops == [] and d.effects == []


# -- start and dispatch ---------------------------------------------------------------------


def test_start_run_inserts_the_row_records_history_and_schedules_the_start_handler():
    d = start("order-1", "RUN1", b"\x81\xa8order_id\xa11", T0)
    s = d.state
    assert isinstance(d.ops[0], rec.InsertRun), "the insert carries the one-active-run check"
    assert history(d) == ["workflow_started"]
    assert d.effects == [tr.Dispatch("RUN1")]
    assert (s.status, s.step_name, s.handler_kind, s.step_args) == (
        "running",
        "begin",
        "start",
        b"\x81\xa8order_id\xa11",
    )
    assert s.step_seq == 1 and s.attempt == 0 and s.dispatch_id is None
    assert d.reply == {"workflow_id": "order-1", "run_id": "RUN1"}


def test_dispatched_fences_the_step_arms_its_timer_and_saves_the_run():
    before = started()
    d = dispatch(before, "w1", T0 + 5)
    s = d.state
    assert s is not before and before.dispatch_id is None, "the engine never mutates its input"
    assert s.attempt == 1 and s.worker == "w1"
    assert s.dispatch_id == "RUN1.1.1", "the token is made of durable values: run, step, attempt"
    assert s.version == before.version + 1 and d.ops[0].run is s
    assert isinstance(d.ops[0], rec.SaveRun)
    assert history(d) == ["step_started"]
    timeout = DEFAULT_STEP_TIMEOUT_MS  # the start handler has the default step timeout
    # The step deadline is armed in memory only: a restart dispatches every running step again.
    assert ops_of(d, rec.SetTimer) == []
    assert s.timers[tr.STEP_TIMER] == (T0 + 5 + timeout, s.dispatch_id)
    assert effects_of(d, tr.ArmTimer) == [
        tr.ArmTimer("RUN1", tr.STEP_TIMER, T0 + 5 + timeout, s.dispatch_id)
    ]
    assert d.reply == timeout


def test_a_step_declared_timeout_is_used_for_its_timer():
    s = dispatched(started())
    s = completed(s, {"kind": "step", "step_name": "charge"}).state
    d = dispatch(s, "w1", T0 + 10)
    assert d.reply == 2_000
    assert d.state.timers[tr.STEP_TIMER] == (T0 + 10 + 2_000, d.state.dispatch_id)


def test_recorded_outcomes_are_appended_for_the_current_execution():
    s = dispatched(started())
    blob = packed({"op": 0, "kind": "task", "status": "ok"})
    d = record(s, s.dispatch_id, {"op": 0, "kind": "task", "status": "ok"}, T0 + 3)
    assert ops_of(d, rec.AddRecord) == [rec.AddRecord("RUN1", 1, 0, blob)]
    assert history(d) == ["task_completed"]
    assert d.state.records == [blob]


# -- step_completed with each directive kind ------------------------------------------------


def test_step_directive_commits_store_writes_and_schedules_the_next_step():
    s = dispatched(started())
    d = completed(s, {"kind": "step", "step_name": "charge"}, {"a": b"\x01"})
    assert ops_of(d, rec.PutStore) == [rec.PutStore("RUN1", {"a": b"\x01"})]
    assert history(d) == ["step_completed"]
    assert ops_of(d, rec.ClearTimer) == [] and tr.STEP_TIMER not in d.state.timers
    assert d.effects == [tr.Dispatch("RUN1")]
    assert d.state.store == {"a": b"\x01"}
    assert (d.state.status, d.state.step_name, d.state.handler_kind) == (
        "running",
        "charge",
        "step",
    )
    assert d.state.step_seq == 2 and d.state.attempt == 0 and d.state.dispatch_id is None


def test_step_directive_to_an_unregistered_step_fails_the_run_naming_it():
    d = completed(dispatched(started()), {"kind": "step", "step_name": "nope"})
    assert d.state.status == "failed"
    assert d.state.error["type"] == "WorkflowDefinitionError"
    assert "'nope'" in d.state.error["message"] and "'Order'" in d.state.error["message"]
    assert history(d) == ["step_completed", "workflow_failed"]
    assert effects_of(d, tr.Dispatch) == []


def test_bare_wait_for_event_waits_without_a_timer():
    d = completed(dispatched(started()), {"kind": "wait_for_event"})
    assert d.state.status == "waiting" and d.state.timers == {}
    assert history(d) == ["step_completed", "waiting_for_event"]
    assert effects_of(d, tr.ArmTimer) == []


def test_wait_for_event_with_timeout_arms_a_wait_timer_keyed_by_the_wait():
    d = completed(
        dispatched(started()),
        {"kind": "wait_for_event", "timeout_ms": 500, "timeout_step_name": "expired"},
    )
    s = d.state
    assert s.status == "waiting" and s.wait_timeout_step == "expired"
    assert s.timers == {tr.WAIT_TIMER: (T0 + 2 + 500, str(s.step_seq))}
    assert effects_of(d, tr.ArmTimer) == [
        tr.ArmTimer("RUN1", tr.WAIT_TIMER, T0 + 502, str(s.step_seq))
    ]


def test_wait_with_a_timeout_step_that_is_not_registered_fails_the_run():
    d = completed(
        dispatched(started()),
        {"kind": "wait_for_event", "timeout_ms": 500, "timeout_step_name": "ghost"},
    )
    assert d.state.status == "failed" and d.state.error["type"] == "WorkflowDefinitionError"
    assert "'ghost'" in d.state.error["message"]


def test_complete_ends_the_run_with_its_result_and_clears_everything():
    d = completed(dispatched(started()), {"kind": "complete", "result": b"\xa2ok"}, {"k": b"v"})
    s = d.state
    assert (s.status, s.result, s.ended_ms) == ("completed", b"\xa2ok", T0 + 2)
    assert ops_of(d, rec.PutStore) == [rec.PutStore("RUN1", {"k": b"v"})]
    assert history(d) == ["step_completed", "workflow_completed"]
    assert effects_of(d, tr.RunEnded) == [tr.RunEnded("RUN1")]
    assert s.timers == {}
    assert not s.is_active


def test_fail_directive_ends_the_run_with_the_given_error():
    error = {"type": "Declined", "message": "card declined"}
    d = completed(dispatched(started()), {"kind": "fail", "error": error})
    assert d.state.status == "failed" and d.state.error == error
    assert history(d)[-1] == "workflow_failed"


def test_an_unknown_directive_kind_fails_the_run_instead_of_raising():
    d = completed(dispatched(started()), {"kind": "teleport"})
    assert d.state.status == "failed" and d.state.error["type"] == "ProtocolError"


# -- fencing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fact",
    [
        lambda s: returned(s, "RUN1.1.0.old", {"kind": "complete"}, {}, T0),
        lambda s: failed(s, "RUN1.1.0.old", {"type": "X"}, T0),
        lambda s: record(s, "RUN1.1.0.old", {"op": 0}, T0),
    ],
    ids=["step_completed", "step_failed", "recorded"],
)
def test_a_stale_dispatch_id_is_refused_and_changes_nothing(fact):
    current = dispatched(started())
    d = fact(current)
    assert_refused(d, current, StaleDispatchError)
    assert current.status == "running" and current.store == {} and current.records == []


def test_worker_lost_for_a_stale_dispatch_changes_nothing():
    current = dispatched(started())
    d = lost(current, "RUN1.1.0.old", T0)
    assert d.state is current and d.ops == [] and d.effects == []


# -- step failures, retries and timeouts ----------------------------------------------------


def test_step_failed_without_a_retry_policy_fails_the_run_with_step_failed():
    s = dispatched(started())
    d = failed(s, s.dispatch_id, {"type": "KeyError", "message": "sku"}, T0 + 2)
    assert d.state.status == "failed"
    error = d.state.error
    assert error["type"] == "StepFailed"
    assert error["details"] == {"step_name": "begin", "cause": "KeyError", "attempts": 1}
    assert history(d) == ["step_failed", "workflow_failed"]
    assert ops_of(d, rec.PutStore) == [], "a failed step commits none of its writes"


def _flaky_running() -> RunState:
    s = completed(dispatched(started()), {"kind": "step", "step_name": "flaky"}).state
    return dispatched(s, now=T0 + 10)


def test_step_failed_with_a_retry_policy_arms_a_back_off_then_redispatches():
    s = _flaky_running()
    s = record(s, s.dispatch_id, {"op": 0, "kind": "now"}, T0 + 11).state
    d = failed(s, s.dispatch_id, {"type": "ConnectionError"}, T0 + 12)
    after = d.state
    assert after.status == "running" and after.dispatch_id is None
    assert after.records == [] and ops_of(d, rec.ClearRecords), "a retry is a fresh execution"
    step_failed = ops_of(d, rec.AppendHistory)[0]
    assert step_failed.kind == "step_failed"
    assert step_failed.data["will_retry"] is True and step_failed.data["retry_in_ms"] == 10
    assert after.timers == {tr.RETRY_TIMER: (T0 + 22, str(after.step_seq))}
    assert effects_of(d, tr.Dispatch) == [], "no dispatch before the back-off ends"

    back = fired(after, tr.RETRY_TIMER, str(after.step_seq), T0 + 22)
    assert back.effects == [tr.Dispatch("RUN1")]
    assert back.state.timers == {}
    again = dispatched(back.state, now=T0 + 23)
    assert again.attempt == 2 and again.step_seq == after.step_seq


def test_retries_stop_after_max_attempts_and_the_run_fails():
    s = _flaky_running()
    will_retry = []
    for attempt in range(1, 4):
        assert s.attempt == attempt
        d = failed(s, s.dispatch_id, {"type": "ConnectionError"}, T0 + 20 * attempt)
        will_retry.append(ops_of(d, rec.AppendHistory)[0].data["will_retry"])
        s = d.state
        if s.is_active:
            s = fired(s, tr.RETRY_TIMER, str(s.step_seq), T0 + 20 * attempt + 10).state
            s = dispatched(s, now=T0 + 20 * attempt + 11)
    assert will_retry == [True, True, False]
    assert s.status == "failed" and s.error["type"] == "StepFailed"
    assert s.error["details"]["attempts"] == 3


def test_a_non_retryable_error_fails_at_once_whatever_the_policy():
    s = _flaky_running()
    d = failed(s, s.dispatch_id, {"type": "StoreValueError", "non_retryable": True}, T0)
    assert d.state.status == "failed"
    assert ops_of(d, rec.AppendHistory)[0].data["will_retry"] is False


def test_the_step_timer_times_the_step_out_and_stops_it_on_the_worker():
    s = dispatched(started())
    due, token = s.timers[tr.STEP_TIMER]
    d = fired(s, tr.STEP_TIMER, token, due)
    assert d.state.status == "failed" and d.state.error["type"] == "StepTimeout"
    assert history(d) == ["step_timed_out", "workflow_failed"]
    assert effects_of(d, tr.StopStep) == [tr.StopStep(token, "step timed out")]


def test_a_timed_out_step_with_a_retry_policy_is_retried():
    s = _flaky_running()
    _, token = s.timers[tr.STEP_TIMER]
    d = fired(s, tr.STEP_TIMER, token, T0 + 1_010)
    assert d.state.status == "running" and tr.RETRY_TIMER in d.state.timers
    assert ops_of(d, rec.AppendHistory)[0].data["will_retry"] is True


def test_a_step_timer_from_an_earlier_dispatch_is_void():
    s = dispatched(started())
    _, old = s.timers[tr.STEP_TIMER]
    s = completed(s, {"kind": "step", "step_name": "charge"}).state
    s = dispatched(s, now=T0 + 5)
    d = fired(s, tr.STEP_TIMER, old, T0 + DEFAULT_STEP_TIMEOUT_MS)
    assert d.state is s and d.ops == [] and d.effects == []


# -- waits and the inbox --------------------------------------------------------------------


def test_an_expired_wait_runs_the_timeout_step():
    s = waiting(timeout_ms=500)
    due, token = s.timers[tr.WAIT_TIMER]
    d = fired(s, tr.WAIT_TIMER, token, due)
    assert history(d) == ["wait_timed_out"]
    assert (d.state.status, d.state.step_name, d.state.handler_kind) == (
        "running",
        "expired",
        "step",
    )
    assert d.effects == [tr.Dispatch("RUN1")]
    assert d.state.timers == {}


def test_an_event_voids_the_wait_timer():
    s = waiting(timeout_ms=500)
    due, token = s.timers[tr.WAIT_TIMER]
    d = sent(s, "approve", None, T0 + 100)
    assert ops_of(d, rec.ClearTimer) == [rec.ClearTimer("RUN1", tr.WAIT_TIMER)]
    assert d.state.timers == {} and d.state.step_name == "approve"

    # the heap still fires the old timer: it must change nothing
    late = fired(d.state, tr.WAIT_TIMER, token, due)
    assert late.state is d.state and late.ops == [] and late.effects == []

    # even once the run waits again, the old wait's token does not match the new wait's
    again = dispatched(d.state, now=T0 + 101)
    again = completed(
        again,
        {"kind": "wait_for_event", "timeout_ms": 500, "timeout_step_name": "expired"},
        now=T0 + 102,
    ).state
    stale = fired(again, tr.WAIT_TIMER, token, due)
    assert stale.state is again and stale.ops == []


def test_an_event_to_a_waiting_run_is_stored_then_dispatched_in_one_decision():
    s = waiting()
    d = sent(s, "note", b"\xa2hi", T0 + 5)
    assert ops_of(d, rec.AddInbox) == [rec.AddInbox("RUN1", 1, "note", b"\xa2hi", T0 + 5)]
    assert ops_of(d, rec.MarkInbox) == [rec.MarkInbox("RUN1", 1, "dispatched", "note")]
    assert history(d) == ["event_received", "event_dispatched"]
    assert (d.state.status, d.state.handler_kind, d.state.step_args) == (
        "running",
        "event",
        b"\xa2hi",
    )
    assert d.state.inbox == []
    assert d.reply == {"inbox_seq": 1, "workflow_id": "order-1", "run_id": "RUN1"}


def test_events_that_arrive_while_a_step_runs_are_delivered_fifo_one_per_wait():
    s = dispatched(started())
    for text in (b"a", b"b", b"c"):
        d = sent(s, "note", text, T0 + 3)
        assert ops_of(d, rec.MarkInbox) == [], "a running step does not take events"
        s = d.state
    assert [i.seq for i in s.inbox] == [1, 2, 3]

    delivered = []
    for n in range(3):
        d = completed(s, {"kind": "wait_for_event"}, now=T0 + 10 + n)
        (mark,) = ops_of(d, rec.MarkInbox)
        delivered.append((mark.seq, d.state.step_args))
        assert d.state.status == "running", "a queued event is taken at once: no waiting state"
        s = dispatched(d.state, now=T0 + 10 + n)
    assert delivered == [(1, b"a"), (2, b"b"), (3, b"c")]
    assert s.inbox == []
    d = completed(s, {"kind": "wait_for_event"}, now=T0 + 20)
    assert d.state.status == "waiting"


# -- cancel and terminate -------------------------------------------------------------------


def test_cancel_while_a_step_runs_waits_for_the_step_and_keeps_its_writes():
    s = dispatched(started())
    d = cancel(s, "user asked", T0 + 3)
    assert d.state.status == "running" and d.state.cancel_requested
    assert history(d) == ["cancel_requested"]
    # The step is not stopped; its worker only runs no further step in place (a chain).
    assert d.effects == [tr.EndChain("RUN1.1.1")]
    assert d.reply == {"status": "running", "cancel_requested": True}

    done = completed(d.state, {"kind": "step", "step_name": "charge"}, {"k": b"v"}, T0 + 4)
    assert done.state.status == "cancelled"
    assert ops_of(done, rec.PutStore) == [rec.PutStore("RUN1", {"k": b"v"})]
    assert history(done) == ["step_completed", "workflow_cancelled"]
    assert effects_of(done, tr.Dispatch) == [], "the next step never runs"


def test_cancel_while_a_step_runs_then_the_step_fails_ends_cancelled_without_retry():
    s = _flaky_running()
    s = cancel(s, None, T0 + 11).state
    d = failed(s, s.dispatch_id, {"type": "ConnectionError"}, T0 + 12)
    assert d.state.status == "cancelled" and tr.RETRY_TIMER not in d.state.timers


def test_cancel_while_waiting_ends_the_run_at_once():
    s = waiting(timeout_ms=500)
    d = cancel(s, "no longer needed", T0 + 3)
    assert d.state.status == "cancelled" and d.state.reason == "no longer needed"
    assert history(d) == ["workflow_cancelled"]
    assert d.state.timers == {} and ops_of(d, rec.ClearTimer)
    assert effects_of(d, tr.RunEnded) == [tr.RunEnded("RUN1")]


def test_terminate_ends_the_run_now_and_stops_the_step():
    s = dispatched(started())
    d = terminate(s, "stuck", T0 + 3)
    assert d.state.status == "terminated" and d.state.dispatch_id is None
    assert effects_of(d, tr.StopStep) == [tr.StopStep(s.dispatch_id, "run terminated")]
    assert history(d) == ["workflow_terminated"]
    late = returned(d.state, s.dispatch_id, {"kind": "complete"}, {"k": b"v"}, T0)
    assert isinstance(late.error, StaleDispatchError), "the stopped step's result is refused"


# -- worker loss ----------------------------------------------------------------------------


def test_worker_lost_redispatches_at_once_keeping_records_for_replay():
    s = dispatched(started())
    s = record(s, s.dispatch_id, {"op": 0, "kind": "task", "status": "ok"}, T0 + 2).state
    d = lost(s, s.dispatch_id, T0 + 3)
    assert history(d) == ["worker_lost"]
    assert d.effects == [tr.Dispatch("RUN1")]
    assert d.state.dispatch_id is None and d.state.records == [s.records[0]]
    assert d.state.worker_losses == 1
    assert ops_of(d, rec.ClearRecords) == []
    again = dispatch(d.state, "w2", T0 + 4)
    assert again.state.attempt == 2 and again.state.step_seq == s.step_seq
    assert ops_of(again, rec.AppendHistory)[0].data == {
        "attempt": 2,
        "worker": "w2",
        "replaying": 1,
    }


def test_worker_lost_after_a_cancel_request_ends_the_run_cancelled():
    s = dispatched(started())
    s = cancel(s, None, T0 + 2).state
    d = lost(s, s.dispatch_id, T0 + 3)
    assert d.state.status == "cancelled" and effects_of(d, tr.Dispatch) == []


# -- ended runs refuse ----------------------------------------------------------------------


def _ended() -> RunState:
    return completed(dispatched(started()), {"kind": "complete", "result": None}).state


@pytest.mark.parametrize(
    "fact",
    [
        lambda s: sent(s, "approve", None, T0),
        lambda s: cancel(s, None, T0),
        lambda s: terminate(s, None, T0),
    ],
    ids=["send", "cancel", "terminate"],
)
def test_an_ended_run_refuses_events_cancel_and_terminate(fact):
    ended = _ended()
    d = fact(ended)
    assert_refused(d, ended, WorkflowNotRunningError)
    assert "order-1" in d.error.message and "grctl start Order --id order-1" in d.error.message


def test_timers_and_worker_loss_on_an_ended_run_change_nothing():
    s = dispatched(started())
    _, token = s.timers[tr.STEP_TIMER]
    ended = terminate(s, None, T0 + 1).state
    for d in (
        fired(ended, tr.STEP_TIMER, token, T0 + 20_000),
        lost(ended, token, T0 + 2),
    ):
        assert d.state is ended and d.ops == [] and d.effects == []


# -- a step that takes its worker down ------------------------------------------------------


def test_the_third_worker_loss_in_a_row_fails_the_run_with_worker_lost():
    s = dispatched(started())
    for n in (1, 2):
        d = lost(s, s.dispatch_id, T0 + 10 * n)
        assert d.state.status == "running" and d.state.worker_losses == n
        s = dispatch(d.state, "w2", T0 + 10 * n + 1).state
    d = lost(s, s.dispatch_id, T0 + 40)
    assert d.state.status == "failed"
    assert d.state.error["type"] == "WorkerLost"
    assert "lost 3 times in a row" in d.state.error["message"]
    assert history(d) == ["worker_lost", "step_failed", "workflow_failed"]
    assert effects_of(d, tr.Dispatch) == []


def test_worker_lost_with_a_retry_policy_is_a_retried_failure():
    s = dispatched(started())
    s = completed(s, {"kind": "step", "step_name": "flaky"}).state
    s = dispatch(s, "w1", T0 + 5).state
    d = lost(s, s.dispatch_id, T0 + 6, max_losses=1)
    assert d.state.status == "running" and tr.RETRY_TIMER in d.state.timers
    failed_row = ops_of(d, rec.AppendHistory)[1]
    assert failed_row.kind == "step_failed" and failed_row.data["will_retry"] is True
    assert failed_row.data["error"]["type"] == "WorkerLost"


def test_a_completed_step_resets_the_count_of_losses():
    s = dispatched(started())
    s = dispatch(lost(s, s.dispatch_id, T0 + 2).state, "w2", T0 + 3).state
    assert s.worker_losses == 1
    d = completed(s, {"kind": "step", "step_name": "charge"}, now=T0 + 4)
    assert d.state.worker_losses == 0


# -- readiness ------------------------------------------------------------------------------


def test_ready_means_a_running_step_with_no_dispatch_and_no_back_off():
    assert tr.ready(started())
    assert not tr.ready(dispatched(started()))
    assert not tr.ready(waiting())
    assert dispatch(waiting(), "w1", T0).state.dispatch_id is None, "not ready: no-op"
