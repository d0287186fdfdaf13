"""Chaos under load: 2,000 runs while workers are killed -9 every 200–500 ms and the daemon twice.

Three ``grctl worker`` processes serve ``flows.chaos`` (three steps and an event handler, one
recorded task each, a side-effect ledger). A chaos thread kills a random worker every 200–500 ms
and starts a new one, and kills the daemon -9 (then starts it again) when a quarter and when
three fifths of the side effects are done. The test plays a careful client through all of it:
a start or send that got no reply is checked before it is made again.

At the end every run completed with the result its input implies; each task has exactly one
``task_completed`` and never ran after it was recorded (a task runs again only when a kill came
between its side effect and its record); each event was received and handled once; the database
passes ``PRAGMA integrity_check``. A one-line summary of the figures goes to stdout.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from grctl.client import Client
from grctl.errors import DaemonUnavailableError, WorkflowAlreadyRunningError
from tests.conftest import GRCTL, TESTS, Daemon, read_ledger, wait_until
from tests.flows.chaos import STEPS, expected

pytestmark = [pytest.mark.backends, pytest.mark.serial]

RUNS = 2000
WORKERS = 3
CONCURRENCY = 20  # steps in flight per worker: bounds what one kill can make run twice
KILL_EVERY_S = (0.2, 0.5)
DAEMON_KILLS_AT = (0.25, 0.6)  # fractions of all side effects done
DEADLINE_S = 300.0  # the whole test, verification included; it takes about a minute
SUBMITTERS = 32  # client requests in flight at once
CLOCK_SLACK_S = 0.002  # the daemon stamps a record in whole ms after the worker wrote its line


def poke_k(n: int) -> int:
    return (n * 7) % 13


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def missed(self, doing: str, chaos: Chaos) -> AssertionError:
        return AssertionError(
            f"chaos test passed its {self.seconds:g}s deadline while {doing} "
            f"({len(read_ledger(chaos.ledger))} of {RUNS * len(STEPS)} side effects done, "
            f"{chaos.worker_kills} worker kills, {chaos.daemon_kills} daemon kills)"
        )

    def check(self, doing: str, chaos: Chaos) -> None:
        if chaos.error is not None:
            raise AssertionError(f"the chaos thread failed while {doing}") from chaos.error
        if time.monotonic() > self.at:
            raise self.missed(doing, chaos)


class Chaos(threading.Thread):
    """Kills a random worker every 200–500 ms (and starts another), and the daemon twice."""

    def __init__(self, daemon: Daemon, ledger: Path, seed: int) -> None:
        super().__init__(name="chaos", daemon=True)
        self.daemon = daemon
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.worker_kills = 0
        self.daemon_kills = 0
        self.error: BaseException | None = None

    def spawn(self, slot: int) -> subprocess.Popen[bytes]:
        cmd = [GRCTL, "worker", "flows.chaos", "--home", str(self.daemon.home)]
        with open(self.daemon.home / f"worker-{slot}.log", "ab") as out:
            return subprocess.Popen(
                [*cmd, "--concurrency", str(CONCURRENCY)],
                cwd=TESTS,
                env=self.daemon.env({"LEDGER": str(self.ledger)}),
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )

    def start_workers(self) -> None:
        self.procs = [self.spawn(slot) for slot in range(WORKERS)]

    def run(self) -> None:
        try:
            while not self.halt.wait(self.rng.uniform(*KILL_EVERY_S)):
                self.strike()
        except BaseException as exc:  # reported by the main thread at its next check
            self.error = exc

    def strike(self) -> None:
        for slot, proc in enumerate(self.procs):
            if proc.poll() is not None:  # started while the daemon was down: it gave up
                self.procs[slot] = self.spawn(slot)
        slot = self.rng.randrange(WORKERS)
        victim = self.procs[slot]
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
            self.worker_kills += 1
        self.procs[slot] = self.spawn(slot)
        if self.daemon_kills < len(DAEMON_KILLS_AT):
            done = self.ledger.read_bytes().count(b"\n") if self.ledger.exists() else 0
            if done >= DAEMON_KILLS_AT[self.daemon_kills] * RUNS * len(STEPS):
                self.daemon.kill9()
                self.daemon_kills += 1
                self.daemon.start()

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive():
            self.join(30)
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


class Link:
    """One client connection, made again whenever the daemon went away."""

    def __init__(self, daemon: Daemon, deadline: Deadline, chaos: Chaos) -> None:
        self.daemon = daemon
        self.deadline = deadline
        self.chaos = chaos
        self.client: Client | None = None
        self.lock = asyncio.Lock()

    async def get(self) -> Client:
        async with self.lock:
            while self.client is None:
                self.deadline.check("reconnecting to the daemon", self.chaos)
                try:
                    self.client = await Client.connect(self.daemon.socket)
                except DaemonUnavailableError:
                    await asyncio.sleep(0.05)  # polling for the restarted daemon's socket
            return self.client

    async def lost(self, client: Client) -> None:
        if self.client is client:
            self.client = None
            await client.close()

    async def call(self, fn: Callable[[Client], Awaitable[Any]]) -> Any:
        """Run ``fn`` until it gets an answer; only for requests that are safe to repeat."""
        while True:
            client = await self.get()
            try:
                return await fn(client)
            except DaemonUnavailableError:
                await self.lost(client)

    async def start(self, workflow_id: str, n: int) -> None:
        # Not acknowledged may still be committed: then the second start finds it running.
        try:
            await self.call(lambda c: c.start_workflow("Chaos", workflow_id, {"n": n}))
        except WorkflowAlreadyRunningError:
            pass

    async def send(self, workflow_id: str, k: int) -> None:
        unsure = False
        while True:
            client = await self.get()
            handle = client.get_workflow_handle(workflow_id)
            try:
                if unsure and any(ev.kind == "event_received" for ev in await handle.history()):
                    return  # the send that got no reply was committed
                await handle.send("poke", {"k": k})
                return
            except DaemonUnavailableError:
                unsure = True
                await self.lost(client)


async def drive(daemon: Daemon, chaos: Chaos, deadline: Deadline) -> dict[str, Any]:
    """Start every run and poke it, wait until all completed, then read back what they did."""
    link = Link(daemon, deadline, chaos)
    gate = asyncio.Semaphore(SUBMITTERS)

    async def submit(i: int) -> None:
        async with gate:
            deadline.check("starting runs", chaos)
            await link.start(f"chaos-{i}", i)
            await link.send(f"chaos-{i}", poke_k(i))

    await asyncio.gather(*(submit(i) for i in range(RUNS)))

    async def completed(c: Client) -> int:
        return (await c.daemon_status())["runs"].get("completed", 0)

    while await link.call(completed) < RUNS:
        deadline.check("waiting for the runs to complete", chaos)
        await asyncio.sleep(0.25)  # polling the daemon's run counts
    chaos.stop()

    async def read(i: int) -> tuple[Any, list[Any]]:
        async with gate:
            handle = (await link.get()).get_workflow_handle(f"chaos-{i}")
            return await handle.result(timeout=30), await handle.history()

    found = await asyncio.gather(*(read(i) for i in range(RUNS)))
    if link.client is not None:
        await link.client.close()
    return {f"chaos-{i}": got for i, got in enumerate(found)}


@pytest.mark.slow
@pytest.mark.timeout(DEADLINE_S + 60)
def test_runs_survive_random_worker_kills_and_two_daemon_kills(daemon, ledger):
    seed = int(os.environ.get("CHAOS_SEED", time.time_ns() % 1_000_000))
    began = time.monotonic()
    deadline = Deadline(DEADLINE_S)
    chaos = Chaos(daemon, ledger, seed)
    chaos.start_workers()
    try:
        wait_until(lambda: len(daemon.status()["workers"]) == WORKERS, 30, message="3 workers")
        chaos.start()
        try:
            runs = asyncio.run(asyncio.wait_for(drive(daemon, chaos, deadline), deadline.left()))
        except TimeoutError:  # stuck on a request the daemon never answered
            chaos.stop()
            daemon.kill9()  # hung: do not leave it behind
            raise deadline.missed("the runs were in progress", chaos) from None
    finally:
        chaos.stop()
    deadline.check("reading the runs back", chaos)
    duration = time.monotonic() - began

    ran: dict[tuple[str, str], list[float]] = defaultdict(list)
    for line in read_ledger(ledger):
        workflow_id, step_name, _pid, at = line.split(" ")
        ran[(workflow_id, step_name)].append(float(at))
    repeated = 0
    for i in range(RUNS):
        workflow_id = f"chaos-{i}"
        result, events = runs[workflow_id]
        assert result == expected(i, poke_k(i)), (workflow_id, result)
        kinds = [ev.kind for ev in events]
        assert kinds.count("event_received") == 1, (workflow_id, kinds)
        assert kinds.count("event_dispatched") == 1, (workflow_id, kinds)
        recorded = [ev for ev in events if ev.kind == "task_completed"]
        assert sorted(ev.step_name for ev in recorded) == sorted(STEPS), (workflow_id, kinds)
        for ev in recorded:
            times = ran[(workflow_id, ev.step_name)]
            assert times, f"{workflow_id} {ev.step_name} recorded but never done"
            # Done again after its record was durable would mean a replay that re-ran it.
            late = [t for t in times if t > ev.time.timestamp() + CLOCK_SLACK_S]
            assert not late, f"{workflow_id} {ev.step_name} ran after it was recorded: {late}"
            repeated += len(times) - 1
    assert set(ran) == {(f"chaos-{i}", step) for i in range(RUNS) for step in STEPS}
    assert chaos.daemon_kills == len(DAEMON_KILLS_AT) and chaos.worker_kills >= 5
    # Each kill can make a task run twice only for the steps in flight at that moment.
    bound = (chaos.worker_kills + chaos.daemon_kills * WORKERS) * CONCURRENCY
    assert repeated <= bound, (repeated, bound)
    assert daemon.integrity_ok()
    print(
        f"chaos: {RUNS} runs, {chaos.worker_kills} worker kills, {chaos.daemon_kills} daemon "
        f"kills, {repeated} side effects repeated, {duration:.0f}s (seed {seed})"
    )
