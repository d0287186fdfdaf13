"""SPEC 8 "Resources" with the real daemon and real worker processes (tests/flows/res_resources.py).

A ``cache=True`` resource is made once per worker process and shared by steps, tasks, queries
and runs, then torn down when the worker stops; a ``cache=False`` one is made (and torn down)
per step execution and per task call; a factory that raises fails the step as an exception
would, under its retry policy; ``Worker(resources=...)`` swaps a factory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import TESTS, Daemon, read_ledger, wait_until
from tests.daemon.test_guarantees import failure, on, result, start

FLOWS = "flows.res_resources"


def ledger(daemon: Daemon) -> list[str]:
    return read_ledger(daemon.home / "res-ledger.txt")


def made(daemon: Daemon, kind: str) -> list[str]:
    return [line.split()[2] for line in ledger(daemon) if line.startswith(f"made {kind} ")]


def closed(daemon: Daemon, kind: str) -> list[str]:
    return [line.split()[2] for line in ledger(daemon) if line.startswith(f"closed {kind} ")]


def test_cached_resources_are_shared_and_fresh_ones_made_per_step_and_task(daemon, workers):
    w = workers(FLOWS)
    start(daemon, "ResUse", "res-1", {"label": "one"})
    first = result(daemon, "res-1")
    start(daemon, "ResUse", "res-2", "two")  # one positional value: the one non-Resource param
    second = result(daemon, "res-2")

    shared = {r[part]["shared"] for r in (first, second) for part in ("start", "second", "task")}
    assert len(shared) == 1, "one shared instance across steps, a task and runs"
    assert made(daemon, "shared") == list(shared)
    fresh = [r[part]["fresh"] for r in (first, second) for part in ("start", "second", "task")]
    assert len(set(fresh)) == 6, "a fresh instance per step execution and per task call"
    assert sorted(made(daemon, "fresh")) == sorted(fresh)
    assert sorted(closed(daemon, "fresh")) == sorted(fresh), "each torn down with its step"
    assert first["start"]["label"] == "one" and second["start"]["label"] == "two"
    assert first["second"]["kind"] == "shared"

    assert on(daemon, "res-1", "query", "res_kind") == "shared", "queries get resources too"
    assert made(daemon, "shared") == list(shared)

    assert closed(daemon, "shared") == []
    assert w.stop() == 0
    assert closed(daemon, "shared") == list(shared), "torn down when the worker stops"


def test_a_factory_that_raises_fails_the_step_under_its_retry_policy(daemon, workers):
    workers(FLOWS)
    start(daemon, "ResBroken", "res-broken")
    details = failure(daemon, "res-broken")
    assert "make_broken" in details["message"], details
    assert "ConnectionError: database is down" in details["message"], details
    assert ledger(daemon).count("broken") == 2, "max_attempts=2: the factory ran per attempt"


def test_worker_resources_override_swaps_a_factory(daemon, workers):
    log = daemon.home / "override-worker.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", FLOWS, str(daemon.home)],
            cwd=TESTS,
            env=daemon.env(),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until(
            lambda: proc.poll() is not None or daemon.status()["workers"],
            15,
            message="override worker registration",
        )
        assert proc.poll() is None, Path(log).read_text()
        start(daemon, "ResUse", "res-fake", {"label": "fake"})
        got = result(daemon, "res-fake")
        assert got["second"]["kind"] == "fake"
        assert got["start"]["shared"] == got["second"]["shared"] == got["task"]["shared"]
        assert made(daemon, "shared") == [], "the real factory never ran"
        assert len(made(daemon, "fresh")) == 3, "what was not swapped is the real one"
    finally:
        proc.terminate()
        proc.wait(10)
