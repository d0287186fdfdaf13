"""``grctl schedule …``: JSON output, exit codes, one-line errors."""

from __future__ import annotations

import re

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_schedule_commands_print_json_and_exit_zero(served, uid):
    name = uid("cron")
    made = served.grctl(
        "schedule", "create", name, "--type", "CliQuick", "--cron", "0 3 * * *",
        "--input", '{"n": 21}', "--timezone", "Europe/Paris", "--json",
    )  # fmt: skip
    assert made.code == 0, made
    doc = made.json()
    assert doc["name"] == name and doc["cron"] == "0 3 * * *" and doc["overlap"] == "skip"
    assert doc["timezone"] == "Europe/Paris" and doc["input"] == {"n": 21}
    assert ISO_UTC.match(doc["next_fire_at"]), doc

    listed = served.grctl("schedule", "list", "--json")
    assert listed.code == 0, listed
    (row,) = [s for s in listed.json() if s["name"] == name]
    assert ISO_UTC.match(row["next_fire_at"]) and row["paused"] is False
    table = served.grctl("schedule", "list")
    assert table.code == 0 and name in table.out, table

    fired = served.grctl("schedule", "trigger", name, "--json")
    assert fired.code == 0, fired
    out = fired.json()
    assert out["skipped"] is False and out["workflow_id"].startswith(f"{name}-")
    assert re.match(rf"^{name}-\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", out["workflow_id"])
    assert served.result_direct(out["workflow_id"]) == {"doubled": 42}

    described = served.grctl("schedule", "describe", name, "--json")
    assert described.code == 0, described
    info = described.json()
    assert info["last_workflow_id"] == out["workflow_id"] and info["last_status"] == "completed"

    paused = served.grctl("schedule", "pause", name, "--json")
    assert paused.code == 0 and paused.json()["paused"] is True, paused
    assert paused.json()["next_fire_at"] is None
    resumed = served.grctl("schedule", "resume", name, "--json")
    assert resumed.code == 0 and resumed.json()["paused"] is False, resumed
    deleted = served.grctl("schedule", "delete", name, "--json")
    assert deleted.code == 0 and deleted.json() == {"name": name, "deleted": True}, deleted
    gone = served.grctl("schedule", "describe", name)
    assert gone.code == 1 and gone.out == "", gone
    assert f"schedule {name!r} not found" in gone.err and "Traceback" not in gone.err


def test_bad_schedules_exit_one_with_one_line_and_bad_usage_two(served, uid):
    bad_cron = served.grctl("schedule", "create", uid("b"), "--type", "CliQuick", "--cron", "x")
    assert bad_cron.code == 1, bad_cron
    assert "invalid cron expression 'x'" in bad_cron.err
    assert len(bad_cron.err.strip().splitlines()) == 1, bad_cron
    bad_zone = served.grctl(
        "schedule", "create", uid("b"), "--type", "CliQuick", "--cron", "0 3 * * *",
        "--timezone", "Nowhere/Atlantis",
    )  # fmt: skip
    assert bad_zone.code == 1 and "unknown time zone 'Nowhere/Atlantis'" in bad_zone.err, bad_zone
    unknown = served.grctl("schedule", "create", uid("b"), "--type", "Nope", "--cron", "0 3 * * *")
    assert unknown.code == 1 and "'Nope' is not registered" in unknown.err, unknown
    overlap = served.grctl(
        "schedule", "create", uid("b"), "--type", "CliQuick", "--cron", "0 3 * * *",
        "--overlap", "queue",
    )  # fmt: skip
    assert overlap.code == 2, overlap
