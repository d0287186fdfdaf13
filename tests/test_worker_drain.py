"""A worker told to stop lets its running steps finish and report before it disconnects."""

import signal

import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.backends


def test_sigterm_lets_the_running_step_finish_on_the_same_worker(daemon, workers, home):
    worker = workers("flows.lead_drain", env={"DRAIN_DIR": str(home)})
    daemon.call(lambda c: c.start_workflow("LeadDrain", "drain-1"))
    wait_until((home / "reached").exists, message="step running")

    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping: waiting up to" in worker.output(), message="worker draining")
    assert worker.proc.poll() is None  # still there, finishing its step
    (home / "release").touch()

    assert daemon.call(lambda c: c.get_workflow_handle("drain-1").result(timeout=15)) == worker.pid
    assert worker.proc.wait(15) == 0
    kinds = [ev.kind for ev in daemon.call(lambda c: c.get_workflow_handle("drain-1").history())]
    assert "worker_lost" not in kinds and kinds.count("step_started") == 1
