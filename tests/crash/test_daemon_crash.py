"""The daemon dies (kill -9, or SIGKILL at a commit point) and restarts: nothing acknowledged is lost.

The workers are never restarted: they reconnect by themselves, and the daemon dispatches the
in-flight steps again from what it committed.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from grctl._faults import DAEMON_POINTS
from grctl.errors import DaemonUnavailableError, WorkflowAlreadyRunningError
from tests.conftest import Daemon, wait_until
from tests.crash.support import entries, history, of_kind, ops, reached, result, status

pytestmark = pytest.mark.backends

FLOWS = "flows.crashy"
PIPELINE_ID = "pipeline-1"
EXPECTED = {"reserved": "res-7", "txn": "txn-7", "label": "ups-7"}

# Which hit of the point kills the daemon. The whole run is about 10 group-commit transactions
# (1 is the worker's registration, 2 the start of the run with its first dispatch, then task
# records and step completions, each with the next dispatch), 3 dispatches (the second is the
# charge step its worker ran in place after the start, handed over when its task asked for the
# start's commit: see grctl/worker/_chain.py) and 4 records. The
# numbers spread the crash over the run: the start itself (2), a task's record in the first
# step (3) and in the second (5), and the event with its handler's dispatch (8).
CRASH_AFTER = {
    "before_commit": (2, 3, 5, 8),
    "after_commit": (2, 3, 5, 8),
    "after_dispatch": (1, 2, 3),
    "after_record": (1, 2, 4),
}
# The timer and mid-frame points are walked by tests/crash/test_fault_walk.py.
assert set(CRASH_AFTER) <= set(DAEMON_POINTS)
CASES = [(point, n) for point, hits in CRASH_AFTER.items() for n in hits]


class Driver:
    """Plays the client of a CrashPipeline run through crashes: start it, then send ``ship``.

    Every call may find the daemon gone. A call that got its reply is *acknowledged* and must
    survive; one that did not may or may not have committed, so it is checked before it is
    made again (as a careful client would).
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.run_id: str | None = None
        self.acked_run_id: str | None = None
        self.sent = False

    def advance(self) -> str:
        """Make the next call the run needs; returns its status."""
        d = self.daemon
        if self.run_id is None:
            try:
                handle = d.call(
                    lambda c: c.start_workflow("CrashPipeline", PIPELINE_ID, {"order_id": "7"})
                )
                self.run_id = self.acked_run_id = handle.run_id
            except WorkflowAlreadyRunningError:  # committed before the crash, never acknowledged
                self.run_id = d.call(lambda c: c.get_workflow_handle(PIPELINE_ID).describe()).run_id
        current = status(d, PIPELINE_ID)
        if current == "waiting" and not self.sent:
            if not of_kind(history(d, PIPELINE_ID), "event_received"):
                d.call(
                    lambda c: c.get_workflow_handle(PIPELINE_ID).send("ship", {"carrier": "ups"})
                )
            self.sent = True
        return current

    def until_crash(self) -> bool:
        if self.daemon.proc.poll() is not None:
            return True
        try:
            self.advance()
        except DaemonUnavailableError:
            pass
        return False


@pytest.mark.parametrize(("point", "after"), CASES, ids=[f"{p}-{n}" for p, n in CASES])
def test_daemon_killed_at_a_commit_point_loses_nothing(daemon, workers, ledger, point, after):
    assert daemon.stop() == 0
    daemon.start(env={"GRCTL_CRASH_AT": point, "GRCTL_CRASH_AFTER": str(after)})
    worker = workers(FLOWS, env={"LEDGER": str(ledger)})
    driver = Driver(daemon)
    wait_until(driver.until_crash, timeout=15, message=f"the daemon killing itself at {point}")
    assert daemon.wait_dead() == -signal.SIGKILL

    restart_ms = time.time() * 1000
    daemon.start()
    wait_until(lambda: driver.advance() == "completed", message="the run completing")

    assert result(daemon, PIPELINE_ID) == EXPECTED
    if driver.acked_run_id is not None:
        assert driver.run_id == driver.acked_run_id
    events = history(daemon, PIPELINE_ID)
    assert len(of_kind(events, "event_received")) == 1
    completed = of_kind(events, "task_completed")
    recorded = Counter(ev.data["name"] for ev in completed)
    assert recorded == {"reserve": 1, "charge": 1, "make_label": 1}
    # Nothing done that the history does not know, nothing recorded that was not done. A task
    # runs twice only when the crash lost its outcome: then its record committed after the
    # restart. Steps run one at a time, so at most one task was in that window.
    ran = ops(ledger)
    assert set(ran) == set(recorded)
    twice = {name for name, n in ran.items() if n == 2}
    assert all(n in (1, 2) for n in ran.values()) and len(twice) <= 1
    for ev in completed:
        if ev.data["name"] in twice:
            assert ev.time.timestamp() * 1000 >= restart_ms - 1
    # The worker was not restarted: it reconnected and did everything after the restart itself.
    assert worker.proc.poll() is None
    assert {pid for _, pid, _ in entries(ledger)} == {worker.pid}
    assert daemon.integrity_ok()


def test_overdue_wait_timer_fires_at_start_up(daemon, workers, ledger):
    workers(FLOWS, env={"LEDGER": str(ledger)})
    daemon.call(lambda c: c.start_workflow("CrashPatience", "patience-1"))
    wait_until(lambda: status(daemon, "patience-1") == "waiting", message="run waiting")
    info = daemon.call(lambda c: c.get_workflow_handle("patience-1").describe())
    (timer,) = info.timers
    daemon.kill9()
    assert time.time() * 1000 < timer["due_ms"], "the daemon must die before the deadline"

    wait_until(lambda: time.time() * 1000 > timer["due_ms"] + 100, message="the deadline passing")
    restart_ms = time.time() * 1000
    daemon.start()
    assert result(daemon, "patience-1") == "gave up"
    (timed_out,) = of_kind(history(daemon, "patience-1"), "wait_timed_out")
    fired_ms = timed_out.time.timestamp() * 1000
    assert restart_ms <= fired_ms + 1 < restart_ms + 4000  # at start-up, not at some later poll
    assert ops(ledger) == {"gave_up": 1}
    assert daemon.integrity_ok()


def test_acknowledged_event_survives_a_daemon_kill(daemon, workers, ledger):
    worker = workers(FLOWS, env={"LEDGER": str(ledger)})
    daemon.call(lambda c: c.start_workflow("CrashInbox", "inbox-1"))
    assert reached(ledger, "inbox") == worker.pid
    # The run is busy in its start step, so the event waits in the inbox.
    daemon.call(lambda c: c.get_workflow_handle("inbox-1").send("ping", {"n": 7}))
    daemon.kill9()

    restart_ms = time.time() * 1000
    daemon.start()
    assert result(daemon, "inbox-1") == {"ping": 7}
    assert ops(ledger) == {"ping": 1}
    inbox = daemon.call(lambda c: c.get_workflow_handle("inbox-1").inbox())
    assert [(ev.seq, ev.event_name, ev.payload, ev.state) for ev in inbox] == [
        (1, "ping", {"n": 7}, "dispatched")
    ]
    events = history(daemon, "inbox-1")
    (received,) = of_kind(events, "event_received")
    (dispatched,) = of_kind(events, "event_dispatched")
    assert received.time.timestamp() * 1000 < restart_ms <= dispatched.time.timestamp() * 1000 + 1
    assert daemon.integrity_ok()
