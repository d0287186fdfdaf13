"""``grctl start``, ``list``, ``describe``, ``result``, ``query``, ``cancel``, ``terminate``."""

from __future__ import annotations

import time
from datetime import UTC, datetime

ULID_LENGTH = 26


def test_start_prints_ids_and_the_input_forms_combine(served, uid, tmp_path):
    wid = uid("start")
    r = served.grctl(
        "start", "CliOrder", "--id", wid, "--input", '{"order_id": "a", "qty": 1}', "-i", "qty=3"
    )
    assert r.code == 0, r
    assert wid in r.out and "Traceback" not in r.output
    info = served.grctl("describe", wid, "--json").json()
    assert info["input"] == {"order_id": "a", "qty": 3}
    assert len(info["run_id"]) == ULID_LENGTH and info["run_id"] in r.out

    from_file = tmp_path / "input.json"
    from_file.write_text('{"order_id": "f", "qty": 2}')
    started = served.start("CliOrder", uid("file"), "--input-file", str(from_file))
    assert served.grctl("describe", started["workflow_id"], "--json").json()["input"] == {
        "order_id": "f",
        "qty": 2,
    }

    wid = uid("stdin")
    r = served.grctl(
        "start",
        "CliOrder",
        "--id",
        wid,
        "--input-file",
        "-",
        "-i",
        "qty=5",
        stdin='{"order_id": "s"}',
    )
    assert r.code == 0, r
    assert served.grctl("describe", wid, "--json").json()["input"] == {"order_id": "s", "qty": 5}


def test_start_wait_prints_the_result(served, uid):
    wid = uid("quick")
    r = served.grctl("start", "CliQuick", "--id", wid, "-i", "n=21", "--wait", "--json")
    assert r.code == 0, r
    assert r.json() == {
        "workflow_id": wid,
        "run_id": r.json()["run_id"],
        "status": "completed",
        "result": {"doubled": 42},
    }
    table = served.grctl("start", "CliQuick", "--id", uid("quick"), "-i", "n=1", "--wait")
    assert table.code == 0 and "completed" in table.out and '"doubled": 2' in table.out


def test_start_wait_on_a_failing_run_exits_1_and_points_at_describe(served, uid):
    wid = uid("broken")
    r = served.grctl("start", "CliBroken", "--id", wid, "--wait")
    assert r.code == 1, r
    assert "StepFailed" in r.err and f"grctl describe {wid}" in r.err
    assert "Traceback" not in r.output
    as_json = served.grctl("start", "CliBroken", "--id", uid("broken"), "--wait", "--json")
    assert as_json.code == 1
    assert as_json.json()["status"] == "failed"
    assert as_json.json()["error"]["type"] == "StepFailed"


def test_describe_shows_store_step_worker_and_timers(served, uid):
    wid = uid("timed")
    served.start_direct("CliTimed", wid)
    served.wait_status(wid, "waiting")
    info = served.grctl("describe", wid, "--json").json()
    assert info["workflow_type"] == "CliTimed" and info["status"] == "waiting"
    [timer] = info["timers"]
    left_s = timer["due_ms"] / 1000 - time.time()
    assert 200 < left_s <= 300
    table = served.grctl("describe", wid)
    assert table.code == 0 and "timer" in table.out and "in 4m" in table.out

    order = uid("order")
    served.start("CliOrder", order, "-i", "order_id=o", "-i", f"barrier={served.home / order}")
    served.wait_status(order, "running")
    info = served.grctl("describe", order, "--json").json()
    assert info["step_name"] == "hold" and info["attempt"] == 1 and info["worker"]
    assert info["store"] == {
        "order_id": "o",
        "qty": 1,
        "status": "new",
        "barrier": str(served.home / order),
    }
    (served.home / order).touch()
    served.wait_status(order, "waiting")


def test_describe_of_a_failed_run_shows_the_traceback(served, uid):
    wid = uid("broken")
    served.start_direct("CliBroken", wid)
    served.wait_status(wid, "failed")
    info = served.grctl("describe", wid, "--json").json()
    assert info["status"] == "failed"
    assert info["error"]["details"]["cause"] == "ValueError"
    assert "the order book is on fire" in info["error"]["traceback"]
    table = served.grctl("describe", wid)
    assert table.code == 0
    assert "traceback" in table.out and 'raise ValueError("the order book is on fire")' in table.out


def test_list_filters_and_puts_the_newest_first(served, uid):
    ids = [uid("list") for _ in range(3)]
    for wid in ids:
        served.start_direct("CliQuick", wid)
    newest = served.grctl("list", "--type", "CliQuick", "--limit", "3", "--json").json()
    assert [r["workflow_id"] for r in newest] == ids[::-1]
    created = [datetime.fromisoformat(r["created_at"]) for r in newest]
    assert created == sorted(created, reverse=True) and created[0].tzinfo == UTC

    failed = uid("broken")
    served.start_direct("CliBroken", failed)
    served.wait_status(failed, "failed")
    runs = served.grctl("list", "--status", "failed", "--json").json()
    assert {r["status"] for r in runs} == {"failed"}
    assert failed in [r["workflow_id"] for r in runs]
    assert served.grctl("list", "--status", "waiting", "--type", "CliQuick", "--json").json() == []
    table = served.grctl("list", "--type", "CliQuick", "--limit", "3")
    assert table.code == 0 and all(wid in table.out for wid in ids)


def test_result_waits_or_refuses_a_run_still_going(served, uid):
    wid = uid("order")
    served.start_direct("CliOrder", wid, {"order_id": "r"})
    served.wait_status(wid, "waiting")
    early = served.grctl("result", wid)
    assert early.code == 1 and "--wait" in early.err and "Traceback" not in early.output
    assert served.grctl("send", wid, "approve", "--payload", '{"qty": 4}').code == 0
    r = served.grctl("result", wid, "--wait", "--json")
    assert r.code == 0, r
    assert r.json()["result"]["txn"] == "txn-r-4"
    plain = served.grctl("result", wid)
    assert plain.code == 0 and '"txn": "txn-r-4"' in plain.out


def test_query_answers_from_the_store(served, uid):
    wid = uid("order")
    served.start_direct("CliOrder", wid, {"order_id": "q"})
    served.wait_status(wid, "waiting")
    r = served.grctl("query", wid, "status", "--json")
    assert r.code == 0, r
    assert r.json() == {"workflow_id": wid, "query_name": "status", "value": "new"}
    assert served.grctl("query", wid, "status").out.strip() == '"new"'  # always JSON
    unknown = served.grctl("query", wid, "nope")
    assert unknown.code == 1 and "nope" in unknown.err and "Traceback" not in unknown.output


def test_cancel_and_terminate_end_active_runs_and_refuse_ended_ones(served, uid):
    cancelled, terminated = uid("cancel"), uid("term")
    for wid in (cancelled, terminated):
        served.start_direct("CliOrder", wid, {"order_id": "c"})
        served.wait_status(wid, "waiting")
    r = served.grctl("cancel", cancelled, "--reason", "not needed", "--json")
    assert r.code == 0, r
    assert r.json()["status"] == "cancelled"
    assert served.grctl("describe", cancelled, "--json").json()["reason"] == "not needed"
    t = served.grctl("terminate", terminated, "--json")
    assert t.code == 0 and t.json()["status"] == "terminated"
    for verb, wid in (("cancel", cancelled), ("terminate", terminated), ("cancel", terminated)):
        again = served.grctl(verb, wid)
        assert again.code == 1, again
        assert "already ended" in again.err and "Traceback" not in again.output
    result = served.grctl("result", cancelled, "--json")
    assert result.code == 1 and result.json() == {
        "workflow_id": cancelled,
        "run_id": result.json()["run_id"],
        "status": "cancelled",
        "reason": "not needed",
    }


def test_a_non_object_input_binds_only_to_a_handler_of_one_parameter(served, uid):
    wid = uid("order")
    # CliOrder's start handler takes order_id, qty, barrier: a bare string would be a guess.
    refused = served.grctl("start", "CliOrder", "--id", wid, "--input", '"abc"', "--json")
    assert refused.code == 1, refused
    assert "exactly one parameter" in refused.err and "order_id, qty, barrier" in refused.err
    assert '"order_id": ...' in refused.err and "Traceback" not in refused.output
    assert served.grctl("describe", wid).code == 1  # no run was created
    # Its approve event takes one parameter (qty): a bare number is that argument.
    served.start_direct("CliOrder", wid, {"order_id": "n"})
    served.wait_status(wid, "waiting")
    assert served.grctl("send", wid, "approve", "--payload", "3").code == 0
    r = served.grctl("result", wid, "--wait", "--json")
    assert r.code == 0 and r.json()["result"]["txn"] == "txn-n-3", r
