"""Schedules against the real daemon, on SQLite and PostgreSQL.

- A per-second cron fires on its own: each fire starts ``NAME-<fire time>`` with the input.
- The schedule survives a restart, and the fires missed while the daemon was down run once.
- ``overlap="skip"`` records a skip while the last run is active; ``"allow"`` starts anyway.
- pause / resume / delete take effect at once.
- A bad cron, a bad zone, an unknown type, a taken name: one clear error each.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from grctl.errors import (
    InvalidInputError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    WorkflowTypeNotRegisteredError,
)
from tests.conftest import Daemon, wait_until

pytestmark = pytest.mark.backends

EVERY_SECOND = "* * * * * *"  # six fields: seconds first
NEVER_SOON = "0 0 1 1 *"  # 1 January, 00:00: fired in these tests by trigger only


def _fires(daemon: Daemon, name: str) -> list[tuple[str, str, str]]:
    """(workflow_id, run_id, status) of the runs the schedule started, oldest fire first."""
    rows = daemon.rows(
        "SELECT workflow_id, run_id, status FROM runs WHERE workflow_id LIKE ? "
        "ORDER BY workflow_id, created_ms",
        (f"{name}-%",),
    )
    return [tuple(r) for r in rows]


def _fire_time(workflow_id: str, name: str) -> datetime:
    stamp = workflow_id.removeprefix(f"{name}-")
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _later(seconds: float) -> None:
    """Let wall-clock time pass (fire times are wall-clock seconds)."""
    until = time.time() + seconds
    wait_until(lambda: time.time() >= until, seconds + 5, message=f"{seconds}s to pass")


def test_a_cron_fires_runs_named_after_the_fire_time_with_the_input(daemon, workers):
    workers("flows.sc_jobs")
    info = daemon.call(
        lambda c: c.create_schedule(
            "tick", "ScQuick", EVERY_SECOND, {"tag": "nightly"}, overlap="allow"
        )
    )
    assert info.next_fire_at is not None and not info.paused
    fires = wait_until(lambda: len(_fires(daemon, "tick")) >= 2 and _fires(daemon, "tick"), 10)
    daemon.call(lambda c: c.delete_schedule("tick"))
    for workflow_id, _, _ in fires:
        assert _fire_time(workflow_id, "tick").microsecond == 0  # parses: NAME-<UTC second>
    assert len({w for w, _, _ in fires}) == len(fires)  # one run per fire time
    first = fires[0][0]
    assert daemon.call(lambda c: c.get_workflow_handle(first).result(timeout=10)) == {
        "tag": "nightly"
    }
    listed = daemon.call(lambda c: c.list_schedules())
    assert listed == []


@pytest.mark.parametrize("stop", ["graceful", "kill9"])
def test_a_schedule_survives_a_restart_and_missed_fires_run_once(daemon, workers, stop):
    workers("flows.sc_jobs")
    daemon.call(lambda c: c.create_schedule("miss", "ScQuick", EVERY_SECOND, overlap="allow"))
    wait_until(lambda: len(_fires(daemon, "miss")) >= 2, 10, message="fires under way")
    if stop == "kill9":  # wherever it was in a fire: the run and the next fire time, or neither
        daemon.kill9()
    else:
        assert daemon.stop() == 0
    down_at = datetime.now(UTC)
    _later(3.5)  # three or four fire times pass while the daemon is down
    daemon.start()
    up_at = datetime.now(UTC)
    wait_until(lambda: any(_fire_time(w, "miss") > up_at for w, _, _ in _fires(daemon, "miss")), 10)
    daemon.call(lambda c: c.delete_schedule("miss"))
    missed = [
        w
        for w, _, _ in _fires(daemon, "miss")
        if down_at.replace(microsecond=0) < _fire_time(w, "miss") < up_at.replace(microsecond=0)
    ]
    assert len(missed) == 1, missed  # the missed slots collapse into one fire at start-up
    fires = _fires(daemon, "miss")
    assert len({w for w, _, _ in fires}) == len(fires)  # no fire time started twice


def test_overlap_skip_records_the_skip_and_allow_starts_anyway(daemon, workers):
    workers("flows.sc_jobs")
    daemon.call(lambda c: c.create_schedule("hold", "ScHeld", NEVER_SOON))
    first = daemon.call(lambda c: c.trigger_schedule("hold"))
    assert not first.skipped and first.workflow_id.startswith("hold-")
    skipped = daemon.call(lambda c: c.trigger_schedule("hold"))
    assert skipped.skipped and skipped.active_run_id == first.run_id and skipped.run_id is None
    info = daemon.call(lambda c: c.describe_schedule("hold"))
    assert info.skips == 1 and info.last_skip_at is not None
    assert info.last_run_id == first.run_id and info.last_status in ("running", "waiting")
    assert len(_fires(daemon, "hold")) == 1

    daemon.call(lambda c: c.create_schedule("both", "ScHeld", NEVER_SOON, overlap="allow"))
    one = daemon.call(lambda c: c.trigger_schedule("both"))
    _later(1.0)  # the next fire time is another second: another workflow_id
    two = daemon.call(lambda c: c.trigger_schedule("both"))
    assert not two.skipped and two.workflow_id != one.workflow_id
    assert {s for _, _, s in _fires(daemon, "both")} <= {"running", "waiting"}
    assert len(_fires(daemon, "both")) == 2
    for w in (first.workflow_id, one.workflow_id, two.workflow_id):
        daemon.call(lambda c, w=w: c.get_workflow_handle(w).send("release"))
    # The last run ended: the next fire of a skip schedule starts again.
    wait_until(lambda: _fires(daemon, "hold")[0][2] == "completed", 10)
    again = daemon.call(lambda c: c.trigger_schedule("hold"))
    assert not again.skipped


def test_pause_resume_and_delete_take_effect_at_once(daemon, workers):
    workers("flows.sc_jobs")
    daemon.call(lambda c: c.create_schedule("pz", "ScQuick", EVERY_SECOND, overlap="allow"))
    wait_until(lambda: _fires(daemon, "pz"), 10, message="a first fire")
    paused = daemon.call(lambda c: c.pause_schedule("pz"))
    assert paused.paused and paused.next_fire_at is None
    count = len(_fires(daemon, "pz"))
    _later(2.5)
    assert len(_fires(daemon, "pz")) == count  # no fire while paused
    resumed = daemon.call(lambda c: c.resume_schedule("pz"))
    assert not resumed.paused and resumed.next_fire_at is not None
    wait_until(lambda: len(_fires(daemon, "pz")) > count, 10, message="a fire after resume")
    daemon.call(lambda c: c.delete_schedule("pz"))
    with pytest.raises(ScheduleNotFoundError):
        daemon.call(lambda c: c.describe_schedule("pz"))
    count = len(_fires(daemon, "pz"))
    _later(2.0)
    assert len(_fires(daemon, "pz")) == count  # no fire once deleted


def test_bad_schedules_are_refused_with_one_clear_error(daemon, workers):
    workers("flows.sc_jobs")
    with pytest.raises(InvalidInputError, match="invalid cron expression"):
        daemon.call(lambda c: c.create_schedule("bad", "ScQuick", "61 * * * *"))
    with pytest.raises(InvalidInputError, match="unknown time zone 'Mars/Olympus'"):
        daemon.call(
            lambda c: c.create_schedule("bad", "ScQuick", NEVER_SOON, timezone="Mars/Olympus")
        )
    with pytest.raises(WorkflowTypeNotRegisteredError, match="NoSuchType"):
        daemon.call(lambda c: c.create_schedule("bad", "NoSuchType", NEVER_SOON))
    with pytest.raises(InvalidInputError, match="overlap"):
        daemon.call(lambda c: c.create_schedule("bad", "ScQuick", NEVER_SOON, overlap="queue"))
    daemon.call(lambda c: c.create_schedule("taken", "ScQuick", NEVER_SOON))
    with pytest.raises(ScheduleExistsError, match="grctl schedule delete taken"):
        daemon.call(lambda c: c.create_schedule("taken", "ScQuick", NEVER_SOON))
    with pytest.raises(ScheduleNotFoundError, match="grctl schedule list"):
        daemon.call(lambda c: c.trigger_schedule("nope"))
    assert [s.name for s in daemon.call(lambda c: c.list_schedules())] == ["taken"]
