"""The processes under test: a real daemon and one worker on a temp home, and their CPU and memory.

CPU is read from /proc/PID/stat (utime + stime, in clock ticks) before and after a workload, so
CPU per step is what the process itself spent, whatever else the shared machine is doing.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import pg
from grctl.client import Client
from grctl.errors import DaemonUnavailableError

ROOT = Path(__file__).resolve().parent.parent
GRCTL = str(Path(sys.executable).parent / "grctl")
CLK_TCK = os.sysconf("SC_CLK_TCK")
WORKER_CONCURRENCY = 100


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces; the fields we want come after its closing ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def runq_wait_seconds(pid: int) -> float:
    """Time all threads of ``pid`` spent runnable but waiting for a CPU (schedstat), in seconds.

    On a shared machine this tells "our code is slow" apart from "other tenants had the CPU".
    """
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return 0.0
    return total / 1e9


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def fmt(value: Any) -> str:
    """A figure for a table cell: thousands separated, fewer decimals the larger it is."""
    if not isinstance(value, int | float):
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


class Stack:
    """A daemon and a worker on a fresh temp home; ``with Stack(...) as s:`` tears both down.

    With ``db`` a ``postgresql://`` URL the daemon writes there, in a fresh schema
    (``bench_<pid>_<n>``) that is dropped on the way out, and the server processes serving it
    are measured like the daemon and the worker (see ``bench/pg.py``).

    With ``join`` another such Stack, this one's daemon joins that Stack's schema as a second
    member of a cluster (``bench/cluster.py``), under the same ``application_name``: ``join``
    makes, measures (every member's backends) and drops the schema. ``daemon_args`` go on the
    daemon's command line (``--lease-timeout 1``).
    """

    def __init__(
        self,
        synchronous: str = "FULL",
        home: Path | None = None,
        worker_wrapper: list[str] | None = None,
        daemon_wrapper: list[str] | None = None,
        db: str | None = None,
        join: Stack | None = None,
        daemon_args: list[str] | None = None,
    ) -> None:
        self.synchronous = synchronous
        self.pg: pg.PgProbe | None = None
        # How long a chain waits for PostgreSQL's backends to publish their counts (bench/pg.py).
        self.stats_settle_s = pg.STATS_SETTLE_S
        self.db_url: str | None = None
        if db is not None:
            if not pg.is_postgres(db):
                raise ValueError(f"--db takes a postgresql:// URL, not {db!r}")
            self.schema = pg.fresh_schema()
            self.app_name = f"grctl-{self.schema}"
            self.db_url = pg.with_query(db, schema=self.schema, application_name=self.app_name)
            self.pg = pg.PgProbe(db)
        elif join is not None:
            if join.db_url is None:
                raise ValueError("a cluster member joins a Stack on PostgreSQL")
            self.db_url = join.db_url
        # CPU seconds last read of each server process that served the daemon: one that went
        # away keeps counting what it spent while we saw it.
        self._pg_seen: dict[str, dict[int, float]] = {"postgres": {}, "postgres_aux": {}}
        self.own_home = home is None
        self.home = home or Path(tempfile.mkdtemp(prefix="grctl-bench-", dir="/tmp"))
        self.socket = self.home / "grctl.sock"
        self.db = self.home / "grctl.db"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_wrapper = worker_wrapper or []
        self.daemon_wrapper = daemon_wrapper or []
        self.daemon_args = daemon_args or []

    def env(self) -> dict[str, str]:
        env = {**os.environ, "GRCTL_HOME": str(self.home), "PYTHONPATH": str(ROOT)}
        for name in ("GRCTL_SOCKET", "GRCTL_DB", "GRCTL_CRASH_AT", "GRCTL_SYNCHRONOUS"):
            env.pop(name, None)
        return env

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.own_home:
            shutil.rmtree(self.home, ignore_errors=True)
        if self.pg is not None:
            try:
                self.pg.drop_schema(self.schema)
            finally:
                self.pg.close()
                self.pg = None

    @property
    def backend(self) -> str:
        return "postgres" if self.db_url is not None else "sqlite"

    def start(self) -> None:
        self.spawn_daemon()
        asyncio.run(self._wait_ready(workers=0))
        wout = open(self.home / "worker.out", "ab")  # noqa: SIM115
        self.worker = subprocess.Popen(
            [
                *self.worker_wrapper,
                GRCTL,
                "worker",
                "bench.flows",
                "--concurrency",
                str(WORKER_CONCURRENCY),
            ],
            env=self.env(),
            cwd=ROOT,
            stdout=wout,
            stderr=wout,
            stdin=subprocess.DEVNULL,
        )
        wout.close()
        asyncio.run(self._wait_ready(workers=1))

    def spawn_daemon(self) -> None:
        """Start the daemon process on this home; returns at once, before it serves."""
        os.chmod(self.home, 0o700)
        out = open(self.home / "daemon.out", "ab")  # noqa: SIM115
        self.daemon = subprocess.Popen(
            [
                *self.daemon_wrapper,
                sys.executable,
                "-m",
                "grctl_daemon",
                "--home",
                str(self.home),
                "--quiet",
                "--synchronous",
                self.synchronous,
                *(["--db", self.db_url] if self.db_url else []),
                *self.daemon_args,
            ],
            env=self.env(),
            cwd=ROOT,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
        out.close()

    def kill_daemon(self) -> None:
        """SIGKILL the daemon, as a crash would end it (no drain, no clean close), and reap it."""
        assert self.daemon is not None
        self.daemon.kill()
        self.daemon.wait()

    async def _wait_ready(self, workers: int, deadline_s: float = 30) -> None:
        deadline = time.monotonic() + deadline_s
        while True:
            if self.daemon is not None and self.daemon.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.tail('daemon.out')}")
            if self.worker is not None and self.worker.poll() is not None:
                raise RuntimeError(f"worker exited: {self.tail('worker.out')}")
            try:
                client = await Client.connect(self.socket)
                try:
                    status = await client.daemon_status()
                finally:
                    await client.close()
                if len(status["workers"]) >= workers:
                    return
            except (OSError, ConnectionError, DaemonUnavailableError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"stack not ready after {deadline_s}s")
            await asyncio.sleep(0.05)

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join((self.home / name).read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the worker, then the daemon, gracefully (SIGKILL after 20 s)."""
        for proc in (self.worker, self.daemon):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.worker = self.daemon = None

    def pids(self) -> dict[str, int]:
        assert self.daemon is not None and self.worker is not None
        return {"daemon": self.daemon.pid, "worker": self.worker.pid}

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the daemon, the worker and this (the client's) process.

        On PostgreSQL also ``postgres`` (the backends serving the daemon) and ``postgres_aux``
        (the server's own processes).
        """
        pids = {**self.pids(), "client": os.getpid()}
        out = {name: cpu_seconds(pid) for name, pid in pids.items()}
        if self.pg is not None:
            groups = {"postgres": self.pg.backends(self.app_name), "postgres_aux": self.pg.aux()}
            for group, group_pids in groups.items():
                seen = self._pg_seen[group]
                for pid in group_pids:
                    try:
                        seen[pid] = cpu_seconds(pid)
                    except OSError:
                        pass  # gone since the query: keep its last reading
                out[group] = sum(seen.values())
        return out

    def runq_wait(self) -> dict[str, float]:
        """Seconds so far the daemon's and the worker's threads (and on PostgreSQL the backends
        serving the daemon) waited for a CPU."""
        out = {name: runq_wait_seconds(pid) for name, pid in self.pids().items()}
        if self.pg is not None:
            out["postgres"] = sum(runq_wait_seconds(p) for p in self.pg.backends(self.app_name))
        return out

    def db_counters(self) -> dict[str, int]:
        """PostgreSQL's counters (``bench/pg.py``); empty on SQLite."""
        return self.pg.counters() if self.pg is not None else {}

    async def client(self) -> Client:
        return await Client.connect(self.socket)


class CpuMeter:
    """CPU seconds the daemon and worker spend between ``start()`` and ``stop()``."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.before: dict[str, float] = {}
        self.t0 = 0.0
        self.wall = 0.0
        self.spent: dict[str, float] = {}
        self.waited: dict[str, float] = {}
        self.wait_before: dict[str, float] = {}

    def start(self) -> None:
        self.before = self.stack.cpu()
        self.wait_before = self.stack.runq_wait()
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.t0
        after = self.stack.cpu()
        waited = self.stack.runq_wait()
        self.spent = {k: after[k] - self.before[k] for k in after}
        self.waited = {k: waited[k] - self.wait_before[k] for k in waited}

    def per_unit_us(self, units: int) -> dict[str, float]:
        return {f"{k}_cpu_us_per_step": v * 1e6 / max(units, 1) for k, v in self.spent.items()}

    def utilisation(self) -> dict[str, float]:
        """CPU, and time runnable but waiting for a CPU, each as % of one core over the wall."""
        wall = max(self.wall, 1e-9)
        return {
            **{f"{k}_cpu_pct": 100 * v / wall for k, v in self.spent.items()},
            **{f"{k}_runq_wait_pct": 100 * v / wall for k, v in self.waited.items()},
        }


def fsync_ms(directory: Path, n: int = 50) -> dict[str, float]:
    """p50/p99 of write(4 KiB) + fsync on ``directory``'s disk: what a FULL commit waits for."""
    path = directory / f".fsync-probe-{os.getpid()}"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for i in range(n):
            t0 = time.perf_counter()
            os.pwrite(fd, os.urandom(4096), i * 4096)
            os.fsync(fd)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99)}


def machine_info() -> dict[str, Any]:
    """CPU model, cores, Python, kernel, date and git commit of the tree under test."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    try:
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "grctl", "grctl_daemon"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        dirty = None
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": commit,
        "engine_tree_dirty": dirty,  # uncommitted edits under grctl/ or grctl_daemon/
        "loadavg_at_start": [round(x, 2) for x in load],
        "tmp_fsync": fsync_ms(Path(tempfile.gettempdir())),
        "uvloop": _version("uvloop"),
        "sqlite": sqlite3.sqlite_version,
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
