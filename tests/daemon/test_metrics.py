"""``--metrics HOST:PORT``: a real daemon and worker scraped over HTTP (both backends), and its
start-up errors."""

from __future__ import annotations

import socket as socketlib
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PG_URL, Daemon, pg_schema, wait_until


def free_port() -> int:
    with closing(socketlib.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, parsed by prometheus-client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def daemon(home: Path, backend: str, metrics_port: int) -> Iterator[Daemon]:
    """The suite's ``daemon`` fixture, serving ``/metrics``: ``workers`` then joins this daemon
    instead of starting a second one in the same home."""
    with pg_schema() if backend == "postgres" else _nothing() as schema:
        d = Daemon(home)
        if schema is not None:
            d.db_url = f"{PG_URL}?schema={schema}"
        d.start(env={"GRCTL_METRICS": f"127.0.0.1:{metrics_port}"})
        yield d
        if d.proc is not None and d.proc.poll() is None:
            assert d.stop() == 0, (home / "daemon.out").read_text()
        assert "Traceback" not in d.log.read_text(), d.log.read_text()


@pytest.fixture
def metered(daemon: Daemon, metrics_port: int) -> tuple[Daemon, int]:
    return daemon, metrics_port


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.backends
def test_counts_runs_steps_and_gauges(metered, workers):
    daemon, port = metered
    w = workers("flows.mx_metrics")
    for wid, mode in (("a", "done"), ("b", "done"), ("c", "wait"), ("d", "wait")):
        daemon.call(lambda c, wid=wid, mode=mode: c.start_workflow("MxFlow", wid, {"mode": mode}))

    async def waiting(c, wid: str) -> bool:
        return (await c.get_workflow_handle(wid).describe()).status.value == "waiting"

    wait_until(
        lambda: daemon.call(lambda c: waiting(c, "c")) and daemon.call(lambda c: waiting(c, "d"))
    )
    daemon.call(lambda c: c.get_workflow_handle("c").send("go"))
    for wid in ("a", "b"):
        assert (
            daemon.call(lambda c, wid=wid: c.get_workflow_handle(wid).result(timeout=10)) == "done"
        )

    def ended() -> dict | None:
        s = scrape(port)
        return (
            s
            if value(s, "grctl_runs_ended_total", workflow_type="MxFlow", outcome="failed")
            else None
        )

    s = wait_until(ended, message="the failed run counted")
    assert value(s, "grctl_runs_started_total", workflow_type="MxFlow") == 4
    assert value(s, "grctl_runs_ended_total", workflow_type="MxFlow", outcome="completed") == 2
    assert value(s, "grctl_runs_ended_total", workflow_type="MxFlow", outcome="failed") == 1
    # a, b: start and finish; c: start and the event handler; d: start.
    assert value(s, "grctl_steps_total", workflow_type="MxFlow", outcome="completed") == 7
    assert value(s, "grctl_step_duration_seconds_count", workflow_type="MxFlow") == 7
    assert value(s, "grctl_step_duration_seconds_bucket", workflow_type="MxFlow", le="+Inf") == 7
    assert value(s, "grctl_runs_waiting") == 1
    assert value(s, "grctl_workers_connected") == 1
    assert value(s, "grctl_steps_in_flight") == 0
    assert value(s, "grctl_database_size_bytes") > 0
    assert value(s, "grctl_database_writable") == 1
    assert value(s, "grctl_commit_duration_seconds_count") >= 1
    assert value(s, "grctl_commit_batch_units_sum") >= value(s, "grctl_commit_batch_units_count")
    assert value(s, "grctl_oldest_ready_run_age_seconds") == 0

    # No worker: a new run is ready but not dispatched, and the gauges say for how long.
    w.stop()
    wait_until(lambda: value(scrape(port), "grctl_workers_connected") == 0)
    daemon.call(lambda c: c.start_workflow("MxFlow", "e", {"mode": "done"}))
    s = wait_until(
        lambda: (s := scrape(port)) and value(s, "grctl_oldest_ready_run_age_seconds") > 0 and s,
        message="a ready run that ages",
    )
    assert value(s, "grctl_runs_ready", workflow_type="MxFlow") == 1
    assert value(s, "grctl_runs_started_total", workflow_type="MxFlow") == 5


def test_port_taken_is_one_line(home):
    with closing(socketlib.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _run_daemon(home, "--metrics", f"127.0.0.1:{port}")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: --metrics 127.0.0.1:{port}: cannot serve there"), lines
    assert "pick a free port" in lines[-1] and "Traceback" not in proc.stderr


def test_missing_extra_says_what_to_install(home, tmp_path):
    # A prometheus_client that cannot be imported stands for the extra not installed.
    fake = tmp_path / "prometheus_client"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named prometheus_client')\n")
    proc = _run_daemon(home, "--metrics", "127.0.0.1:1", pythonpath=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --metrics needs the prometheus-client package; install it with: "
        "pip install 'grctl[metrics]'"
    )


def test_bad_address_is_usage_error(home):
    proc = _run_daemon(home, "--metrics", "9100")
    assert proc.returncode == 2
    assert "--metrics '9100' is not HOST:PORT" in proc.stderr


def _run_daemon(
    home: Path, *args: str, pythonpath: Path | None = None
) -> subprocess.CompletedProcess:
    env = Daemon(home).env({"PYTHONPATH": str(pythonpath)} if pythonpath else None)
    return subprocess.run(
        [sys.executable, "-m", "grctl_daemon", "--home", str(home), "--quiet", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_daemon_start_serves_metrics(home):
    from tests.cli.conftest import run_grctl

    port = free_port()
    started = run_grctl("daemon", "start", "--metrics", f"127.0.0.1:{port}", "--json", home=home)
    assert started.code == 0, started
    try:
        s = scrape(port)
        assert value(s, "grctl_workers_connected") == 0
        assert value(s, "grctl_runs_waiting") == 0
    finally:
        assert run_grctl("daemon", "stop", home=home).code == 0
    assert "Traceback" not in (home / "daemon.log").read_text()
    log = (home / "daemon.log").read_text()
    assert f"serving Prometheus metrics at http://127.0.0.1:{port}/metrics" in log
