"""PostgreSQL restarted under load: the daemons wait, reconnect, and lose and repeat nothing.

Runs of ``FpCounter`` (a task per step whose side effect is a ledger line) are in flight when
the PostgreSQL server is restarted for real (``pg_ctlcluster … restart``). While it is down the
daemon refuses new work with ``storage_unavailable`` and keeps its commits waiting; once it is
back, the same daemon process reconnects (the batch cut by the restart is found landed or
written again, never twice) and every run completes with each task run exactly once. Two
daemons share the database (a cluster, each with a worker): both come back as they were, each
still holding its partitions (nobody counts the other dead for the outage).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from grctl.client import Client
from tests.conftest import Daemon, wait_until
from tests.crash.support import entries, result, worker_on

# It restarts the PostgreSQL server every other test uses: it runs alone.
pytestmark = pytest.mark.serial

RUNS = 100
STEPS = 40  # 4,000 steps: the restart lands in the middle of them


def _cluster() -> tuple[str, str] | None:
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not versions or shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        return None
    return versions[-1], "main"


def _restart(cluster: tuple[str, str]) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "restart", "-m", "fast"],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_postgres_restart_under_load_loses_and_repeats_nothing(daemon, other, workers, ledger):
    cluster = _cluster()
    if cluster is None:
        pytest.skip("restarting PostgreSQL needs root and pg_ctlcluster on this machine")
    other.start()
    wait_until(
        lambda: [(bool(h), n) for h, n in _holders(daemon)] == [(True, 32), (True, 32)],
        30,
        message="balanced",
    )
    holders = _holders(daemon)
    pids = (daemon.pid, other.pid)
    ids = [f"pgr-{n}" for n in range(RUNS)]

    async def start_all(c: Client) -> None:
        await asyncio.gather(*(c.start_workflow("FpCounter", w, {"steps": STEPS}) for w in ids))

    workers("flows.fp_counter", env={"LEDGER": str(ledger)})
    worker_on(other, "flows.fp_counter", ledger)
    daemon.call(start_all)
    wait_until(
        lambda: sum(1 for op, _, _ in entries(ledger) if op == "tick") >= RUNS,
        30,
        message="the runs under way",
    )
    before = sum(1 for op, _, _ in entries(ledger) if op == "tick")
    _restart(cluster)  # returns once the server accepts connections again
    assert before < RUNS * STEPS // 2, "the workload was nearly over before the restart"

    try:
        for wid in ids:
            assert result(daemon, wid, timeout=60) == {"count": STEPS}, wid
    except Exception:
        print(daemon.log.read_text()[-4000:], (daemon.home / "daemon.out").read_text()[-4000:])
        raise
    # The same processes, reconnected, each with the partitions it had.
    assert (daemon.pid, other.pid) == pids
    assert daemon.proc.poll() is None and other.proc.poll() is None
    assert _holders(daemon) == holders
    ticks = Counter((v[0], int(v[1])) for op, _, v in entries(ledger) if op == "tick")
    assert ticks == Counter({(w, n): 1 for w in ids for n in range(1, STEPS + 1)}), ticks
    log = daemon.log.read_text()
    assert "writable again" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def _holders(d: Daemon) -> list[tuple[str, int]]:
    """(member, partitions held), the partitions between two holders counted as ``None``."""
    return sorted(
        d.rows("SELECT coalesce(holder, ''), count(*) FROM partitions GROUP BY 1"),
        key=lambda r: r[0],
    )
