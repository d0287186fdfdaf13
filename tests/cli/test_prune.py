"""``grctl prune``: dry run changes nothing; a prune removes exactly the matching ended runs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cli.conftest import run_grctl
from tests.conftest import Daemon, wait_until

pytestmark = pytest.mark.backends

RUN_TABLES = ("store", "history", "inbox", "step_records", "timers")


def _rows_of(daemon: Daemon, run_id: str) -> dict[str, int]:
    counts = {"runs": daemon.rows("SELECT count(*) FROM runs WHERE run_id = ?", (run_id,))[0][0]}
    for table in RUN_TABLES:
        sql = f"SELECT count(*) FROM {table} WHERE run_id = ?"
        counts[table] = daemon.rows(sql, (run_id,))[0][0]
    return counts


def _status(daemon: Daemon, workflow_id: str) -> str:
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).describe()).status.value


def _start(daemon: Daemon, workflow_id: str, n: int = 1) -> str:
    return daemon.call(lambda c: c.start_workflow("RtHeld", workflow_id, {"n": n})).run_id


def _finish(daemon: Daemon, workflow_id: str, status: str, **payload: Any) -> None:
    daemon.call(lambda c: c.get_workflow_handle(workflow_id).send("finish", payload))
    wait_until(lambda: _status(daemon, workflow_id) == status, 15, message=status)


def test_prune_dry_run_then_exactly_the_matching_ended_runs(daemon: Daemon, workers: Any) -> None:
    workers("flows.rt_retention")
    done, failed, active = (_start(daemon, wid) for wid in ("p-done", "p-failed", "p-active"))
    _finish(daemon, "p-done", "completed")
    _finish(daemon, "p-failed", "failed", fail=True)
    assert _status(daemon, "p-active") == "waiting"
    before = {rid: _rows_of(daemon, rid) for rid in (done, failed, active)}
    assert before[done]["history"] > 0 and before[active]["store"] == 1

    dry = run_grctl("prune", "--older-than", "0", "--dry-run", "--json", home=daemon.home)
    assert dry.code == 0, dry
    data = dry.json()
    assert (data["dry_run"], data["removed"]) == (True, 2)
    assert data["by_status"] == {"completed": 1, "failed": 1}
    assert {r["run_id"] for r in data["runs"]} == {done, failed}
    assert {rid: _rows_of(daemon, rid) for rid in (done, failed, active)} == before

    # Too recent for the cut-off: nothing goes.
    recent = run_grctl("prune", "--older-than", "1h", "--json", home=daemon.home)
    assert (recent.code, recent.json()["removed"]) == (0, 0), recent

    only_failed = run_grctl(
        "prune", "--older-than", "0", "--status", "failed", "--type", "RtHeld", "--json",
        home=daemon.home,
    )  # fmt: skip
    assert only_failed.code == 0, only_failed
    assert [r["run_id"] for r in only_failed.json()["runs"]] == [failed]
    assert set(_rows_of(daemon, failed).values()) == {0}
    assert _rows_of(daemon, done) == before[done]

    table = run_grctl("prune", "--older-than", "0", home=daemon.home)
    assert table.code == 0, table
    assert "p-done" in table.out and "deleted 1 run(s) (1 completed)" in table.err
    assert set(_rows_of(daemon, done).values()) == {0}
    assert _rows_of(daemon, active) == before[active]  # the active run is untouched
    assert _status(daemon, "p-active") == "waiting"

    # A pruned run is gone for every command, and its workflow_id starts again.
    gone = run_grctl("describe", "p-done", "--json", home=daemon.home)
    assert gone.code == 1 and "not found" in gone.err, gone
    again = _start(daemon, "p-done", 7)
    assert again != done
    _finish(daemon, "p-done", "completed")
    assert daemon.call(lambda c: c.get_workflow_handle("p-done").result(timeout=10)) == 7


def test_prune_refuses_active_statuses_and_bad_durations(daemon: Daemon) -> None:
    bad_status = run_grctl("prune", "--older-than", "1d", "--status", "running", home=daemon.home)
    assert bad_status.code == 2, bad_status
    bad_age = run_grctl("prune", "--older-than", "soon", home=daemon.home)
    assert bad_age.code == 2 and "90s, 15m, 1h30m or 30d" in bad_age.err, bad_age
