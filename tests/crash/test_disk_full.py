"""The database's disk fills up under load: the daemon says so, takes no new work, loses nothing
and carries on by itself once space returns.

The database lives on a small tmpfs of its own (the socket stays in the home) and a ballast file
fills it while runs are ticking. Where no tmpfs can be mounted (not root), the daemon's injected
fault stands in: while ``GRCTL_FAULT_DISK_FULL`` names an existing file, every commit fails with
SQLITE_FULL. The ``injected`` case always runs that way, so both paths stay tested.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grctl.errors import StorageUnavailableError, WorkflowNotFoundError
from tests.conftest import GRCTL, Daemon, read_ledger, wait_until
from tests.conftest import _accepts as accepts
from tests.crash.support import history, of_kind, result
from tests.flows.df_ticker import STEP_TIMEOUT

FLOWS = "flows.df_ticker"
TMPFS_SIZE = "16m"  # room for the WAL to reach its 4 MiB auto-checkpoint before the ballast
DONE, LIVE = 3, 6


class SmallDisk:
    """Where the database lives and how to make that place full and empty again."""

    def __init__(self, home: Path, mode: str) -> None:
        self.dir = home / "dbfs"
        self.dir.mkdir()
        self.mounted = False
        if mode == "tmpfs":
            mount = ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(self.dir)]
            self.mounted = subprocess.run(mount, capture_output=True).returncode == 0
            if not self.mounted:
                print("tmpfs mount refused: falling back to the injected disk-full fault")
        self.db = self.dir / "grctl.db"
        self.ballast = self.dir / "ballast" if self.mounted else home / "disk-is-full"

    def start_daemon(self, daemon: Daemon) -> None:
        """Start ``daemon`` on this disk (``--db``: with ``--home`` given, GRCTL_DB is not read)."""
        env = {} if self.mounted else {"GRCTL_FAULT_DISK_FULL": str(self.ballast)}
        with open(daemon.home / "daemon.out", "ab") as out:
            daemon.proc = subprocess.Popen(
                [sys.executable, "-m", "grctl_daemon", "--home", str(daemon.home)]
                + ["--db", str(self.db), "--quiet"],
                env=daemon.env(env),
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        proc = daemon.proc
        wait_until(lambda: proc.poll() is not None or accepts(daemon.socket), 15)
        assert proc.poll() is None, (daemon.home / "daemon.out").read_text()

    def fill(self) -> None:
        if not self.mounted:
            self.ballast.touch()
            return
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12):
                while True:
                    try:
                        os.write(fd, b"\0" * chunk)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC, exc
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        self.ballast.unlink()

    def release(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.dir)], check=False)


@pytest.fixture(params=["tmpfs", "injected"])
def disk(request: Any, daemon: Daemon) -> Iterator[SmallDisk]:
    """The daemon again, with its database on a disk the test can fill."""
    small = SmallDisk(daemon.home, request.param)
    assert daemon.stop() == 0
    daemon.db = small.db
    small.start_daemon(daemon)
    try:
        yield small
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        small.release()


def ticks(ledger: Path) -> Counter[tuple[str, int]]:
    return Counter((wid, int(n)) for wid, n in (line.split(" ") for line in read_ledger(ledger)))


def per_run(ledger: Path, workflow_id: str) -> int:
    return sum(1 for wid, _ in ticks(ledger) if wid == workflow_id)


def start(daemon: Daemon, workflow_id: str, n: int) -> None:
    daemon.call(lambda c: c.start_workflow("DfTicker", workflow_id, {"n": n}))


def finish(daemon: Daemon, workflow_id: str) -> None:
    daemon.call(lambda c: c.get_workflow_handle(workflow_id).send("finish", {"tag": "go"}))


def snapshot(daemon: Daemon, workflow_id: str) -> tuple[Any, ...]:
    info = daemon.call(lambda c: c.get_workflow_handle(workflow_id).describe())
    events = [(ev.seq, ev.kind, ev.step_name, ev.data) for ev in history(daemon, workflow_id)]
    return info.run_id, info.status, info.store, events


def storage(daemon: Daemon) -> dict[str, Any]:
    return daemon.status()["storage"]


def log_lines(daemon: Daemon, text: str) -> list[str]:
    return [line for line in daemon.log.read_text().splitlines() if text in line]


def check_complete(daemon: Daemon, ledger: Path, workflow_id: str, n: int) -> dict[int, int]:
    """The run ended with every tick it did, each recorded once; returns how often each ran."""
    out = result(daemon, workflow_id)
    done = len(out["ticks"])
    assert out == {"n": n, "tag": "go", "ticks": [f"t{i}" for i in range(done)]}
    recorded = of_kind(history(daemon, workflow_id), "task_completed")
    assert len(recorded) == done
    ran = {i: count for (wid, i), count in ticks(ledger).items() if wid == workflow_id}
    assert sorted(ran) == list(range(done)), (workflow_id, ran)
    return ran


def run_up_to_the_fault(daemon: Daemon, ledger: Path, disk: SmallDisk) -> dict[str, Any]:
    """Finish DONE runs, leave LIVE runs ticking, fill the disk; returns the snapshots taken."""
    for i in range(DONE):
        start(daemon, f"done-{i}", i)
    wait_until(lambda: all(per_run(ledger, f"done-{i}") >= 2 for i in range(DONE)), 15)
    for i in range(DONE):
        finish(daemon, f"done-{i}")
        result(daemon, f"done-{i}")
    for i in range(LIVE):
        start(daemon, f"live-{i}", 100 + i)
    wait_until(lambda: all(per_run(ledger, f"live-{i}") >= 2 for i in range(LIVE)), 15)
    before = {f"done-{i}": snapshot(daemon, f"done-{i}") for i in range(DONE)}
    before |= {f"live-{i}": snapshot(daemon, f"live-{i}") for i in range(LIVE)}
    disk.fill()
    wait_until(lambda: not storage(daemon)["writable"], 20, message="the daemon seeing the fault")
    return before


def test_full_disk_refuses_new_work_and_recovers_by_itself(daemon, workers, ledger, disk):
    worker = workers(FLOWS, env={"LEDGER": str(ledger)})
    pid = daemon.pid
    before = run_up_to_the_fault(daemon, ledger, disk)

    # It says what happened, once, and keeps serving.
    health = storage(daemon)
    assert health["error"] == "database or disk is full"
    assert health["waiting_units"] >= 1
    (line,) = log_lines(daemon, "cannot write the database")
    assert "ERROR" in line and str(disk.db) in line and "database or disk is full" in line
    shown = subprocess.run(
        [GRCTL, "daemon", "status", "--home", str(daemon.home)], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert "NOT WRITABLE" in shown.stdout and "database or disk is full" in shown.stdout

    # New work is refused with a stable code and a message saying what to do.
    with pytest.raises(StorageUnavailableError) as refused:
        start(daemon, "refused-1", 1)
    assert refused.value.code == "storage_unavailable"
    assert "Free space" in refused.value.message and str(disk.db) in refused.value.message
    with pytest.raises(StorageUnavailableError):
        finish(daemon, "live-0")
    cli = subprocess.run(
        [
            GRCTL,
            "start",
            "DfTicker",
            "--id",
            "refused-2",
            "--input",
            '{"n": 2}',
            "--home",
            str(daemon.home),
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1 and "cannot write its database" in cli.stderr, cli

    # What is durable now: what the runs did so far is a prefix of what they end with.
    during = {f"live-{i}": history(daemon, f"live-{i}") for i in range(LIVE)}
    # The disk stays full for longer than a step may take: the steps waiting on it must not
    # time out for it, now or once space returns.
    full_since = storage(daemon)["since_ms"] / 1000
    hold = STEP_TIMEOUT.total_seconds() + 1
    wait_until(lambda: time.time() > full_since + hold, hold + 5, message="a long outage")
    assert daemon.proc.poll() is None and not storage(daemon)["writable"]

    disk.free()
    wait_until(lambda: storage(daemon)["writable"], 10, message="the daemon seeing space again")
    assert len(log_lines(daemon, "is writable again")) == 1
    start(daemon, "after-1", 7)
    wait_until(lambda: per_run(ledger, "after-1") >= 1, 15)
    for wid in [*(f"live-{i}" for i in range(LIVE)), "after-1"]:
        finish(daemon, wid)

    for i in range(DONE):
        assert snapshot(daemon, f"done-{i}") == before[f"done-{i}"]
        assert set(check_complete(daemon, ledger, f"done-{i}", i).values()) == {1}
    for i in range(LIVE):
        wid = f"live-{i}"
        ran = check_complete(daemon, ledger, wid, 100 + i)
        # The daemon never died: every tick's outcome waited for space, none was done twice.
        assert set(ran.values()) == {1}, (wid, ran)
        final = history(daemon, wid)
        assert not of_kind(final, "step_timed_out"), wid
        old = before[wid][3]
        assert [(ev.seq, ev.kind, ev.step_name, ev.data) for ev in final[: len(old)]] == old
        assert [(ev.seq, ev.kind) for ev in final[: len(during[wid])]] == [
            (ev.seq, ev.kind) for ev in during[wid]
        ]
    check_complete(daemon, ledger, "after-1", 7)
    for wid in ("refused-1", "refused-2"):
        with pytest.raises(WorkflowNotFoundError):
            daemon.call(lambda c, wid=wid: c.get_workflow_handle(wid).describe())
    assert daemon.pid == pid and worker.proc.poll() is None
    assert daemon.integrity_ok()
    assert daemon.stop() == 0


def test_daemon_stopped_on_a_full_disk_drops_only_what_it_never_acknowledged(
    daemon, workers, ledger, disk
):
    workers(FLOWS, env={"LEDGER": str(ledger)})
    before = run_up_to_the_fault(daemon, ledger, disk)
    durable = {f"live-{i}": history(daemon, f"live-{i}") for i in range(LIVE)}

    # A graceful stop waits a little for space, then gives up what was never acknowledged.
    assert daemon.stop() == 0
    (line,) = log_lines(daemon, "not committed")
    assert "ERROR" in line and "never acknowledged" in line
    disk.free()
    disk.start_daemon(daemon)
    for i in range(LIVE):
        finish(daemon, f"live-{i}")

    for i in range(DONE):
        assert snapshot(daemon, f"done-{i}") == before[f"done-{i}"]
    for i in range(LIVE):
        wid = f"live-{i}"
        ran = check_complete(daemon, ledger, wid, 100 + i)
        # A tick whose record was dropped ran again after the restart: once more at most.
        assert set(ran.values()) <= {1, 2} and sum(n == 2 for n in ran.values()) <= 1, ran
        final = [(ev.seq, ev.kind, ev.step_name) for ev in history(daemon, wid)]
        assert final[: len(durable[wid])] == [
            (ev.seq, ev.kind, ev.step_name) for ev in durable[wid]
        ]
    assert daemon.integrity_ok()
    assert daemon.stop() == 0
