"""CLI fixtures: the installed ``grctl`` driven as a subprocess against a real daemon.

- ``served``: one daemon and one ``grctl worker flows.cli_orders`` shared by the CLI tests (a
  package-scoped fixture, to keep the suite fast); every test uses its own workflow ids, so the
  tests stay independent. Teardown checks a graceful exit and a traceback-free daemon.log.
- ``grctl(*args, home=...)``: run the command, return its exit code, stdout and stderr.
- ``uid(prefix)``: a fresh workflow_id.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GRCTL, TESTS, Daemon, shared_daemon, wait_until

CLI_TIMEOUT_S = 30


@dataclass
class Result:
    """What one ``grctl`` invocation did."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    @property
    def output(self) -> str:
        return self.out + self.err

    def __str__(self) -> str:
        return f"grctl {' '.join(self.args)} -> {self.code}\n--stdout--\n{self.out}\n--stderr--\n{self.err}"


def cli_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "GRCTL_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for name in ("GRCTL_SOCKET", "GRCTL_DB", "GRCTL_CRASH_AT", "NO_COLOR", "FORCE_COLOR"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def run_grctl(
    *args: str,
    home: Path,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path = TESTS,
) -> Result:
    """Run the installed ``grctl`` with ``GRCTL_HOME=home``; output is a pipe, not a terminal."""
    proc = subprocess.run(
        [GRCTL, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_env(home, env),
        timeout=CLI_TIMEOUT_S,
    )
    return Result(args, proc.returncode, proc.stdout, proc.stderr)


def run_grctl_many(cases: list[tuple[str, ...]], home: Path) -> list[Result]:
    """Run several independent ``grctl`` commands at once (table-driven error cases)."""
    procs = [
        subprocess.Popen(
            [GRCTL, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=TESTS,
            env=cli_env(home),
        )
        for args in cases
    ]
    results = []
    for args, proc in zip(cases, procs, strict=True):
        out, err = proc.communicate(timeout=CLI_TIMEOUT_S)
        results.append(Result(args, proc.returncode, out, err))
    return results


class Served:
    """The shared daemon and its worker; ``grctl(...)`` runs a command against them."""

    def __init__(self, daemon: Daemon, worker: subprocess.Popen[bytes], worker_log: Path) -> None:
        self.daemon = daemon
        self.home = daemon.home
        self.worker = worker
        self.worker_log = worker_log

    def grctl(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        return run_grctl(*args, home=self.home, stdin=stdin, env=env)

    def start(self, workflow_type: str, workflow_id: str, *args: str) -> dict[str, Any]:
        r = self.grctl("start", workflow_type, "--id", workflow_id, *args, "--json")
        assert r.code == 0, r
        return r.json()

    def start_direct(self, workflow_type: str, workflow_id: str, workflow_input: Any = None) -> str:
        """Start a run through the client, for tests whose subject is another command."""
        handle = self.daemon.call(
            lambda c: c.start_workflow(workflow_type, workflow_id, workflow_input)
        )
        return handle.run_id

    def result_direct(self, workflow_id: str) -> Any:
        return self.daemon.call(lambda c: c.get_workflow_handle(workflow_id).result(timeout=15))

    def describe(self, workflow_id: str) -> Any:
        """The run as the client sees it (in-process: waiting needs no extra subprocesses)."""
        return self.daemon.call(lambda c: c.get_workflow_handle(workflow_id).describe())

    def wait_status(self, workflow_id: str, status: str) -> None:
        wait_until(
            lambda: self.describe(workflow_id).status.value == status,
            15,
            message=f"{workflow_id} {status}",
        )


@pytest.fixture(scope="package")
def served() -> Iterator[Served]:
    with shared_daemon("flows.cli_orders", "cli", lambda d: cli_env(d.home)) as (daemon, worker):
        yield Served(daemon, worker.proc, worker.log)


@pytest.fixture
def uid() -> Any:
    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    return make
