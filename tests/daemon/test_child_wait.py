"""``ctx.next.wait_for_child``: a parent waits for its child in the database, not in a step.

The parent's steps have a 1 s timeout; the child runs longer, fails, ends before the directive
commits, or outlives a daemon crash. The flows are tests/flows/cw_child_wait.py.
"""

from __future__ import annotations

import pytest

from tests.conftest import Daemon, wait_until
from tests.daemon.test_guarantees import history, kinds, on, result, start, status_is

pytestmark = pytest.mark.backends

FLOWS = "flows.cw_child_wait"


def parent_waits(daemon: Daemon, workflow_id: str) -> None:
    wait_until(
        lambda: "waiting_for_child" in kinds(daemon, workflow_id),
        message=f"{workflow_id} waiting for its child",
    )
    assert status_is(daemon, workflow_id, "waiting")
    info = daemon.call(lambda c: c.get_workflow_handle(workflow_id).describe())
    assert info.waiting_for_child["workflow_id"] == f"{workflow_id}-child", info
    assert info.waiting_for_child["run_id"] and info.step_name == "cw_done"


def test_a_parent_with_1s_steps_waits_for_a_child_that_takes_3s(daemon, workers):
    workers(FLOWS)
    start(daemon, "CwParent", "cw-slow", {"mode": "slow"})
    parent_waits(daemon, "cw-slow")
    got = result(daemon, "cw-slow", timeout=20)
    assert got == {
        "status": "completed",
        "ok": True,
        "workflow_id": "cw-slow-child",
        "value": "slow",
    }
    events = history(daemon, "cw-slow")
    waited = next(e for e in events if e.kind == "waiting_for_child")
    ended = next(e for e in events if e.kind == "child_ended")
    assert waited.seq < ended.seq
    # The child ended by its 3 s wait timing out: longer than the parent's 1 s step timeout.
    assert "wait_timed_out" in kinds(daemon, "cw-slow-child")
    assert waited.data["child_workflow_id"] == "cw-slow-child"
    assert ended.data["status"] == "completed" and ended.step_name == "cw_done"
    assert not [e for e in events if e.kind in ("step_timed_out", "step_failed")]


def test_a_child_that_fails_reaches_the_target_step_as_a_failure(daemon, workers):
    workers(FLOWS)
    start(daemon, "CwParent", "cw-fail", {"mode": "held"})
    parent_waits(daemon, "cw-fail")
    on(daemon, "cw-fail-child", "send", "release", {"fail": True})
    got = result(daemon, "cw-fail")
    assert got["status"] == "failed" and got["ok"] is False
    assert got["raised"] == "WorkflowFailedError" and got["message"] == "the child broke"


def test_a_child_that_ended_before_the_directive_committed_is_not_missed(daemon, workers):
    workers(FLOWS)
    start(daemon, "CwParent", "cw-early", {"mode": "quick", "early": True})
    got = result(daemon, "cw-early")
    assert got["value"] == "quick" and got["status"] == "completed"
    assert "waiting_for_child" not in kinds(daemon, "cw-early"), "the target ran at once"
    assert "child_ended" in kinds(daemon, "cw-early")


def test_a_parent_waiting_for_its_child_survives_a_daemon_kill(daemon, workers):
    workers(FLOWS)
    start(daemon, "CwParent", "cw-crash", {"mode": "held"})
    parent_waits(daemon, "cw-crash")
    daemon.kill9()
    daemon.start()
    assert status_is(daemon, "cw-crash", "waiting")
    on(daemon, "cw-crash-child", "send", "release")
    got = result(daemon, "cw-crash", timeout=20)
    assert got["value"] == "released"
    assert daemon.integrity_ok()


def test_a_wait_for_a_child_times_out_into_its_timeout_step_and_a_late_end_changes_nothing(
    daemon, workers
):
    workers(FLOWS)
    start(daemon, "CwParent", "cw-late", {"mode": "held", "give_up_ms": 300})
    assert result(daemon, "cw-late") == {"status": "gave up"}
    events = history(daemon, "cw-late")
    assert "wait_timed_out" in [e.kind for e in events]
    assert status_is(daemon, "cw-late-child", "waiting")  # the child goes on, as on terminate
    on(daemon, "cw-late-child", "send", "release", {})
    assert result(daemon, "cw-late-child") == "released"
    # The child's late end reached a parent that no longer waits: nothing was added to it.
    after = history(daemon, "cw-late")
    assert [e.kind for e in after] == [e.kind for e in events]


def test_a_reset_to_the_step_a_child_woke_gives_it_the_same_child_outcome(daemon, workers):
    workers(FLOWS)
    start(daemon, "CwParent", "cw-again", {"mode": "held"})
    parent_waits(daemon, "cw-again")
    on(daemon, "cw-again-child", "send", "release", {})
    first = result(daemon, "cw-again")
    assert first["value"] == "released"
    info = daemon.call(lambda c: c.get_workflow_handle("cw-again").reset("cw_done"))
    assert info.run_id
    # The new run starts at cw_done with the ChildResult its history recorded (child_ended).
    assert result(daemon, "cw-again") == first
    started = [e for e in history(daemon, "cw-again") if e.kind == "step_started"]
    assert [e.step_name for e in started] == ["cw_done"]
