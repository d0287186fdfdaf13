"""Expected failures: one clear line, the right exit code (1 refused, 2 bad usage), no traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.cli.conftest import run_grctl_many

EVERY_COMMAND = [
    ("start", "CliQuick", "--id", "x"),
    ("send", "x", "approve"),
    ("history", "x"),
    ("history", "x", "--follow"),
    ("inbox", "x"),
    ("list",),
    ("describe", "x"),
    ("result", "x", "--wait"),
    ("query", "x", "status"),
    ("cancel", "x"),
    ("terminate", "x"),
    ("worker", "flows.cli_orders"),
    ("daemon", "status"),
]


def test_every_command_says_in_one_line_that_the_daemon_is_not_running(home):
    for r in run_grctl_many(EVERY_COMMAND, home):
        assert r.code == 1, r
        lines = [line for line in r.err.splitlines() if line.strip()]
        assert len(lines) == 1, r
        assert "not running" in lines[0] and "grctl daemon start" in lines[0], r
        assert "Traceback" not in r.output and r.out == "", r


def test_bad_json_is_bad_usage_and_says_where_it_broke(served, uid, tmp_path):
    r = served.grctl("start", "CliQuick", "--id", uid("bad"), "--input", '{"n": 1,, }')
    assert r.code == 2, r
    assert "--input" in r.err and "line 1 column 9" in r.err and "Traceback" not in r.output

    r = served.grctl("send", "whatever", "approve", "--payload", "{'qty': 2}")
    assert r.code == 2, r
    assert "--payload" in r.err and "column 2" in r.err and "Traceback" not in r.output

    # A short path: the error panel is 80 columns, and a long tmp_path (pytest-xdist's) wraps.
    with tempfile.TemporaryDirectory(prefix="g", dir="/tmp") as short:
        bad_file = Path(short) / "in.json"
        bad_file.write_text('{\n  "n": 1\n  "m": 2\n}')
        r = served.grctl("start", "CliQuick", "--id", uid("bad"), "--input-file", str(bad_file))
    assert r.code == 2, r
    assert str(bad_file) in r.err and "line 3 column 3" in r.err and "Traceback" not in r.output

    r = served.grctl("start", "CliQuick", "--id", uid("bad"), "--input-file", str(tmp_path / "no"))
    assert r.code == 2 and "cannot read" in r.err and "Traceback" not in r.output


BAD_INPUT_OPTIONS = [
    ("-i", "n"),  # no '='
    ("-i", "=2"),  # no key
    ("-i", "n=[1,"),  # opens like JSON, is not
    ("--input", "[1]", "-i", "n=2"),  # -i adds keys to an object only
    ("--input", "{}", "--input-file", "x.json"),  # one or the other
]


def test_bad_input_options_are_bad_usage(served, uid):
    cases = [("start", "CliQuick", "--id", uid("bad"), *args) for args in BAD_INPUT_OPTIONS]
    for r in run_grctl_many(cases, served.home):
        assert r.code == 2, r
        assert "Traceback" not in r.output and r.out == "", r


def test_refusals_exit_1_with_one_line(served, uid):
    unknown_type = served.grctl("start", "NoSuchFlow", "--id", uid("x"))
    assert (
        unknown_type.code == 1
        and "NoSuchFlow" in unknown_type.err
        and "not registered" in unknown_type.err
    )

    wid = uid("refuse")
    served.start_direct("CliOrder", wid, {"order_id": "r"})
    served.wait_status(wid, "waiting")
    again = served.grctl("start", "CliOrder", "--id", wid, "-i", "order_id=r")
    assert again.code == 1 and wid in again.err

    unknown_event = served.grctl("send", wid, "no_such_event")
    assert unknown_event.code == 1 and "no_such_event" in unknown_event.err

    bad_payload = served.grctl("send", wid, "approve", "--payload", '{"colour": "red"}')
    assert bad_payload.code == 1 and "colour" in bad_payload.err

    served.daemon.call(lambda c: c.get_workflow_handle(wid).terminate())
    ended = served.grctl("send", wid, "approve")
    assert ended.code == 1 and "terminated" in ended.err

    missing = served.grctl("describe", uid("nobody"))
    assert missing.code == 1 and "not found" in missing.err

    for r in (unknown_type, again, unknown_event, bad_payload, ended, missing):
        assert len(r.err.strip().splitlines()) == 1, r
        assert "Traceback" not in r.output and r.out == "", r


def test_bad_usage_from_typer_exits_2(served):
    cases = [("start", "CliQuick"), ("list", "--status", "sleeping"), ("nonsense",)]
    for r in run_grctl_many(cases, served.home):
        assert r.code == 2, r
        assert "Traceback" not in r.output
