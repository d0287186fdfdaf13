"""What the crash tests share: barrier files, the ledger read back, history in short."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from tests.conftest import GRCTL, TESTS, Daemon, read_ledger, wait_until


def reached(ledger: Path, name: str, timeout: float = 15) -> int:
    """Wait until an execution is held at barrier ``name``; returns the pid holding it."""
    marker = ledger.parent / f"{name}.reached"
    wait_until(marker.exists, timeout, message=f"barrier {name!r} reached")
    return int(marker.read_text())


def release(ledger: Path, name: str) -> None:
    (ledger.parent / f"{name}.release").touch()


def entries(ledger: Path) -> list[tuple[str, int, list[str]]]:
    """The ledger as ``(op, pid, values)`` rows, in the order the side effects happened."""
    rows = []
    for line in read_ledger(ledger):
        op, pid, *values = line.split(" ")
        rows.append((op, int(pid), values))
    return rows


def ops(ledger: Path) -> Counter[str]:
    return Counter(op for op, _, _ in entries(ledger))


def history(daemon: Daemon, workflow_id: str) -> list[Any]:
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).history())


def result(daemon: Daemon, workflow_id: str, timeout: float = 15) -> Any:
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).result(timeout=timeout))


def status(daemon: Daemon, workflow_id: str) -> str:
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).describe()).status.value


def of_kind(events: list[Any], kind: str) -> list[Any]:
    return [ev for ev in events if ev.kind == kind]


def worker_on(d: Daemon, module: str, ledger: Path) -> subprocess.Popen[bytes]:
    """A ``grctl worker MODULE`` on ``d``'s home (kept in ``d.started``); once it registered."""
    out = open(d.home / "worker.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [GRCTL, "worker", module, "--home", str(d.home)],
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
    return proc
