"""``grctl send``, ``inbox`` and ``history`` (a table, JSON, and ``--follow``)."""

from __future__ import annotations

import json
import subprocess

from tests.cli.conftest import CLI_TIMEOUT_S, cli_env
from tests.conftest import GRCTL, TESTS


def _inbox(served, wid):
    r = served.grctl("inbox", wid, "--json")
    assert r.code == 0, r
    return r.json()


def test_send_queues_events_and_inbox_shows_pending_then_dispatched(served, uid):
    wid = uid("inbox")
    barrier = served.home / wid
    run_id = served.start_direct("CliOrder", wid, {"order_id": "i", "barrier": str(barrier)})
    served.wait_status(wid, "running")  # held in its step: events wait in the inbox

    sent = served.grctl("send", wid, "note", "--payload", '{"text": "first"}', "--json")
    assert sent.code == 0, sent
    assert sent.json() == {
        "workflow_id": wid,
        "event_name": "note",
        "payload": {"text": "first"},
        "sent": True,
        "run_id": run_id,
        "inbox_seq": 1,
    }
    payload_file = served.home / f"{wid}.json"
    payload_file.write_text('{"qty": 5}')
    assert served.grctl("send", wid, "approve", "--payload-file", str(payload_file)).code == 0

    pending = _inbox(served, wid)
    assert [(e["seq"], e["event_name"], e["state"]) for e in pending] == [
        (1, "note", "pending"),
        (2, "approve", "pending"),
    ]
    assert pending[1]["payload"] == {"qty": 5} and pending[0]["arrived_at"].endswith("Z")

    barrier.touch()
    assert served.result_direct(wid)["txn"] == "txn-i-5"
    dispatched = _inbox(served, wid)
    assert [(e["state"], e["step_name"]) for e in dispatched] == [
        ("dispatched", "note"),
        ("dispatched", "approve"),
    ]
    table = served.grctl("inbox", wid)
    assert table.code == 0 and "dispatched → approve" in table.out


def test_history_is_one_row_an_event_with_long_values_cut_and_whole_in_json(served, uid):
    wid = uid("hist")
    served.start_direct("CliOrder", wid, {"order_id": "h"})
    served.wait_status(wid, "waiting")
    served.daemon.call(lambda c: c.get_workflow_handle(wid).send("approve", {"qty": 2}))
    served.result_direct(wid)

    events = served.grctl("history", wid, "--json").json()
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "workflow_started" and kinds[-1] == "workflow_completed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["data"]["result"]["note"] == "x" * 200  # whole in JSON

    table = served.grctl("history", wid, env={"COLUMNS": "120"})
    assert table.code == 0, table
    lines = table.out.splitlines()
    assert len(lines) == 2 + len(events), table.out  # a title, a header, one line an event
    rows = {int(line.split()[0]): line for line in lines[2:]}
    assert sorted(rows) == [e["seq"] for e in events]
    assert all(len(line.rstrip()) <= 120 for line in lines)
    assert "…" in rows[events[-1]["seq"]] and "x" * 200 not in table.out  # cut in the table
    assert 'approve #1 payload={"qty": 2}' in table.out
    assert "attempt=1 worker=" in table.out


def test_history_follow_streams_json_lines_and_ends_with_the_run(served, uid):
    wid = uid("follow")
    barrier = served.home / wid
    served.start_direct("CliOrder", wid, {"order_id": "f", "barrier": str(barrier)})
    follower = subprocess.Popen(
        [GRCTL, "history", wid, "--follow", "--json"],
        cwd=TESTS,
        env=cli_env(served.home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = follower.stdout.readline()  # live: the run is held, yet events arrive
        assert '"workflow_started"' in first
        assert follower.poll() is None
        barrier.touch()
        served.wait_status(wid, "waiting")
        assert served.grctl("send", wid, "approve").code == 0
        follower.wait(timeout=CLI_TIMEOUT_S)  # ends by itself
        # Read through the same buffered pipe as ``first`` (communicate() would skip the lines
        # that readline() already buffered with it).
        out, err = follower.stdout.read(), follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.stdout.close()
        follower.stderr.close()
    assert follower.returncode == 0, err
    assert "Traceback" not in err
    events = [json.loads(first)] + [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["kind"] == "workflow_completed"
    assert {"event_received", "event_dispatched", "task_completed"} <= {e["kind"] for e in events}


def test_history_follow_of_an_ended_run_prints_it_and_exits(served, uid):
    wid = uid("ended")
    served.start_direct("CliQuick", wid, {"n": 2})
    served.result_direct(wid)
    r = served.grctl("history", wid, "--follow")
    assert r.code == 0, r
    assert "workflow_completed" in r.out and 'result={"doubled": 4}' in r.out
