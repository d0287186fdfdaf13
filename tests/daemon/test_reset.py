"""Reset (SPEC 7): ``grctl reset ID --to-step STEP [--dry-run]`` and ``handle.reset(...)``.

The flow is tests/flows/rs_reset.py: start → two → three → four, each appending to the store's
``trail``; ``three`` fails while the run's flag file exists, ``four`` holds while
``<flag>.hold`` exists. A real daemon (SQLite and PostgreSQL), a real worker, the real CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from grctl.errors import InvalidInputError
from grctl.models.run import HistoryEvent
from grctl_daemon.engine.decide import Reset, decide
from grctl_daemon.engine.reset import ResetScan
from grctl_daemon.engine.state import RunState, StepSpec, TypeDef
from tests.cli.conftest import run_grctl
from tests.conftest import Daemon, wait_until

pytestmark = pytest.mark.backends

FLOWS = "flows.rs_reset"


def start(daemon: Daemon, wid: str, flag: Path) -> str:
    handle = daemon.call(lambda c: c.start_workflow("ResetFlow", wid, {"flag": str(flag)}))
    return handle.run_id


def describe(daemon: Daemon, wid: str, run_id: str | None = None) -> Any:
    return daemon.call(lambda c: c.get_workflow_handle(wid, run_id).describe())


def history(daemon: Daemon, wid: str, run_id: str | None = None) -> list[HistoryEvent]:
    return daemon.call(lambda c: c.get_workflow_handle(wid, run_id).history())


def wait_status(daemon: Daemon, wid: str, status: str) -> None:
    wait_until(lambda: describe(daemon, wid).status == status, 15, message=f"{wid} {status}")


def test_a_failed_run_reset_to_step_two_completes_with_the_store_as_it_was(
    daemon, workers, tmp_path
):
    workers(FLOWS)
    flag = tmp_path / "fail"
    flag.touch()
    old = start(daemon, "rs-1", flag)
    wait_status(daemon, "rs-1", "failed")
    before = [(e.seq, e.kind) for e in history(daemon, "rs-1")]

    dry = run_grctl("reset", "rs-1", "--to-step", "two", "--dry-run", "--json", home=daemon.home)
    assert dry.code == 0, dry
    plan = dry.json()
    assert plan["dry_run"] is True and plan["run_id"] is None
    assert plan["from_run_id"] == old and plan["from_status"] == "failed"
    # As committed when ``two`` began: ``two``'s and ``three``'s writes are not in it.
    assert plan["store"] == {"flag": str(flag), "trail": ["start"], "twos": 0}
    assert [s["step"] for s in plan["skipped"]] == ["three"] and plan["skipped_count"] == 1
    assert plan["terminates"] is False
    table = run_grctl("reset", "rs-1", "--to-step", "two", "--dry-run", home=daemon.home)
    assert table.code == 0 and "dry run" in table.out and "three" in table.out, table
    # A dry run changes nothing.
    assert describe(daemon, "rs-1").run_id == old
    assert [(e.seq, e.kind) for e in history(daemon, "rs-1")] == before

    flag.unlink()
    done = run_grctl("reset", "rs-1", "--to-step", "two", "--json", home=daemon.home)
    assert done.code == 0, done
    new = done.json()["run_id"]
    assert new and new != old and done.json()["dry_run"] is False
    result = daemon.call(lambda c: c.get_workflow_handle("rs-1", new).result(timeout=15))
    assert result == {"trail": ["start", "two", "three", "four"], "twos": 1}

    old_rows = history(daemon, "rs-1", old)
    assert old_rows[-1].kind == "reset"
    assert old_rows[-1].data["new_run_id"] == new and old_rows[-1].data["to_step"] == "two"
    assert describe(daemon, "rs-1", old).status == "failed"  # an ended run keeps its end
    new_rows = history(daemon, "rs-1", new)
    first = new_rows[0]
    assert first.kind == "workflow_reset" and first.data["from_run_id"] == old
    assert first.data["to_step"] == "two" and first.data["args"] is None
    started = [e.step_name for e in new_rows if e.kind == "step_started"]
    assert started == ["two", "three", "four"]  # two re-executed, start not run again
    assert describe(daemon, "rs-1").run_id == new


def test_reset_to_the_start_handler_runs_it_again_with_the_input(daemon, workers, tmp_path):
    workers(FLOWS)
    flag = tmp_path / "absent"
    old = start(daemon, "rs-2", flag)
    assert daemon.call(lambda c: c.get_workflow_handle("rs-2").result(timeout=15))["twos"] == 1

    info = daemon.call(lambda c: c.get_workflow_handle("rs-2").reset("start"))
    assert info.from_run_id == old and info.from_status == "completed"
    assert info.args == {"flag": str(flag)} and info.store == {}
    assert [s["step"] for s in info.skipped] == ["two", "three", "four"]
    result = daemon.call(lambda c: c.get_workflow_handle("rs-2", info.run_id).result(timeout=15))
    assert result == {"trail": ["start", "two", "three", "four"], "twos": 1}


def test_reset_refuses_a_step_that_never_ran_or_does_not_exist(daemon, workers, tmp_path):
    workers(FLOWS)
    flag = tmp_path / "fail"
    flag.touch()
    old = start(daemon, "rs-3", flag)
    wait_status(daemon, "rs-3", "failed")
    before = len(history(daemon, "rs-3"))

    never = run_grctl("reset", "rs-3", "--to-step", "four", "--json", home=daemon.home)
    assert never.code == 1, never
    assert "step 'four' never ran in workflow 'rs-3'" in never.err
    assert "steps that ran: start, three, two" in never.err
    unknown = run_grctl("reset", "rs-3", "--to-step", "nope", "--dry-run", home=daemon.home)
    assert unknown.code == 1, unknown
    assert "has no step 'nope'" in unknown.err and "four" in unknown.err
    with pytest.raises(InvalidInputError, match="never ran"):
        daemon.call(lambda c: c.get_workflow_handle("rs-3").reset("never"))
    assert describe(daemon, "rs-3").run_id == old
    assert len(history(daemon, "rs-3")) == before


def test_reset_of_an_active_run_terminates_it_in_the_same_commit(daemon, workers, tmp_path):
    workers(FLOWS)
    flag = tmp_path / "go"
    hold = tmp_path / "go.hold"
    hold.touch()
    old = start(daemon, "rs-4", flag)
    wait_until(lambda: describe(daemon, "rs-4").step_name == "four", 15, message="at four")

    r = run_grctl("reset", "rs-4", "--to-step", "three", home=daemon.home)
    assert r.code == 0, r
    assert "was terminated" in r.out and "three" in r.out
    info = describe(daemon, "rs-4", old)
    new = describe(daemon, "rs-4").run_id
    assert info.status == "terminated" and info.reason == f"reset to three as run {new}"
    kinds = [e.kind for e in history(daemon, "rs-4", old)]
    assert kinds[-2:] == ["workflow_terminated", "reset"]

    hold.unlink()
    result = daemon.call(lambda c: c.get_workflow_handle("rs-4", new).result(timeout=15))
    assert result == {"trail": ["start", "two", "three", "four"], "twos": 1}


def test_history_of_both_runs_says_what_happened(daemon, workers, tmp_path):
    workers(FLOWS)
    flag = tmp_path / "fail"
    flag.touch()
    old = start(daemon, "rs-5", flag)
    wait_status(daemon, "rs-5", "failed")
    new = daemon.call(lambda c: c.get_workflow_handle("rs-5").reset("two")).run_id
    wait_status(daemon, "rs-5", "failed")  # the flag is still there: three fails again

    rows = run_grctl("history", "rs-5", "--run", old, home=daemon.home)
    assert rows.code == 0, rows
    assert f"→ run {new} at two" in rows.out
    rows = run_grctl("history", "rs-5", "--run", new, "--json", home=daemon.home)
    assert rows.code == 0, rows
    first = rows.json()[0]
    assert first["kind"] == "workflow_reset" and first["data"]["from_run_id"] == old
    assert first["data"]["store"] == {"flag": str(flag), "trail": ["start"], "twos": 0}
    completed = [r for r in rows.json() if r["kind"] == "step_completed"]
    assert completed[0]["data"]["writes"]["trail"] == ["start", "two"]


def test_an_older_run_is_not_reset_over_an_active_newer_one(daemon, workers, tmp_path):
    workers(FLOWS)
    flag = tmp_path / "fail"
    flag.touch()
    (tmp_path / "fail.hold").touch()
    old = start(daemon, "rs-6", flag)
    wait_status(daemon, "rs-6", "failed")
    flag.unlink()
    newer = start(daemon, "rs-6", flag)  # held at four: active
    wait_until(lambda: describe(daemon, "rs-6").step_name == "four", 15, message="at four")

    r = run_grctl("reset", "rs-6", "--run", old, "--to-step", "two", home=daemon.home)
    assert r.code == 1, r
    assert f"has another active run ({newer})" in r.err
    assert describe(daemon, "rs-6").run_id == newer
    assert describe(daemon, "rs-6", old).status == "failed"
    assert history(daemon, "rs-6", old)[-1].kind == "workflow_failed"
    (tmp_path / "fail.hold").unlink()


# -- the history fold, without a daemon ---------------------------------------------------------


def _rows(*rows: tuple[str, str | None, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"seq": n, "kind": kind, "step_name": step, "data": data}
        for n, (kind, step, data) in enumerate(rows, 1)
    ]


def test_the_fold_takes_the_last_start_of_the_step_its_args_and_pages_alike():
    rows = _rows(
        ("workflow_started", None, {"input": b"in"}),
        ("step_started", "start", {"attempt": 1}),
        ("step_completed", "start", {"writes": {"a": b"1"}, "store_keys": ["a"]}),
        ("event_received", None, {"event_name": "ev", "inbox_seq": 1, "payload": b"p"}),
        ("waiting_for_event", None, {}),
        ("event_dispatched", "ev", {"event_name": "ev", "inbox_seq": 1}),
        ("step_started", "ev", {"attempt": 1}),
        ("step_failed", "ev", {"attempt": 1, "will_retry": True}),
        ("step_started", "ev", {"attempt": 2}),
        ("step_completed", "ev", {"writes": {"a": b"2", "b": b"3"}, "store_keys": ["a", "b"]}),
        ("step_started", "next", {"attempt": 1}),
    )
    for page in (1, 3, len(rows)):
        scan = ResetScan("ev")
        for i in range(0, len(rows), page):
            scan.feed(rows[i : i + page])
        plan = scan.plan
        assert plan.found and plan.seq == 9 and plan.handler_kind == "event"
        assert plan.args == b"p" and plan.store == {"a": b"1"}
        assert [s["step"] for s in plan.skipped] == ["next"] and plan.ran == {"start", "ev", "next"}
    start = ResetScan("start")
    start.feed(rows)
    assert start.plan.args == b"in" and start.plan.store == {} and start.plan.skipped_count == 3


def test_a_run_recorded_without_store_values_is_refused():
    rows = _rows(
        ("workflow_started", None, {"input": None}),
        ("step_started", "start", {"attempt": 1}),
        ("step_completed", "start", {"store_keys": ["a"]}),  # an older grctl: no "writes"
        ("step_started", "two", {"attempt": 1}),
    )
    scan = ResetScan("two")
    scan.feed(rows)
    tdef = TypeDef("T", "start", [], {"two": StepSpec("two", 1000, None)}, {}, frozenset())
    state = RunState("r1", "w1", "T", "failed", 0, 0)
    d = decide(state, Reset(tdef, scan.plan, "r2"), 1)
    assert isinstance(d.error, InvalidInputError) and "older grctl" in d.error.message
    assert not d.ops
