"""Retention: a daemon deletes ended runs past ``--retention`` by itself, and only those."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Daemon, wait_until

pytestmark = pytest.mark.backends


def _run_rows(daemon: Daemon, run_id: str) -> int:
    return daemon.rows("SELECT count(*) FROM runs WHERE run_id = ?", (run_id,))[0][0]


def _status(daemon: Daemon, workflow_id: str) -> str:
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).describe()).status.value


def test_retention_deletes_old_ended_runs_and_a_childs_end_to_a_gone_parent_is_dropped(
    daemon: Daemon, workers: Any
) -> None:
    daemon.stop()
    daemon.start(env={"GRCTL_RETENTION": "1s"})  # looked at every second
    workers("flows.rt_retention")
    ended = daemon.call(lambda c: c.start_workflow("RtHeld", "r-ended", {"n": 1})).run_id
    active = daemon.call(lambda c: c.start_workflow("RtHeld", "r-active", {"n": 2})).run_id
    daemon.call(lambda c: c.get_workflow_handle("r-ended").send("finish", {}))
    wait_until(lambda: _run_rows(daemon, ended) == 0, 10, message="retention of r-ended")
    assert daemon.rows("SELECT count(*) FROM history WHERE run_id = ?", (ended,)) == [(0,)]
    assert _run_rows(daemon, active) == 1 and _status(daemon, "r-active") == "waiting"

    # A parent that ended before its child is deleted; the child still ends cleanly, its
    # completion event dropped, and the parent's workflow_id can be started again.
    parent = daemon.call(lambda c: c.start_workflow("RtParent", "r-parent", {})).run_id
    wait_until(lambda: _run_rows(daemon, parent) == 0, 10, message="retention of r-parent")
    assert _status(daemon, "r-parent-child") == "waiting"
    daemon.call(lambda c: c.get_workflow_handle("r-parent-child").send("go", {}))
    wait_until(lambda: "completion event is dropped" in daemon.log.read_text(), 10, message="drop")
    again = daemon.call(lambda c: c.start_workflow("RtHeld", "r-parent", {"n": 3})).run_id
    assert again != parent
    wait_until(lambda: _status(daemon, "r-parent") == "waiting", 10, message="restarted")
    assert _run_rows(daemon, active) == 1


def test_retention_zero_keeps_every_run(daemon: Daemon, workers: Any) -> None:
    daemon.stop()
    daemon.start(env={"GRCTL_RETENTION": "0"})
    workers("flows.rt_retention")
    run_id = daemon.call(lambda c: c.start_workflow("RtHeld", "k-ended", {"n": 1})).run_id
    daemon.call(lambda c: c.get_workflow_handle("k-ended").send("finish", {}))
    wait_until(lambda: _status(daemon, "k-ended") == "completed", 10)
    assert daemon.status()["runs"].get("completed") == 1
    assert _run_rows(daemon, run_id) == 1
