"""``grctl send --key`` (idempotent events) and ``grctl send --start TYPE`` (send-with-start)."""

from __future__ import annotations


def test_send_with_a_key_twice_stores_the_event_once(served, uid):
    wid = uid("key")
    barrier = served.home / wid
    run_id = served.start_direct("CliOrder", wid, {"order_id": "k", "barrier": str(barrier)})
    args = ("send", wid, "note", "--payload", '{"text": "hi"}', "--key", "hook-7", "--json")

    first = served.grctl(*args)
    assert first.code == 0, first
    assert first.json() == {
        "workflow_id": wid,
        "event_name": "note",
        "payload": {"text": "hi"},
        "sent": True,
        "run_id": run_id,
        "inbox_seq": 1,
        "duplicate": False,
    }
    again = served.grctl(*args)
    assert again.code == 0, again
    assert again.json() == {**first.json(), "duplicate": True}
    plain = served.grctl(*args[:-1])
    assert plain.code == 0 and "not sent again" in plain.output, plain

    inbox = served.grctl("inbox", wid, "--json")
    assert [(e["seq"], e["idempotency_key"]) for e in inbox.json()] == [(1, "hook-7")]
    barrier.touch()

    bad = served.grctl("send", wid, "note", "--payload", '{"text": "x"}', "--key", "k" * 300)
    assert bad.code != 0 and "idempotency_key must be a string of 1–256" in bad.output


def test_send_start_starts_the_run_with_the_event_then_just_sends(served, uid):
    wid = uid("sws")
    first = served.grctl(
        "send", wid, "note", "--payload", '{"text": "a"}',
        "--start", "CliOrder", "--input", '{"order_id": "s"}', "--json",
    )  # fmt: skip
    assert first.code == 0, first
    out = first.json()
    assert out["started"] is True and out["inbox_seq"] == 1 and out["sent"] is True
    assert served.describe(wid).run_id == out["run_id"]

    second = served.grctl(
        "send", wid, "note", "--payload", '{"text": "b"}', "--start", "CliOrder", "--json"
    )
    assert second.code == 0, second
    assert second.json()["started"] is False and second.json()["run_id"] == out["run_id"]
    assert second.json()["inbox_seq"] == 2

    human = served.grctl("send", uid("sws"), "approve", "--start", "CliOrder",
                         "--input", '{"order_id": "h"}')  # fmt: skip
    assert human.code == 0 and "started run" in human.output, human


def test_send_input_without_start_is_refused_with_what_to_add(served, uid):
    r = served.grctl("send", uid("x"), "note", "--input", '{"order_id": "1"}')
    assert r.code == 2 and "add --start TYPE" in r.output, r


def test_send_start_of_an_unknown_event_starts_nothing(served, uid):
    wid = uid("swsbad")
    r = served.grctl("send", wid, "nope", "--start", "CliOrder", "--input", '{"order_id": "1"}')
    assert r.code != 0 and "no handler for event 'nope'" in r.output, r
    missing = served.grctl("describe", wid, "--json")
    assert missing.code != 0


def test_send_start_with_a_run_timeout_gives_the_started_run_its_deadline(served, uid):
    wid = uid("swsdeadline")
    r = served.grctl(
        "send", wid, "note", "--payload", '{"text": "t"}', "--start", "CliOrder",
        "--input", '{"order_id": "d"}', "--run-timeout", "1h", "--json",
    )  # fmt: skip
    assert r.code == 0 and r.json()["started"] is True, r
    info = served.describe(wid)
    assert info.run_deadline_at is not None
    assert 3500 < (info.run_deadline_at - info.created_at).total_seconds() <= 3600
    alone = served.grctl("send", uid("x"), "note", "--run-timeout", "1h")
    assert alone.code == 2 and "add --start TYPE" in alone.output, alone
    bad = served.grctl("send", uid("x"), "note", "--start", "CliOrder", "--run-timeout", "0")
    assert bad.code == 2 and "positive duration" in bad.output, bad
