"""The decider's half of the run timeout, as tables (no daemon, no I/O).

In the style of test_engine.py, whose fixtures (TDEF, ``start``…) it reuses. A run started with
``run_timeout_ms`` holds a durable ``run`` timer keyed by its run_id; when it fires the run fails
with ``RunTimeout`` whatever it is doing, and a run that ends first takes the timer with it.
"""

from __future__ import annotations

import pytest

from grctl.errors import InvalidInputError
from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.decide import (
    MAX_RUN_TIMEOUT_MS,
    Send,
    SendWithStart,
    Start,
    TimerFired,
    decide,
)
from grctl_daemon.engine.state import RunState
from grctl_daemon.storage import base as rec
from tests.daemon.test_engine import (
    T0,
    TDEF,
    completed,
    dispatched,
    effects_of,
    history,
    ops_of,
    packed,
)

INPUT = packed({"order_id": "1"})
HOUR = 3_600_000


def start_timed(timeout_ms, now: int = T0) -> tr.Decision:
    m = Start(TDEF, TDEF.workflow_type, "order-1", "RUN1", INPUT, run_timeout_ms=timeout_ms)
    return decide(None, m, now)


def timed(timeout_ms: int = HOUR) -> RunState:
    d = start_timed(timeout_ms)
    assert d.error is None and d.state is not None
    return d.state


def deadline(state: RunState, now: int, tdef=TDEF, fault=None) -> tr.Decision:
    return decide(state, TimerFired(tdef, tr.RUN_TIMER, state.run_id, fault), now)


def test_a_run_timeout_is_a_durable_timer_keyed_by_the_run_and_noted_in_history():
    d = start_timed(HOUR)
    s = d.state
    assert isinstance(d.ops[0], rec.InsertRun), "the insert still comes first"
    assert s.timers == {tr.RUN_TIMER: (T0 + HOUR, "RUN1")}
    assert ops_of(d, rec.SetTimer) == [rec.SetTimer("RUN1", tr.RUN_TIMER, T0 + HOUR, "RUN1")]
    assert effects_of(d, tr.ArmTimer) == [tr.ArmTimer("RUN1", tr.RUN_TIMER, T0 + HOUR, "RUN1")]
    data = ops_of(d, rec.AppendHistory)[0].data
    assert (data["run_timeout_ms"], data["deadline_ms"]) == (HOUR, T0 + HOUR)


def test_without_a_run_timeout_nothing_is_armed():
    d = start_timed(None)
    assert d.state.timers == {} and ops_of(d, rec.SetTimer) == []
    assert "run_timeout_ms" not in ops_of(d, rec.AppendHistory)[0].data


@pytest.mark.parametrize("bad", [0, -5, MAX_RUN_TIMEOUT_MS + 1, 1.5, "1h", True])
def test_a_bad_run_timeout_is_refused_with_what_to_pass(bad):
    d = start_timed(bad)
    assert isinstance(d.error, InvalidInputError)
    assert "run_timeout must be a positive duration of at most 10 years" in str(d.error)
    assert d.ops == [] and d.effects == []


def test_the_deadline_fails_a_run_in_a_step_and_stops_the_step():
    s = dispatched(timed())
    d = deadline(s, T0 + HOUR)
    assert d.state.status == "failed" and d.state.dispatch_id is None
    assert d.state.error["type"] == "RunTimeout"
    assert d.state.error["message"] == "run timed out after 1h"
    assert d.state.error["details"]["step_name"] == "begin"
    assert effects_of(d, tr.StopStep) == [tr.StopStep(s.dispatch_id, "run timed out")]
    assert history(d) == ["workflow_failed"]
    assert d.state.timers == {} and ops_of(d, rec.ClearTimer) == [rec.ClearTimer("RUN1", None)]
    assert effects_of(d, tr.RunEnded) == [tr.RunEnded("RUN1")]


def test_the_deadline_fails_a_run_waiting_for_an_event_and_clears_its_wait_timer():
    directive = {"kind": "wait_for_event", "timeout_ms": 10 * HOUR, "timeout_step_name": "expired"}
    s = completed(dispatched(timed(90_000)), directive).state
    assert set(s.timers) == {tr.RUN_TIMER, tr.WAIT_TIMER}
    d = deadline(s, T0 + 90_000)
    assert d.state.status == "failed" and d.state.error["message"] == "run timed out after 1m30s"
    assert effects_of(d, tr.StopStep) == [], "no step is in flight while waiting"
    assert d.state.timers == {}


def test_the_deadline_needs_no_type_definition_but_waits_out_a_storage_fault():
    s = timed()
    assert deadline(s, T0 + HOUR, tdef=None).state.status == "failed"
    held = deadline(s, T0 + HOUR, fault=object())
    assert held.state is s and held.ops == []
    assert effects_of(held, tr.ArmTimer)[0].kind == tr.RUN_TIMER


def test_a_run_that_ends_in_time_clears_its_deadline_and_a_late_fire_is_void():
    s = completed(dispatched(timed()), {"kind": "complete", "result": None}).state
    assert s.status == "completed" and s.timers == {}
    d = deadline(s, T0 + HOUR)
    assert d.state is s and d.ops == [] and d.effects == []


def test_a_deadline_of_another_run_is_void():
    s = dispatched(timed())
    d = decide(s, TimerFired(TDEF, tr.RUN_TIMER, "OTHER"), T0 + HOUR)
    assert d.state is s and d.ops == []


def test_durations_read_as_people_write_them():
    assert [tr.format_ms(ms) for ms in (2000, HOUR, 5_400_000, 86_400_000 + 1000, 250)] == [
        "2s",
        "1h",
        "1h30m",
        "1d1s",
        "250ms",
    ]


def test_send_with_start_keeps_the_deadline_of_the_run_it_starts():
    start_msg = Start(TDEF, TDEF.workflow_type, "order-1", "RUN1", INPUT, run_timeout_ms=HOUR)
    d = decide(None, SendWithStart(start_msg, Send(TDEF, "approve", None)), T0)
    assert d.error is None and d.state.timers[tr.RUN_TIMER] == (T0 + HOUR, "RUN1")
    assert ops_of(d, rec.SetTimer) == [rec.SetTimer("RUN1", tr.RUN_TIMER, T0 + HOUR, "RUN1")]
    assert isinstance(d.ops[0], rec.InsertRun)
