"""The decider's half of idempotent events and send-with-start, as tables (no daemon, no I/O).

In the style of test_engine.py, whose fixtures (TDEF, ``start``) it reuses.
"""

from __future__ import annotations

import pytest

from grctl.errors import InvalidInputError, UnknownEventError, WorkflowAlreadyRunningError
from grctl_daemon.engine.decide import Send, SendWithStart, Start, decide
from grctl_daemon.engine.state import MAX_EVENT_KEYS, RunState
from grctl_daemon.storage import base as rec
from tests.daemon.test_engine import T0, TDEF, packed, start

INPUT = packed({"order_id": "1"})


def keyed(state: RunState, key: str | None, known: int | None = None, now: int = T0 + 10):
    return decide(state, Send(TDEF, "approve", None, None, key, known), now)


def running() -> RunState:
    d = start("o-1", "r1", INPUT, T0)
    assert d.state is not None
    return d.state


def inbox_ops(d) -> list[rec.AddInbox]:
    return [op for op in d.ops if type(op) is rec.AddInbox]


def test_a_key_is_stored_with_its_event_and_remembered():
    d = keyed(running(), "k1")
    assert d.error is None
    assert [(op.seq, op.idempotency_key) for op in inbox_ops(d)] == [(1, "k1")]
    assert d.reply == {"inbox_seq": 1, "workflow_id": "o-1", "run_id": "r1", "duplicate": False}
    assert d.state.event_keys == {"k1": 1}


@pytest.mark.parametrize("source", ["memory", "database"])
def test_a_second_send_with_the_key_is_acknowledged_and_writes_nothing(source):
    s = running()
    if source == "memory":  # the first send is decided, maybe not yet committed
        s = keyed(s, "k1").state
        known = None
    else:  # read back from the database: memory knows no key, the look-up found seq 1
        s = keyed(s, "k1").state
        s.event_keys = {}
        known = 1
    d = keyed(s, "k1", known)
    assert d.error is None and d.ops == [] and d.effects == []
    assert d.state is s
    assert d.reply == {"inbox_seq": 1, "workflow_id": "o-1", "run_id": "r1", "duplicate": True}


def test_a_duplicate_to_an_ended_run_is_acknowledged_a_new_key_is_refused():
    s = keyed(running(), "k1").state
    s.status = "completed"
    assert keyed(s, "k1").reply["duplicate"] is True
    assert keyed(s, "k2").error.code == "workflow_not_running"


def test_memory_keeps_only_the_newest_keys():
    s = running()
    for n in range(MAX_EVENT_KEYS + 5):
        s = keyed(s, f"k{n}").state
    assert len(s.event_keys) == MAX_EVENT_KEYS
    assert "k0" not in s.event_keys and f"k{MAX_EVENT_KEYS + 4}" in s.event_keys


@pytest.mark.parametrize("key", ["", "x" * 257, 7])
def test_a_bad_key_is_refused(key):
    d = keyed(running(), key)
    assert isinstance(d.error, InvalidInputError)
    assert "idempotency_key must be a string of 1–256 characters" in d.error.message


def sws(active: RunState | None, event: str = "approve", key: str | None = None):
    msg = SendWithStart(
        Start(TDEF, "Order", "o-1", "r2", INPUT), Send(TDEF, event, None, None, key)
    )
    return decide(active, msg, T0 + 20)


def test_send_with_start_inserts_the_run_with_its_event_in_one_unit():
    d = sws(None, key="k1")
    assert d.error is None
    kinds = [type(op).__name__ for op in d.ops]
    assert kinds.count("InsertRun") == 1 and "SaveRun" not in kinds
    (insert,) = [op for op in d.ops if type(op) is rec.InsertRun]
    assert insert.run is d.state and d.state.inbox_seq == 1
    assert [(op.run_id, op.seq) for op in inbox_ops(d)] == [("r2", 1)]
    history = [op.kind for op in d.ops if type(op) is rec.AppendHistory]
    assert history[0] == "workflow_started" and "event_received" in history
    assert d.reply["started"] is True and d.reply["run_id"] == "r2"


def test_send_with_start_just_sends_to_an_active_run():
    s = running()
    d = sws(s)
    assert d.error is None and not any(type(op) is rec.InsertRun for op in d.ops)
    assert d.reply["run_id"] == "r1" and d.reply["started"] is False


def test_send_with_start_of_a_bad_event_starts_nothing():
    d = sws(None, event="nope")
    assert isinstance(d.error, UnknownEventError) and d.ops == [] and d.state is None


def test_a_plain_start_still_refuses_an_active_run():
    d = decide(running(), Start(TDEF, "Order", "o-1", "r3", INPUT), T0)
    assert isinstance(d.error, WorkflowAlreadyRunningError)
