"""A cluster under chaos: three daemons on one PostgreSQL, three workers, 300 runs (issue 10.5).

Each daemon has its own home and one ``grctl worker flows.campaign`` beside it (which also
registers with the other members). 300 ``CampaignOrder`` runs go through tasks that fail once
and are retried, a child run whose end comes back as an event, three events from the client, a
step that fails once (retried after a durable back-off timer) and a wait whose timeout (another
timer) ends the run. Meanwhile a chaos thread kills a random daemon -9 every few seconds (and
starts it again a moment later) and a random worker every second or so.

The client plays a careful user: it talks to any live daemon, and when a request got no answer
(its daemon died) it checks before making it again. At the end: every run completed with the
result its inputs imply; each task's recorded outcome is the last execution of that task (none
ran after its record was durable); each event was received once; and every run's history is
whole.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from grctl.client import Client
from grctl.errors import (
    DaemonUnavailableError,
    ResultTimeoutError,
    StorageUnavailableError,
    WorkflowAlreadyRunningError,
)
from tests.conftest import GRCTL, TESTS, Daemon, read_ledger, wait_until
from tests.flows.campaign import ITEMS

RUNS = 300
DAEMONS = 3
LEASE_S = 1.5
ENV = {"GRCTL_LEASE_TIMEOUT": str(LEASE_S)}
DAEMON_KILL_EVERY_S = (1.0, 2.0)
DAEMON_DOWN_S = (0.2, 1.5)  # how long a killed daemon stays down
WORKER_KILL_EVERY_S = (0.3, 0.8)
DEADLINE_S = 240.0
SUBMITTERS = 24
PACE_S = 0.08  # between two runs' starts
# Transient answers: nothing was done, ask again (a partition between owners, a daemon away).
AGAIN = (DaemonUnavailableError, StorageUnavailableError)

pytestmark = [
    pytest.mark.parametrize("backend", ["postgres"], indirect=True),
    pytest.mark.slow,
    pytest.mark.serial,
    pytest.mark.timeout(DEADLINE_S + 90),
]


@pytest.fixture
def members(daemon: Daemon):
    """The fixture's daemon and two more on their own homes, the same database."""
    homes = [Path(tempfile.mkdtemp(prefix=f"grctl-m{i}-", dir="/tmp")) for i in (1, 2)]
    others = []
    for home in homes:
        os.chmod(home, 0o700)
        d = Daemon(home)
        d.db_url = daemon.db_url
        others.append(d)
    yield [daemon, *others]
    for d in others:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        shutil.rmtree(d.home, ignore_errors=True)


class Chaos(threading.Thread):
    def __init__(self, daemons: list[Daemon], ledger: Path, seed: int) -> None:
        super().__init__(name="cluster-chaos", daemon=True)
        self.daemons = daemons
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.daemon_kills = 0
        self.worker_kills = 0
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def spawn(self, i: int) -> subprocess.Popen[bytes]:
        d = self.daemons[i]
        with open(d.home / f"worker-{i}.log", "ab") as out:
            return subprocess.Popen(
                [GRCTL, "worker", "flows.campaign", "--home", str(d.home), "--concurrency", "20"],
                cwd=TESTS,
                env=d.env({"LEDGER": str(self.ledger)}),
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )

    def start_workers(self) -> None:
        self.workers = [self.spawn(i) for i in range(DAEMONS)]

    def run(self) -> None:
        try:
            next_daemon = time.monotonic() + self.rng.uniform(*DAEMON_KILL_EVERY_S)
            while not self.halt.wait(self.rng.uniform(*WORKER_KILL_EVERY_S)):
                self.kill_worker()
                if time.monotonic() >= next_daemon:
                    self.kill_daemon()
                    next_daemon = time.monotonic() + self.rng.uniform(*DAEMON_KILL_EVERY_S)
        except BaseException as exc:
            self.error = exc

    def kill_worker(self) -> None:
        i = self.rng.randrange(DAEMONS)
        with self.lock:
            victim = self.workers[i]
            if victim.poll() is None:
                victim.kill()
                victim.wait(10)
                self.worker_kills += 1
            for j, w in enumerate(self.workers):
                if w.poll() is not None or j == i:
                    self.workers[j] = self.spawn(j)

    def kill_daemon(self) -> None:
        d = self.daemons[self.rng.randrange(DAEMONS)]
        d.kill9()
        self.daemon_kills += 1
        self.halt.wait(self.rng.uniform(*DAEMON_DOWN_S))
        d.start(env=ENV)

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive():
            self.join(30)
        with self.lock:
            for w in self.workers:
                if w.poll() is None:
                    w.terminate()
            for w in self.workers:
                try:
                    w.wait(15)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait(10)


class Careful:
    """A client that uses any live member and never makes a request twice blindly."""

    def __init__(self, daemons: list[Daemon], chaos: Chaos, deadline: float) -> None:
        self.daemons = daemons
        self.chaos = chaos
        self.deadline = deadline
        self.clients: dict[int, Client] = {}
        self.rng = random.Random(1)

    def check(self, doing: str) -> None:
        if self.chaos.error is not None:
            raise AssertionError(f"the chaos thread failed while {doing}") from self.chaos.error
        if time.monotonic() > self.deadline:
            raise AssertionError(
                f"the cluster chaos test passed its {DEADLINE_S:g}s deadline while {doing} "
                f"({self.chaos.daemon_kills} daemon kills, {self.chaos.worker_kills} worker kills)"
            )

    async def client(self) -> tuple[int, Client]:
        while True:
            self.check("connecting")
            i = self.rng.randrange(DAEMONS)
            c = self.clients.get(i)
            if c is not None:
                return i, c
            try:
                c = await Client.connect(self.daemons[i].socket)
            except DaemonUnavailableError:
                await asyncio.sleep(0.05)  # that member is down: try another
                continue
            if i in self.clients:  # another request connected meanwhile: share its client
                await c.close()
                return i, self.clients[i]
            self.clients[i] = c
            return i, c

    async def lost(self, i: int, c: Client) -> None:
        if self.clients.get(i) is c:
            del self.clients[i]
            await c.close()

    async def ask(self, fn: Any, doing: str) -> Any:
        """A request that may be repeated (it only reads, or its effect is checked first)."""
        while True:
            self.check(doing)
            i, c = await self.client()
            try:
                return await fn(c)
            except AGAIN:
                await self.lost(i, c)
                await asyncio.sleep(0.05)

    async def start(self, wid: str) -> None:
        async def go(c: Client) -> None:
            try:
                if await _exists(c, wid):
                    return  # the start that got no answer was committed
                await c.start_workflow("CampaignOrder", wid, {"order_id": wid})
            except WorkflowAlreadyRunningError:
                pass

        await self.ask(go, f"starting {wid}")

    async def send(self, wid: str, n: int) -> None:
        async def go(c: Client) -> None:
            handle = c.get_workflow_handle(wid)
            if n in await _items_received(handle):
                return  # the send that got no answer was committed
            await handle.send("item", {"n": n})

        await self.ask(go, f"sending item {n} to {wid}")

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()


async def _exists(c: Client, wid: str) -> bool:
    from grctl.errors import WorkflowNotFoundError

    try:
        await c.get_workflow_handle(wid).describe()
    except WorkflowNotFoundError:
        return False
    return True


async def _items_received(handle: Any) -> list[int]:
    events = await handle.history()
    return [
        ev.data["payload"]["n"]
        for ev in events
        if ev.kind == "event_received" and ev.data.get("event_name") == "item"
    ]


async def drive(daemons: list[Daemon], chaos: Chaos, deadline: float) -> dict[str, Any]:
    careful = Careful(daemons, chaos, deadline)
    gate = asyncio.Semaphore(SUBMITTERS)
    ids = [f"cc-{i}" for i in range(RUNS)]

    async def one(n: int, wid: str) -> None:
        # Spread over PACE_S * RUNS seconds, so that the chaos strikes all through the load.
        await asyncio.sleep(n * PACE_S)
        async with gate:
            await careful.start(wid)
            for n in ITEMS:
                await careful.send(wid, n)

    await asyncio.gather(*(one(n, w) for n, w in enumerate(ids)))

    async def read(wid: str) -> tuple[Any, list[Any]]:
        async with gate:

            async def go(c: Client) -> tuple[Any, list[Any]] | None:
                handle = c.get_workflow_handle(wid)
                try:
                    return await handle.result(timeout=5), await handle.history()
                except ResultTimeoutError:
                    return None  # not yet: ask again (maybe of another member)

            while True:
                got = await careful.ask(go, f"waiting for {wid}")
                if got is not None:
                    return got

    found = await asyncio.gather(*(read(w) for w in ids))
    await careful.close()
    return dict(zip(ids, found, strict=True))


def test_three_members_under_chaos_complete_every_run_once(members, ledger):
    seed = int(os.environ.get("CHAOS_SEED", time.time_ns() % 1_000_000))
    for d in members:
        if d.proc is not None:
            d.stop()
        d.start(env=ENV)
    wait_until(
        lambda: len(members[0].status()["cluster"]["members"]) == DAEMONS,
        20,
        message="three members",
    )
    chaos = Chaos(members, ledger, seed)
    chaos.start_workers()
    began = time.monotonic()
    try:
        wait_until(
            lambda: all(d.status()["workers"] for d in members), 30, message="workers on all"
        )
        chaos.start()
        runs = asyncio.run(drive(members, chaos, began + DEADLINE_S))
    finally:
        chaos.stop()
    duration = time.monotonic() - began

    # The ledger: NAME KEY TOKEN PID, one line per execution of a task (and failed tries).
    lines = [line.split(" ") for line in read_ledger(ledger)]
    position: dict[str, int] = {}
    last: dict[tuple[str, str], int] = {}
    for at, (name, key, token, _pid) in enumerate(lines):
        if token != "-":
            position[token] = at
            last[(name, key)] = at
    repeated = sum(n - 1 for n in Counter((n, k) for n, k, t, _ in lines if t != "-").values())
    for wid, (result, events) in runs.items():
        assert sorted(result["items"]) == list(ITEMS), (wid, result)
        assert result["amount"] == sum(ITEMS) and result["parcel"] == f"P-{wid}", (wid, result)
        for name, token in result["tokens"].items():
            # The outcome recorded is the last execution: none ran after it was durable.
            assert token in position, (wid, name, token)
            assert last[(name, wid)] == position[token], (wid, name, "ran after its record")
        kinds = Counter(ev.kind for ev in events)
        received = [ev.data.get("event_name") for ev in events if ev.kind == "event_received"]
        assert sorted(received) == ["item", "item", "item", "shipped"], (wid, received)
        assert kinds["workflow_completed"] == 1, (wid, kinds)
        seqs = [ev.seq for ev in events]
        assert seqs == list(range(1, len(seqs) + 1)), wid
    assert chaos.daemon_kills >= 5 and chaos.worker_kills >= 10, (
        chaos.daemon_kills,
        chaos.worker_kills,
    )
    print(
        f"cluster chaos: {RUNS} runs on {DAEMONS} daemons, {chaos.daemon_kills} daemon kills, "
        f"{chaos.worker_kills} worker kills, {repeated} task executions repeated, "
        f"{duration:.0f}s (seed {seed})"
    )
    for d in members:
        d.allow_tracebacks = True  # killed -9 on purpose, maybe mid-write of its log
