"""SPEC 8 "Progress streaming" against the real daemon, real workers and both backends.

``ctx.emit`` (and ``grctl.worker.emit`` in a task) reaches ``handle.stream()`` and
``grctl history --follow`` in order, commits nothing per emit, keeps the last value of each
name in the history, and never waits for a follower: one that reads nothing while a step emits
10,000 events holds a bounded buffer and the run ends. The flows are tests/flows/ps_progress.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from typing import Any

import pytest

from grctl import protocol as p
from grctl.client import Client
from grctl.errors import WorkflowFailedError
from grctl.models import HistoryEvent, ProgressEvent
from grctl_daemon.runtime.progress import MAX_PENDING
from tests.cli.conftest import cli_env, run_grctl
from tests.conftest import GRCTL, TESTS
from tests.daemon.test_guarantees import history, release, result, wait_reached

pytestmark = pytest.mark.backends

FLOWS = "flows.ps_progress"


async def until(predicate: Any, message: str, timeout: float = 15.0) -> Any:
    """Poll an async predicate until it is truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.02)


async def followers(client: Client, at_least: int) -> bool:
    return (await client.daemon_status())["memory"]["followers"] >= at_least


def progress_rows(events: list[HistoryEvent]) -> list[tuple[str | None, str, Any]]:
    return [
        (ev.step_name, ev.data["name"], ev.data["value"]) for ev in events if ev.kind == "progress"
    ]


def test_emits_from_a_step_and_a_task_reach_stream_and_history_follow(daemon, workers, ledger):
    workers(FLOWS)
    daemon.call(lambda c: c.start_workflow("PsEmit", "ps-emit", {"barrier": "ps-gate"}))
    wait_reached(ledger, "ps-gate")
    follow, table = (
        subprocess.Popen(
            [GRCTL, "history", "ps-emit", "--follow", *json_],
            cwd=TESTS,
            env=cli_env(daemon.home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for json_ in (["--json"], [])
    )

    async def go(client: Client) -> list[ProgressEvent]:
        handle = client.get_workflow_handle("ps-emit")
        got: list[ProgressEvent] = []

        async def read() -> None:
            async for ev in handle.stream():
                got.append(ev)

        reader = asyncio.ensure_future(read())
        await until(lambda: followers(client, 3), "the stream and the two CLIs following")
        release(daemon, "ps-gate")
        await asyncio.wait_for(reader, 20)  # the stream ends with the run
        return got

    got = daemon.call(go)
    out, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    expected = [
        ("emit_start", "stage", "fetch"),
        ("emit_start", "items", 1),
        ("emit_start", "items", 2),
        ("emit_start", "items", 3),
        ("emit_start", "stage", "done"),
        ("emit_last", "stage", "last step"),
    ]
    assert [(ev.step_name, ev.name, ev.data) for ev in got] == expected
    assert all(isinstance(ev, ProgressEvent) and ev.dropped == 0 for ev in got)
    assert all(ev.workflow_id == "ps-emit" and ev.run_id for ev in got)
    lines = [json.loads(line) for line in out.splitlines()]
    live = [row for row in lines if row["kind"] == "progress" and row.get("seq") is None]
    assert [(r["step_name"], r["name"], r["data"]) for r in live] == expected
    # Each live line comes before the commit of the step that emitted it.
    kinds = [(row["kind"], row.get("step_name"), row.get("seq") is None) for row in lines]
    first_done = kinds.index(("step_completed", "emit_start", False))
    assert all(n < first_done for n, row in enumerate(lines) if row in live[:5])
    assert lines[-1]["kind"] == "workflow_completed"
    shown, err = table.communicate(timeout=30)
    assert table.returncode == 0, err  # the table prints live progress rows too
    assert "items=3" in shown and "stage=last step" in shown, shown
    assert result(daemon, "ps-emit") == "ok"


def test_a_follower_coming_mid_step_begins_with_the_latest_of_each_name(daemon, workers, ledger):
    workers(FLOWS)
    daemon.call(lambda c: c.start_workflow("PsLate", "ps-late", {"barrier": "ps-late-gate"}))
    wait_reached(ledger, "ps-late-gate")

    async def go(client: Client) -> list[ProgressEvent]:
        got: list[ProgressEvent] = []

        async def read() -> None:
            async for ev in client.get_workflow_handle("ps-late").stream():
                got.append(ev)

        reader = asyncio.ensure_future(read())
        await until(lambda: followers(client, 1), "the stream following")
        release(daemon, "ps-late-gate")
        await asyncio.wait_for(reader, 20)
        return got

    got = daemon.call(go)
    # Held for it: the latest of each name, in the order they were last emitted; then live.
    assert [(ev.name, ev.data) for ev in got] == [("items", 2), ("stage", "b"), ("stage", "c")]
    assert daemon.status()["memory"]["progress"]["steps_held"] == 0, "released with the outcome"


def test_the_last_of_each_name_is_kept_in_the_history(daemon, workers, ledger):
    workers(FLOWS)
    daemon.call(lambda c: c.start_workflow("PsEmit", "ps-kept", {"barrier": "ps-kept-gate"}))
    release(daemon, "ps-kept-gate")
    assert result(daemon, "ps-kept") == "ok"
    events = history(daemon, "ps-kept")
    assert progress_rows(events) == [
        ("emit_start", "stage", "done"),
        ("emit_start", "items", 3),
        ("emit_last", "stage", "last step"),
    ]
    kinds = [(ev.kind, ev.step_name) for ev in events]
    # Kept just before the outcome of the step that emitted them, committed with it.
    at = kinds.index(("step_completed", "emit_start"))
    assert kinds[at - 2 : at] == [("progress", "emit_start"), ("progress", "emit_start")]
    assert [ev.seq for ev in events] == list(range(1, len(events) + 1))
    # Without --follow the CLI shows the kept rows (and no live ones).
    shown = run_grctl("history", "ps-kept", "--json", home=daemon.home)
    assert shown.code == 0, shown.err
    rows = shown.json()
    assert [r["data"] for r in rows if r["kind"] == "progress"] == [
        {"name": "stage", "value": "done"},
        {"name": "items", "value": 3},
        {"name": "stage", "value": "last step"},
    ]


def test_a_follower_that_never_reads_does_not_hold_the_step(daemon, workers, ledger):
    """10,000 emits, a follower that reads nothing: the run ends, its buffer stays bounded."""
    workers(FLOWS)
    count = 10_000
    daemon.call(
        lambda c: c.start_workflow(
            "PsFlood", "ps-flood", {"barrier": "ps-flood-gate", "count": count}
        )
    )
    wait_reached(ledger, "ps-flood-gate")
    units_before = daemon.status()["commits"]["units"]

    async def go(client: Client) -> tuple[dict[str, Any], list[ProgressEvent], Any]:
        # A raw connection that asks for progress, then never reads another byte.
        reader, writer = await asyncio.open_unix_connection(str(daemon.socket))
        writer.write(p.encode(p.Hello(p.PROTOCOL_VERSION, "client", "sleeper")))
        assert isinstance(await p.read_message(reader), p.Welcome)
        writer.write(p.encode(p.GetHistory(1, "ps-flood", follow=True, progress=True)))
        await writer.drain()
        handle = client.get_workflow_handle("ps-flood")
        got: list[ProgressEvent] = []

        async def read() -> None:
            async for ev in handle.stream():
                got.append(ev)

        reader_task = asyncio.ensure_future(read())
        await until(lambda: followers(client, 2), "both followers")
        release(daemon, "ps-flood-gate")
        value = await handle.result(timeout=60)
        await asyncio.wait_for(reader_task, 20)
        # The sleeper is still connected, stuck on a full socket: its buffer is what it holds.
        status = (await client.daemon_status())["memory"]["progress"]
        writer.close()
        return status, got, value

    status, got, value = daemon.call(go, timeout=90)
    assert value == count, "the step ran to its end while a follower read nothing"
    assert status["followers"] == 1, status
    assert 0 < status["most_pending"] <= MAX_PENDING, status
    assert status["shed"] > 0, "the sleeper lost older events instead of holding them all"
    # The reading follower got an increasing sequence that ends with the very last event.
    ns = [ev.data["n"] for ev in got if ev.name == "n"]
    assert ns == sorted(ns) and ns[-1] == count - 1
    assert sum(ev.dropped for ev in got) + len(got) <= count + 10
    # Nothing was committed per emit: the run's history holds the kept names, one row each.
    events = history(daemon, "ps-flood")
    assert sorted(name for _, name, _ in progress_rows(events)) == sorted(
        ["n", *(f"mark-{k}" for k in range(10))]
    )
    assert len(events) < 20, [ev.kind for ev in events]
    assert daemon.status()["commits"]["units"] - units_before < 20


def test_bad_names_and_data_are_refused_with_one_clear_error(daemon, workers):
    workers(FLOWS)
    for wid, name in (("ps-bad-empty", ""), ("ps-bad-long", "x" * 101)):
        daemon.call(lambda c, wid=wid, name=name: c.start_workflow("PsBad", wid, {"name": name}))
        with pytest.raises(WorkflowFailedError) as caught:
            result(daemon, wid)
        error = caught.value.details
        assert error["type"] == "StepFailed"
        assert error["details"]["cause"] == "InvalidProgressError"
        assert "non-empty string of at most 100 characters" in error["message"]
        kinds = [ev.kind for ev in history(daemon, wid)]
        assert kinds.count("step_failed") == 1, "not retried: a retry cannot mend it"


def test_a_stream_of_an_ended_run_ends_at_once(daemon, workers):
    workers(FLOWS)
    daemon.call(lambda c: c.start_workflow("PsQuiet", "ps-quiet"))
    assert result(daemon, "ps-quiet") == "quiet"

    async def go(client: Client) -> list[Any]:
        return [ev async for ev in client.get_workflow_handle("ps-quiet").stream()]

    assert daemon.call(go) == []
    assert "progress" not in [ev.kind for ev in history(daemon, "ps-quiet")]
