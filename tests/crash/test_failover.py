"""Two daemons on one PostgreSQL database: one owns it under a lease, the other stands by.

- The owner is killed (``kill -9``): the standby takes over once the lease runs out and every
  run resumes and completes, each task's side effect recorded once.
- The owner is stopped (SIGSTOP) past its lease while its worker keeps finishing steps: the
  standby takes over; when the old owner resumes it commits nothing (its epoch is fenced) and
  stops by itself, and the database shows only the new owner's history.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from grctl.client import Client
from tests.conftest import GRCTL, TESTS, Daemon, _accepts, wait_until
from tests.crash.support import entries, result

LEASE_S = 2.0
RUNS = 30
STEPS = 20
ENV = {"GRCTL_LEASE_TIMEOUT": str(LEASE_S)}

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


@pytest.fixture
def standby(daemon: Daemon):
    """A second daemon on its own home and the same database; not yet started."""
    home = Path(tempfile.mkdtemp(prefix="grctl-b-", dir="/tmp"))
    os.chmod(home, 0o700)
    other = Daemon(home)
    other.db_url = daemon.db_url
    other.started = []  # worker processes of its home
    yield other
    for proc in other.started:
        proc.terminate()
        proc.wait(15)
    if other.proc is not None and other.proc.poll() is None:
        assert other.stop() == 0
    text = other.log.read_text() if other.log.exists() else ""
    shutil.rmtree(home, ignore_errors=True)
    assert "Traceback" not in text, text[-3000:]


def _start_runs(daemon: Daemon, prefix: str) -> list[str]:
    ids = [f"{prefix}-{n}" for n in range(RUNS)]

    async def go(c: Client) -> None:
        await asyncio.gather(*(c.start_workflow("FpCounter", w, {"steps": STEPS}) for w in ids))

    daemon.call(go)
    return ids


def _ticks(ledger: Path) -> int:
    return sum(1 for op, _, _ in entries(ledger) if op == "tick")


def _check_durable(daemon: Daemon, ids: list[str]) -> None:
    """Every run completed once: contiguous history, one step_completed per step, the store."""
    for wid in ids:
        ((run_id, history_seq),) = daemon.rows(
            "SELECT run_id, history_seq FROM runs WHERE workflow_id = ?", (wid,)
        )
        rows = daemon.rows("SELECT seq, kind FROM history WHERE run_id = ? ORDER BY seq", (run_id,))
        assert [seq for seq, _ in rows] == list(range(1, history_seq + 1)), wid
        kinds = Counter(kind for _, kind in rows)
        assert kinds["step_completed"] == STEPS and kinds["workflow_completed"] == 1, (wid, kinds)


def _owner(daemon: Daemon) -> tuple[int, str]:
    ((epoch, holder),) = daemon.rows("SELECT epoch, holder FROM owner")
    return epoch, holder


def test_a_standby_takes_over_when_the_owner_is_killed(daemon, standby, workers, ledger):
    daemon.stop()
    daemon.start(env=ENV)
    standby.start(env=ENV, wait=False)
    wait_until(lambda: standby.log.exists() and "standing by" in standby.log.read_text(), 15)
    assert not _accepts(standby.socket)  # a standby serves nothing until it owns the database
    workers("flows.fp_counter", env={"LEDGER": str(ledger)})
    ids = _start_runs(daemon, "kill")
    wait_until(lambda: _ticks(ledger) >= RUNS, 30, message="the runs under way")
    epoch_a, _ = _owner(daemon)

    daemon.kill9()
    killed = time.monotonic()
    wait_until(lambda: _accepts(standby.socket), 4 * LEASE_S + 10, message="the takeover")
    assert time.monotonic() - killed < LEASE_S + 5  # within the lease (and a renewal period)
    epoch_b, holder_b = _owner(standby)
    assert epoch_b == epoch_a + 1 and holder_b.split(":")[1] == str(standby.pid)

    _worker_on(standby, ledger)  # a worker of the new owner's home
    for wid in ids:
        assert result(standby, wid, timeout=60) == {"count": STEPS}, wid
    _check_durable(standby, ids)
    ticks = Counter((v[0], int(v[1])) for op, _, v in entries(ledger) if op == "tick")
    # A tick whose record was durable never ran again; one in flight at the kill may have.
    assert set(ticks) == {(w, n) for w in ids for n in range(1, STEPS + 1)}
    assert sum(ticks.values()) <= RUNS * STEPS + RUNS  # at most one extra per run
    daemon.proc = None  # killed on purpose: the fixture must not stop it


def test_an_owner_stopped_past_its_lease_is_fenced_when_it_resumes(
    daemon, standby, workers, ledger
):
    daemon.stop()
    daemon.start(env=ENV)
    standby.start(env=ENV, wait=False)
    wait_until(lambda: standby.log.exists() and "standing by" in standby.log.read_text(), 15)
    workers("flows.fp_counter", env={"LEDGER": str(ledger)})
    ids = _start_runs(daemon, "stop")
    wait_until(lambda: _ticks(ledger) >= RUNS, 30, message="the runs under way")

    os.kill(daemon.pid, signal.SIGSTOP)  # its worker goes on finishing the steps it holds
    try:
        wait_until(lambda: _accepts(standby.socket), 4 * LEASE_S + 10, message="the takeover")
        _worker_on(standby, ledger)
        for wid in ids:
            assert result(standby, wid, timeout=60) == {"count": STEPS}, wid
        epoch_b, holder_b = _owner(standby)
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    # Resumed, the old owner reads what piled up, tries to commit, is fenced and stops.
    assert daemon.wait_dead(30) == 1
    text = daemon.log.read_text()
    assert "another daemon" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    # Nothing it decided after the takeover landed: the owner row is the new owner's, and
    # every run's durable history is whole and counted once.
    assert _owner(standby) == (epoch_b, holder_b)
    _check_durable(standby, ids)
    daemon.allow_tracebacks = True  # it exited by itself; nothing left to stop


def _worker_on(d: Daemon, ledger: Path) -> None:
    out = open(d.home / "worker.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [GRCTL, "worker", "flows.fp_counter", "--home", str(d.home)],
        cwd=TESTS,
        env=d.env({"LEDGER": str(ledger)}),
        stdout=out,
        stderr=out,
        stdin=subprocess.DEVNULL,
    )
    out.close()
    d.started.append(proc)
    wait_until(lambda: proc.poll() is not None or d.status()["workers"], 15)
    assert proc.poll() is None
