"""SPEC 8 "Run timeout" against the real daemon, a real worker and both backends.

A run started with ``run_timeout`` fails with ``RunTimeout`` when it has not ended in time,
whatever it is doing: waiting for an event, running a step (stopped on its worker, as on
terminate) or sleeping. The deadline is a durable timer row, so a restart keeps it, and a run
that ends first leaves no row behind. The flows are tests/flows/rt_run_timeout.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from grctl.errors import InvalidInputError, RunTimeout, WorkflowFailedError
from tests.cli.conftest import run_grctl
from tests.conftest import Daemon, read_ledger, wait_until
from tests.daemon.test_guarantees import describe, kinds, release, result, wait_reached

pytestmark = pytest.mark.backends

FLOWS = "flows.rt_run_timeout"


def start(daemon: Daemon, workflow_type: str, workflow_id: str, timeout: timedelta, inp=None):
    return daemon.call(
        lambda c: c.start_workflow(workflow_type, workflow_id, inp, run_timeout=timeout)
    )


def timed_out(daemon: Daemon, workflow_id: str) -> dict:
    with pytest.raises(RunTimeout) as caught:
        result(daemon, workflow_id)
    err = caught.value
    assert isinstance(err, WorkflowFailedError), "callers catching failures still catch it"
    assert err.code == "run_timeout" and err.workflow_id == workflow_id and err.run_id
    return err.details


def timer_rows(daemon: Daemon, run_id: str) -> list[tuple]:
    return daemon.rows("SELECT kind FROM timers WHERE run_id = ?", (run_id,))


def test_a_run_waiting_for_an_event_times_out(daemon, workers):
    workers(FLOWS)
    handle = start(daemon, "RtWait", "rt-wait", timedelta(seconds=1))
    info = describe(daemon, "rt-wait")
    assert info.run_deadline_at is not None
    assert (info.run_deadline_at - info.created_at) == timedelta(seconds=1)
    assert timer_rows(daemon, handle.run_id) == [("run",)], "the deadline is a durable row"
    details = timed_out(daemon, "rt-wait")
    assert details["type"] == "RunTimeout" and details["message"] == "run timed out after 1s"
    assert kinds(daemon, "rt-wait")[-2:] == ["waiting_for_event", "workflow_failed"]
    ended = describe(daemon, "rt-wait")
    assert ended.status.value == "failed" and ended.run_deadline_at is None
    assert timer_rows(daemon, handle.run_id) == []


def test_a_run_in_a_long_step_times_out_and_its_step_is_stopped(daemon, workers, ledger):
    w = workers(FLOWS)
    start(daemon, "RtHold", "rt-hold", timedelta(milliseconds=1500), {"barrier": "rt-gate"})
    wait_reached(ledger, "rt-gate")
    details = timed_out(daemon, "rt-hold")
    assert details["details"]["step_name"] == "hold_start"
    wait_until(
        lambda: "stopped by the daemon: run timed out" in w.output(),
        message="the worker stopping the timed-out step",
    )
    # Had the worker not stopped it, the step would get past the released barrier.
    release(daemon, "rt-gate")
    start(daemon, "RtHold", "rt-witness", timedelta(minutes=1), {"barrier": "rt-gate"})
    assert result(daemon, "rt-witness") is None
    assert "rt-hold after barrier" not in read_ledger(ledger)


def test_a_sleeping_run_times_out(daemon, workers):
    workers(FLOWS)
    start(daemon, "RtSleep", "rt-sleep", timedelta(seconds=1))
    assert timed_out(daemon, "rt-sleep")["message"] == "run timed out after 1s"


def test_a_run_that_ends_in_time_is_unaffected_and_its_timer_is_gone(daemon, workers):
    workers(FLOWS)
    handle = start(daemon, "RtWait", "rt-ok", timedelta(hours=1))
    wait_until(lambda: describe(daemon, "rt-ok").status.value == "waiting", message="waiting")
    daemon.call(lambda c: c.get_workflow_handle("rt-ok").send("rt_go"))
    assert result(daemon, "rt-ok") == "done"
    assert timer_rows(daemon, handle.run_id) == []
    assert describe(daemon, "rt-ok").timers == []


def test_the_deadline_survives_a_daemon_restart(daemon, workers):
    workers(FLOWS)
    handle = start(daemon, "RtWait", "rt-restart", timedelta(seconds=2))
    wait_until(lambda: describe(daemon, "rt-restart").status.value == "waiting", message="wait")
    assert daemon.stop() == 0
    daemon.start()
    assert timed_out(daemon, "rt-restart")["message"] == "run timed out after 2s"
    assert timer_rows(daemon, handle.run_id) == []


@pytest.mark.parametrize("bad", [timedelta(0), timedelta(seconds=-1), 5])
def test_a_bad_run_timeout_is_refused_before_anything_starts(daemon, bad):
    with pytest.raises(InvalidInputError, match="run_timeout must be a positive"):
        start(daemon, "RtWait", "rt-bad", bad)


def test_a_run_timeout_over_ten_years_is_refused_by_the_daemon(daemon, workers):
    workers(FLOWS)
    with pytest.raises(InvalidInputError, match="at most 10 years"):
        start(daemon, "RtWait", "rt-long", timedelta(days=3651))
    assert daemon.rows("SELECT run_id FROM runs WHERE workflow_id = ?", ("rt-long",)) == []


def test_the_cli_run_timeout(daemon, workers):
    workers(FLOWS)
    r = run_grctl(
        "start",
        "RtWait",
        "--id",
        "rt-cli",
        "--run-timeout",
        "2s",
        "--wait",
        "--json",
        home=daemon.home,
    )
    assert r.code == 1, r
    out = r.json()
    assert out["status"] == "failed" and out["error"]["type"] == "RunTimeout"
    assert out["error"]["message"] == "run timed out after 2s"

    started = run_grctl(
        "start", "RtWait", "--id", "rt-cli-2", "--run-timeout", "1h", "--json", home=daemon.home
    )
    assert started.code == 0, started
    info = run_grctl("describe", "rt-cli-2", "--json", home=daemon.home).json()
    assert info["run_deadline_at"] is not None
    text = run_grctl("describe", "rt-cli-2", home=daemon.home)
    assert "deadline" in text.out and "run timeout" in text.out

    for bad in ("0", "soon"):
        refused = run_grctl(
            "start", "RtWait", "--id", "rt-cli-3", "--run-timeout", bad, home=daemon.home
        )
        assert refused.code == 2 and "--run-timeout" in refused.err, refused


def test_a_child_started_with_a_run_timeout_times_out_and_tells_its_parent(daemon, workers):
    workers(FLOWS)
    daemon.call(lambda c: c.start_workflow("RtParent", "rt-par", {"child_timeout_ms": 1000}))
    assert result(daemon, "rt-par") == {"status": "failed", "error": "RunTimeout"}
    assert timed_out(daemon, "rt-par-child")["message"] == "run timed out after 1s"


def test_a_parent_that_times_out_leaves_its_child_running_as_on_terminate(daemon, workers):
    workers(FLOWS)
    start(daemon, "RtParent", "rt-par2", timedelta(seconds=1), {"child_timeout_ms": 3_600_000})
    timed_out(daemon, "rt-par2")
    child = describe(daemon, "rt-par2-child")
    assert child.status.value == "waiting" and child.run_deadline_at is not None


def test_send_with_start_gives_the_run_it_starts_a_deadline(daemon, workers):
    workers(FLOWS)

    def sws(c):
        return c.send_with_start("RtWait", "rt-sws", "rt_go", run_timeout=timedelta(seconds=1))

    # The event is taken by the start handler's wait: the run completes in time.
    handle = daemon.call(sws)
    assert handle.started and result(daemon, "rt-sws") == "done"
    assert timer_rows(daemon, handle.run_id) == []


def test_send_with_start_deadline_fires_on_a_run_left_waiting(daemon, workers):
    workers(FLOWS)

    def sws(c):
        return c.send_with_start("RtWait", "rt-sws2", "rt_poke", run_timeout=timedelta(seconds=1))

    handle = daemon.call(sws)
    assert handle.started
    assert timed_out(daemon, "rt-sws2")["message"] == "run timed out after 1s"
    assert "event_dispatched" in kinds(daemon, "rt-sws2")
    assert timer_rows(daemon, handle.run_id) == []
