"""Crash anywhere: walk every fault point of the daemon and the worker over one rich workflow.

Each case arms one point (``GRCTL_CRASH_AT``, ``GRCTL_CRASH_AFTER``; see grctl/_faults.py) in
the daemon or the worker, runs ``CampaignOrder`` (steps, a task retried by its policy, a step
retried by its policy, three events, a child workflow whose end comes back as an event, and a
wait that times out), restarts whatever was killed, and checks against an uninterrupted run:

- the run reaches the same result;
- no task ran again once its outcome was recorded (the recorded token is the last execution in
  the side-effect ledger), and only a crash between a side effect and its record repeats one;
- every event was received and dispatched exactly once, in send order;
- the database passes ``PRAGMA integrity_check``.

The first hit of every point runs in the fast suite; later hits are marked slow.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from grctl._faults import DAEMON_POINTS, POINTS
from grctl.errors import (
    DaemonUnavailableError,
    WorkflowAlreadyRunningError,
    WorkflowTypeNotRegisteredError,
)
from tests.conftest import Daemon, _accepts, wait_until

pytestmark = pytest.mark.backends

FLOWS = "flows.campaign"
ITEMS = (1, 2, 3)
DEADLINE_S = 40.0

# Which passes through each point crash the process. Per run, the daemon commits 10-20 batches,
# writes ~9 dispatches and 5 task records and fires 2 live timers (the step retry and the
# wait timeout); the worker finishes 3 tasks and ~9 steps and writes ~14 step frames.
HITS: dict[str, tuple[int, ...]] = {
    "before_commit": (2, 4, 7, 10),
    "after_commit": (2, 4, 7, 10),
    "after_dispatch": (1, 3, 6),
    "after_record": (1, 3),
    "timer_fire": (1, 2),
    "daemon_mid_frame": (1, 3, 6),
    "task_done": (1, 2, 3),
    "task_recorded": (1, 3),
    "step_done": (1, 4, 7),
    "worker_mid_frame": (1, 4, 8, 12),
}
assert set(HITS) == set(POINTS), "every fault point is walked"
CASES = [
    pytest.param(point, n, marks=() if i == 0 else pytest.mark.slow, id=f"{point}-{n}")
    for point, hits in HITS.items()
    for i, n in enumerate(hits)
]


class Campaign:
    """Drives one CampaignOrder through crashes, restarting what the fault killed."""

    def __init__(
        self, daemon: Daemon, workers: Any, ledger: Path, fault: dict[str, str] | None = None
    ) -> None:
        self.daemon = daemon
        self.workers = workers
        self.ledger = ledger
        self.env = {"LEDGER": str(ledger)}
        # The first worker carries the fault when it is a worker's; its replacements do not.
        self.worker = workers(FLOWS, env={**self.env, **(fault or {})})
        self.deaths: list[tuple[str, int]] = []

    def supervise(self) -> None:
        """Restart (without the fault) a process that died; note how it died."""
        code = self.daemon.proc.poll() if self.daemon.proc else None
        if code is not None:
            self.deaths.append(("daemon", code))
            self.daemon.start()
        code = self.worker.proc.poll()
        if code is not None:
            self.deaths.append(("worker", code))
            self.worker = self.workers(FLOWS, env=self.env, wait=False)

    def call(self, fn: Any, timeout: float = 10) -> Any:
        """``fn(client)``, again after a restart when the daemon went away under it."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            self.supervise()
            try:
                return self.daemon.call(fn, timeout)
            except (TimeoutError, DaemonUnavailableError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                wait_until(
                    lambda: self.daemon.proc.poll() is not None or _accepts(self.daemon.socket),
                    10,
                    message="the daemon to answer or die",
                )

    def start(self, wid: str) -> None:
        async def go(c: Any) -> None:
            deadline = time.monotonic() + 10
            while True:
                try:
                    await c.start_workflow("CampaignOrder", wid, {"order_id": wid})
                    return
                except WorkflowAlreadyRunningError:
                    return  # the first try was committed before its reply was lost
                except WorkflowTypeNotRegisteredError:
                    # The daemon died before the worker's registration was durable (the run's
                    # first step went out early, ahead of that commit): the type is known again
                    # once the worker has registered anew.
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)

        self.call(go)

    def send_item(self, wid: str, n: int) -> None:
        async def go(c: Any) -> None:
            # A send whose reply was lost may have landed: look before sending it again.
            events = await c.get_workflow_handle(wid).history()
            if any(_item_received(ev) == n for ev in events):
                return
            await c.get_workflow_handle(wid).send("item", {"n": n})

        self.call(go)

    def result(self, wid: str) -> Any:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                return self.call(lambda c: c.get_workflow_handle(wid).result(timeout=2), 5)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def history(self, wid: str) -> list[Any]:
        return self.call(lambda c: c.get_workflow_handle(wid).history())


def _item_received(ev: Any) -> int | None:
    if ev.kind == "event_received" and ev.data.get("event_name") == "item":
        return (ev.data.get("payload") or {}).get("n")
    return None


def _ledger(path: Path) -> dict[tuple[str, str], list[str]]:
    """``(task, key) → tokens`` of the executions that completed, in the order they ran."""
    done: dict[tuple[str, str], list[str]] = defaultdict(list)
    for line in path.read_text().splitlines():
        name, key, token, _pid = line.split(" ")
        if not name.endswith("_try"):
            done[(name, key)].append(token)
    return done


def play(campaign: Campaign, wid: str) -> Any:
    campaign.start(wid)
    for n in ITEMS:
        campaign.send_item(wid, n)
    return campaign.result(wid)


def check(campaign: Campaign, wid: str, result: Any, crashes: int) -> int:
    """Assert the run's outcome and invariants; returns how many task executions repeated."""
    tokens = result.pop("tokens")
    assert result == {"items": list(ITEMS), "amount": sum(ITEMS), "parcel": f"P-{wid}"}

    # A recorded task never ran again: the recorded token is the last execution of that task.
    done = _ledger(campaign.ledger)
    assert set(done) == {("reserve", wid), ("pack", wid), ("charge", wid)}
    for name in ("reserve", "pack", "charge"):
        runs = done[(name, wid)]
        assert runs[-1] == tokens[name], f"{name} ran after its outcome was recorded: {runs}"
        # A crash may catch a task between its side effect and its record (in the step the
        # fault hit, or in another step in flight at that moment): then, and only then, it
        # runs once more.
        assert len(runs) <= 1 + crashes, f"{name} ran {runs} with {crashes} crash(es)"

    # Every event exactly once, in send order; the child's end once.
    events = campaign.history(wid)
    received = [n for ev in events if (n := _item_received(ev)) is not None]
    assert received == list(ITEMS)
    dispatched = [ev.data["event_name"] for ev in events if ev.kind == "event_dispatched"]
    assert sorted(dispatched) == ["item", "item", "item", "shipped"]
    inbox_order = [
        ev.data["inbox_seq"]
        for ev in events
        if ev.kind == "event_dispatched" and ev.data["event_name"] == "item"
    ]
    assert inbox_order == sorted(inbox_order)
    assert [ev.kind for ev in events].count("wait_timed_out") == 1
    assert campaign.daemon.integrity_ok()
    return sum(len(runs) - 1 for runs in done.values())


def test_uninterrupted_run_is_the_reference(daemon, workers, ledger):
    campaign = Campaign(daemon, workers, ledger)
    result = play(campaign, "order-ref")
    check(campaign, "order-ref", result, crashes=0)
    assert campaign.deaths == []


@pytest.mark.parametrize(("point", "after"), CASES)
def test_a_crash_at_any_point_loses_nothing_and_repeats_nothing(
    daemon, workers, ledger, point, after
):
    if daemon.backend == "postgres" and after != HITS[point][0]:
        # Where the crash lands is the engine's business, not the backend's: PostgreSQL walks
        # each point's first hit, SQLite all of them (the suite stays within its time).
        pytest.skip("later hits of a fault point are walked on SQLite")
    fault = {"GRCTL_CRASH_AT": point, "GRCTL_CRASH_AFTER": str(after)}
    if point in DAEMON_POINTS:
        daemon.stop()
        daemon.start(env=fault)
        campaign = Campaign(daemon, workers, ledger)
    else:
        campaign = Campaign(daemon, workers, ledger, fault)

    wid = f"order-{point}-{after}"
    result = play(campaign, wid)
    campaign.supervise()

    victim = "daemon" if point in DAEMON_POINTS else "worker"
    assert (victim, -signal.SIGKILL) in campaign.deaths, (
        f"{point} was reached fewer than {after} times: the fault never fired ({campaign.deaths})"
    )
    repeats = check(campaign, wid, result, crashes=len(campaign.deaths))
    print(
        f"\nfault walk: {point} #{after}: {victim} SIGKILLed, {len(campaign.deaths)} restart(s), "
        f"{repeats} task execution(s) repeated, result and invariants as uninterrupted"
    )
