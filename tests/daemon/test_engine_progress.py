"""The decider keeps a step's last progress of each name: pure tables, no daemon."""

from __future__ import annotations

from grctl_daemon.engine.decide import StepReturned, decide
from grctl_daemon.storage import base as rec
from tests.daemon.test_engine import T0, TDEF, dispatched, ops_of, packed, started


def test_kept_progress_rows_come_just_before_the_outcome_in_the_same_unit():
    s = dispatched(started())
    before = s.history_seq
    progress = {"stage": packed("done"), "items": packed(3)}
    d = decide(
        s,
        StepReturned(
            TDEF, s.dispatch_id, {"kind": "complete", "result": None}, {}, None, progress=progress
        ),
        T0 + 5,
    )
    assert d.error is None and d.state is not None
    rows = ops_of(d, rec.AppendHistory)
    assert [(r.kind, r.seq) for r in rows] == [
        ("progress", before + 1),
        ("progress", before + 2),
        ("step_completed", before + 3),
        ("workflow_completed", before + 4),
    ]
    assert [r.data for r in rows[:2]] == [
        {"name": "stage", "value": packed("done")},
        {"name": "items", "value": packed(3)},
    ]
    assert all(r.step_name == "begin" for r in rows[:2])
    assert d.state.history_seq == before + 4


def test_a_failed_step_keeps_its_progress_too_and_a_stale_one_keeps_nothing():
    s = dispatched(started())
    progress = {"stage": packed("half")}
    error = {"type": "RuntimeError", "message": "boom"}
    d = decide(s, StepReturned(TDEF, s.dispatch_id, None, {}, error, progress=progress), T0 + 5)
    assert [r.kind for r in ops_of(d, rec.AppendHistory)][0] == "progress"
    stale = decide(s, StepReturned(TDEF, "RUN1.old", None, {}, error, progress=progress), T0 + 5)
    assert stale.error is not None and stale.ops == []


def test_no_progress_no_rows():
    s = dispatched(started())
    d = decide(s, StepReturned(TDEF, s.dispatch_id, {"kind": "complete"}, {}), T0 + 5)
    assert "progress" not in [r.kind for r in ops_of(d, rec.AppendHistory)]
