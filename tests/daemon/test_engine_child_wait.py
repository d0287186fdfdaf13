"""The engine's ``wait_for_child`` paths as tables (grctl_daemon/engine/children.py).

A parent's step returns ``wait_for_child``; the decider is given the child's state. A child
that ended already has the target scheduled at once; otherwise the parent waits (in its own
row's columns) until ``ChildEnded``, a wait timer, or a cancel ends the wait.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.children import CHILD_WAIT, waited_child
from grctl_daemon.engine.decide import ChildEnded, Start, StepReturned, decide
from grctl_daemon.engine.state import RunState
from grctl_daemon.storage import base as rec
from tests.daemon.test_engine import (
    T0,
    TDEF,
    cancel,
    completed,
    dispatched,
    effects_of,
    fired,
    history,
    ops_of,
    sent,
    started,
)

# The child is an Order too; its parent's type also has an event that takes a child's end.
WITH_EVENT = dataclasses.replace(
    TDEF, events={**TDEF.events, "child_done": [["outcome", "VAR_KEYWORD", False]]}
)


def child_of(parent: RunState, *, ended: bool, event: str | None = None) -> RunState:
    d = decide(
        None,
        Start(
            TDEF,
            TDEF.workflow_type,
            "order-1-child",
            "CHILD1",
            b"\x81\xa8order_id\xa11",
            parent=parent,
            parent_tdef=WITH_EVENT,
            completion_event=event,
        ),
        T0,
    )
    child = d.state
    assert d.error is None and child is not None and child.parent_run_id == parent.run_id
    if ended:
        d = completed(dispatched(child), {"kind": "complete", "result": msgpack.packb(7)})
        assert d.state is not None and d.state.status == "completed"
        child = d.state
    return child


def waits_for(parent: RunState, child: RunState | None, **extra: Any) -> tr.Decision:
    directive = {
        "kind": "wait_for_child",
        "step_name": "charge",
        "child_workflow_id": "order-1-child",
        "child_run_id": "CHILD1",
        **extra,
    }
    return decide(
        parent, StepReturned(TDEF, parent.dispatch_id, directive, {}, None, child), T0 + 5
    )


def a_waiting_parent(**extra: Any) -> tuple[RunState, RunState]:
    parent = dispatched(started())
    child = child_of(parent, ended=False)
    d = waits_for(parent, child, **extra)
    assert d.state is not None
    return d.state, child


def ended_child(child: RunState, status: str = "completed") -> RunState:
    done = child.copy()
    done.status = status
    done.result = msgpack.packb(7) if status == "completed" else None
    done.error = None if status == "completed" else {"type": "WorkflowError", "message": "broke"}
    return done


def test_a_running_child_makes_the_parent_wait_in_its_row():
    s, _ = a_waiting_parent()
    assert s.status == "waiting" and s.handler_kind == CHILD_WAIT and s.step_name == "charge"
    assert waited_child(s) == "CHILD1"
    assert tr.WAIT_TIMER not in s.timers


def test_the_wait_is_recorded_and_nothing_is_dispatched():
    parent = dispatched(started())
    d = waits_for(parent, child_of(parent, ended=False))
    assert history(d)[-1] == "waiting_for_child"
    assert effects_of(d, tr.Dispatch) == []


def test_a_timeout_arms_a_wait_timer_that_runs_the_timeout_step():
    s, child = a_waiting_parent(timeout_ms=500, timeout_step_name="expired")
    due, token = s.timers[tr.WAIT_TIMER]
    assert due == T0 + 5 + 500
    d = fired(s, tr.WAIT_TIMER, token, due)
    assert d.state.status == "running" and d.state.step_name == "expired"
    assert d.state.step_args is None
    late = decide(d.state, ChildEnded(TDEF, ended_child(child)), due + 1)
    assert late.state is d.state and late.ops == [], "the child's end after the timeout is void"


def test_a_child_that_already_ended_schedules_the_target_at_once_with_its_outcome():
    parent = dispatched(started())
    d = waits_for(parent, child_of(parent, ended=True))
    s = d.state
    assert s.status == "running" and s.step_name == "charge" and s.handler_kind == "step"
    assert msgpack.unpackb(s.step_args) == {
        "workflow_id": "order-1-child",
        "run_id": "CHILD1",
        "status": "completed",
        "result": 7,
        "error": None,
    }
    assert history(d)[-1] == "child_ended" and effects_of(d, tr.Dispatch)


def test_the_child_ending_schedules_the_target_in_one_save():
    s, child = a_waiting_parent()
    d = decide(s, ChildEnded(TDEF, ended_child(child, "failed")), T0 + 9)
    assert d.state.status == "running" and d.state.step_name == "charge"
    outcome = msgpack.unpackb(d.state.step_args)
    assert outcome["status"] == "failed" and outcome["error"]["message"] == "broke"
    assert len(ops_of(d, rec.SaveRun)) == 1 and effects_of(d, tr.Dispatch)


def test_another_childs_end_changes_nothing():
    s, child = a_waiting_parent()
    other = ended_child(child)
    other.run_id = "OTHER"
    d = decide(s, ChildEnded(TDEF, other), T0 + 9)
    assert d.state is s and d.ops == []


def test_events_wait_in_the_inbox_while_the_parent_waits_for_its_child():
    s, child = a_waiting_parent()
    d = sent(s, "approve", None, T0 + 6)
    assert d.state.status == "waiting" and len(d.state.inbox) == 1
    assert "event_dispatched" not in history(d)
    d = decide(d.state, ChildEnded(TDEF, ended_child(child)), T0 + 7)
    assert d.state.step_name == "charge" and len(d.state.inbox) == 1


def test_a_completion_event_and_the_wait_are_both_served_by_one_save():
    parent = dispatched(started())
    child = child_of(parent, ended=False, event="child_done")
    s = waits_for(parent, child).state
    d = decide(s, ChildEnded(WITH_EVENT, ended_child(child)), T0 + 9)
    assert len(ops_of(d, rec.AddInbox)) == 1 and len(ops_of(d, rec.SaveRun)) == 1
    assert d.state.step_name == "charge" and len(d.state.inbox) == 1


def test_a_run_that_is_not_this_runs_child_fails_the_run_naming_it():
    parent = dispatched(started())
    stranger = child_of(parent, ended=False)
    stranger.parent_run_id = "SOMEONE-ELSE"
    d = waits_for(parent, stranger)
    assert d.state.status == "failed" and "'CHILD1'" in d.state.error["message"]
    missing = waits_for(parent, None)
    assert missing.state.status == "failed"


def test_an_unregistered_target_fails_the_run():
    parent = dispatched(started())
    d = waits_for(parent, child_of(parent, ended=False), step_name="nope")
    assert d.state.status == "failed" and "'nope'" in d.state.error["message"]


def test_cancel_ends_a_parent_waiting_for_its_child():
    s, _ = a_waiting_parent()
    d = cancel(s, "enough", T0 + 9)
    assert d.state.status == "cancelled" and d.state.step_args is None
