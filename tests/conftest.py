"""Fixtures over the real thing: a daemon process on a temp home, worker processes, polling.

- ``daemon``: the real ``python -m grctl_daemon`` on a fresh home, ready once the socket
  accepts; teardown stops it gracefully and checks exit 0 and a traceback-free daemon.log.
- ``workers``: a factory starting real ``grctl worker`` processes on modules of tests/flows.
- ``wait_until(predicate, timeout=...)`` in place of every sleep.
- ``call(daemon, fn)``: run ``fn(client)`` against the daemon with a fresh Client.

Backends: a module marked ``pytestmark = pytest.mark.backends`` runs each of its tests that use
``daemon`` twice, on SQLite and on the real PostgreSQL server (``GRCTL_TEST_PG``, default
``postgresql://postgres@127.0.0.1:5432/test``), each test in a fresh schema that is dropped
afterwards. Without a reachable server the PostgreSQL cases are skipped with one reason, unless
``GRCTL_REQUIRE_POSTGRES=1`` (as CI sets it) makes that an error.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket as socketlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from grctl.client import Client
from grctl.home import PID_NAME

TESTS = Path(__file__).parent
GRCTL = str(Path(sys.executable).parent / "grctl")
# pytest-xdist's workers export COLUMNS=80 (and LINES); the CLI's piped width must be the same
# whether or not the suite runs in parallel.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

PG_URL = os.environ.get("GRCTL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgres")


def _pg_run(sql: str) -> str | None:
    """Run one statement on the test server; the error text if it cannot (None when it ran)."""

    async def go() -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(go())
    except Exception as exc:  # noqa: BLE001 - reported as the reason to skip
        return f"{type(exc).__name__}: {exc}"
    return None


_PG_PROBLEM: list[str | None] = []


def pg_problem() -> str | None:
    """Why PostgreSQL tests cannot run here (None: they can); asked once per session."""
    if not _PG_PROBLEM:
        _PG_PROBLEM.append(_pg_run("SELECT 1"))
    return _PG_PROBLEM[0]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends: run each test that uses the daemon on SQLite and on PostgreSQL"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("backends"):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend of the test's daemon (``sqlite`` unless the module is parametrised)."""
    name = getattr(request, "param", "sqlite")
    if name == "postgres":
        problem = pg_problem()
        if problem is not None:
            if os.environ.get("GRCTL_REQUIRE_POSTGRES"):
                pytest.fail(f"PostgreSQL is required here but unreachable at {PG_URL}: {problem}")
            pytest.skip(f"PostgreSQL tests skipped: no server at {PG_URL} ({problem})")
    return name


@contextmanager
def pg_schema(prefix: str = "t") -> Iterator[str]:
    """A fresh schema name on the test server, dropped (with what the daemon made) afterwards."""
    name = f"{prefix}_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    try:
        yield name
    finally:
        _pg_run(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, message: str = ""
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def _accepts(path: Path) -> bool:
    s = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Daemon:
    """A real daemon process on its own home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.socket = home / "grctl.sock"
        self.db = home / "grctl.db"
        self.log = home / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.allow_tracebacks = False
        self.db_url: str | None = None  # set for PostgreSQL; None: the home's SQLite file

    @property
    def backend(self) -> str:
        return "postgres" if self.db_url else "sqlite"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, "GRCTL_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        env.pop("GRCTL_SOCKET", None)
        env.pop("GRCTL_DB", None)
        env.pop("GRCTL_CRASH_AT", None)
        env.update(extra or {})
        return env

    def start(self, env: dict[str, str] | None = None, wait: bool = True) -> Daemon:
        out = open(self.home / "daemon.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "grctl_daemon",
                "--home",
                str(self.home),
                "--quiet",
                *(["--db", self.db_url] if self.db_url else []),
            ],
            env=self.env(env),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        if wait:
            wait_until(
                lambda: self.proc.poll() is not None or _accepts(self.socket),
                15,
                message="daemon socket",
            )
            assert self.proc.poll() is None, (self.home / "daemon.out").read_text()
            holder = (self.home / PID_NAME).read_text().strip()
            assert holder == str(self.proc.pid), (
                f"another daemon (pid {holder}) already serves {self.home}: "
                "a test started two daemons in one home"
            )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait_dead(self, timeout: float = 15) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)

    def call(self, fn: Callable[[Client], Awaitable[Any]], timeout: float = 30) -> Any:
        return call(self, fn, timeout)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (``?`` placeholders) read straight from the daemon's database."""
        if self.db_url:
            import re

            import asyncpg

            n = iter(range(1, 1000))
            pg_sql = re.sub(r"\?", lambda _: f"${next(n)}", sql)
            schema = self.db_url.rsplit("schema=", 1)[1]

            async def go() -> list[tuple[Any, ...]]:
                conn = await asyncpg.connect(
                    PG_URL, timeout=5, server_settings={"search_path": schema}
                )
                try:
                    return [tuple(r) for r in await conn.fetch(pg_sql, *params)]
                finally:
                    await conn.close()

            return asyncio.run(go())
        import sqlite3

        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def integrity_ok(self) -> bool:
        if self.db_url:  # PostgreSQL checks its pages itself; ask it to read every table
            tables = ("runs", "history", "inbox", "store", "step_records", "timers")
            schema = self.db_url.rsplit("schema=", 1)[1]
            sql = "; ".join(f'SELECT count(*) FROM "{schema}".{t}' for t in tables)
            return _pg_run(sql) is None
        import sqlite3

        conn = sqlite3.connect(str(self.db))
        try:
            return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()

    def status(self) -> dict[str, Any]:
        return self.call(lambda c: c.daemon_status())


def call(daemon: Daemon, fn: Callable[[Client], Awaitable[Any]], timeout: float = 30) -> Any:
    """Run ``fn(client)`` with a fresh connection to ``daemon``."""

    async def go() -> Any:
        client = await Client.connect(daemon.socket)
        try:
            return await asyncio.wait_for(fn(client), timeout)
        finally:
            await client.close()

    return asyncio.run(go())


@pytest.fixture
def home() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes: keep the home short, not under tmp_path.
    path = Path(tempfile.mkdtemp(prefix="grctl-", dir="/tmp"))
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(home: Path, backend: str) -> Iterator[Daemon]:
    with pg_schema() if backend == "postgres" else _no_schema() as schema:
        d = Daemon(home)
        if schema is not None:
            d.db_url = f"{PG_URL}?schema={schema}"
        d.start()
        yield d
        if d.proc is not None and d.proc.poll() is None:
            code = d.stop()
            assert code == 0, f"daemon exited {code}: {(home / 'daemon.out').read_text()}"
        if not d.allow_tracebacks and d.log.exists():
            assert "Traceback" not in d.log.read_text(), d.log.read_text()


@contextmanager
def _no_schema() -> Iterator[None]:
    yield None


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def workers(daemon: Daemon) -> Iterator[Callable[..., Worker]]:
    """Start ``grctl worker flows.MODULE…`` processes; waits until they registered."""
    started: list[Worker] = []

    def start(
        *modules: str,
        concurrency: int | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Worker:
        before = len(daemon.status()["workers"]) if wait else 0
        log = daemon.home / f"worker-{len(started)}.log"
        cmd = [GRCTL, "worker", *modules, "--home", str(daemon.home)]
        if concurrency is not None:
            cmd += ["--concurrency", str(concurrency)]
        out = open(log, "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd, cwd=TESTS, env=daemon.env(env), stdout=out, stderr=out, stdin=subprocess.DEVNULL
        )
        out.close()
        w = Worker(proc, log)
        started.append(w)
        if wait:
            wait_until(
                lambda: proc.poll() is not None or len(daemon.status()["workers"]) > before,
                15,
                message="worker registration",
            )
            assert proc.poll() is None, w.output()
        return w

    yield start
    for w in started:
        w.stop()


@contextmanager
def shared_daemon(
    module: str, prefix: str, env: Callable[[Daemon], dict[str, str]] | None = None
) -> Iterator[tuple[Daemon, Worker]]:
    """A daemon and one ``grctl worker MODULE`` on a fresh home, for a module-wide fixture.

    Yields once the worker registered. Afterwards both stop; the daemon must exit 0 with no
    traceback and no internal error in its log.
    """
    home = Path(tempfile.mkdtemp(prefix=f"grctl-{prefix}-", dir="/tmp"))
    os.chmod(home, 0o700)
    daemon = Daemon(home).start()
    log = home / "worker.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [GRCTL, "worker", module, "--home", str(home)],
            cwd=TESTS,
            env=env(daemon) if env else daemon.env(),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    worker = Worker(proc, log)
    try:
        wait_until(
            lambda: proc.poll() is not None or daemon.status()["workers"],
            15,
            message="worker registration",
        )
        assert proc.poll() is None, worker.output()
        yield daemon, worker
    finally:
        worker.stop()
        code = daemon.stop() if daemon.proc and daemon.proc.poll() is None else 0
        text = daemon.log.read_text() if daemon.log.exists() else ""
        shutil.rmtree(home, ignore_errors=True)
        assert code == 0, f"daemon exited {code}"
        assert "Traceback" not in text, text[-5000:]
        assert "internal error" not in text, text[-5000:]


@pytest.fixture
def ledger(home: Path) -> Path:
    """A side-effect ledger file the test flows append ``op_id attempt`` lines to."""
    return home / "ledger.txt"


def read_ledger(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
