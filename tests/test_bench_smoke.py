"""The benchmark suite still runs: ``scripts/bench --quick`` on tiny sizes writes its JSON.

No timed thresholds: only that every workload ran and produced positive numbers, so the
instrument cannot rot while nobody benchmarks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

# The benchmarks load both cores: they run alone.
pytestmark = pytest.mark.serial

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = "chain,latency,event,tasks,fanout,idle,growth,waiting,cli"


@pytest.mark.timeout(180)
def test_quick_bench_writes_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "--only", WORKLOADS, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())

    positive = {
        "chain": ["steps_per_s", "runs_per_s", "daemon_cpu_us_per_step", "units_per_transaction"],
        "latency": ["p50_ms", "p99_ms"],
        "event": ["p50_ms", "p99_ms"],
        "tasks": ["tasks_per_s", "ms_per_task_alone"],
        "fanout": ["parent_p50_ms", "children_per_s"],
        "idle": ["daemon_rss_mb", "worker_rss_mb", "window_s"],
        "waiting": [
            "start_runs_per_s",
            "rss_mb",
            "restart_accept_s",
            "restart_describe_s",
            "rss_after_restart_mb",
            "cold_event_p50_ms",
        ],
        "cli": ["help_cpu_ms", "list_cpu_ms", "list_json_cpu_ms"],
    }
    for workload, keys in positive.items():
        for key in keys:
            value = data[workload][key]
            assert isinstance(value, int | float) and value > 0, (workload, key, value)
    assert data["idle"]["daemon_cpu_pct"] >= 0
    assert data["idle"]["runs"] > 0
    points = data["growth"]["points"]
    assert len(points) == 3
    assert all(p["steps_per_s"] > 0 for p in points)
    assert points[-1]["finished_steps"] >= points[-1]["level"]
    assert data["growth"]["seeded_with_sql"] is True
    assert data["waiting"]["cold_events"] > 0
    assert data["waiting"]["timers_fired"] == data["waiting"]["timers_due"]
    assert data["waiting"]["timers_fired_early"] == 0
    for key in ("cpu_model", "cores", "python", "kernel", "date", "git_commit"):
        assert data["machine"][key]
    assert "peers" not in data
    assert out.with_suffix(".txt").exists()
    assert "steps/s" in proc.stdout


@pytest.mark.timeout(120)
def test_quick_retention_bench_deletes_runs_as_it_goes(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "--only", "retention", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())["retention"]
    assert data["runs"] == 2000 and data["retention"] == "1s"
    assert 0 < data["pruned_runs"] <= 2000 and data["delete_units"] > 0
    assert data["samples"] and all(s["file_mb"] > 0 for s in data["samples"])


PG_URL = os.environ.get("GRCTL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_up() -> bool:
    parts = urlsplit(PG_URL)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 1).close()
    except OSError:
        return False
    return importlib.util.find_spec("asyncpg") is not None


@pytest.mark.timeout(180)
@pytest.mark.skipif(not _postgres_up(), reason="no PostgreSQL server (GRCTL_BENCH_PG)")
def test_quick_bench_on_postgres_beside_sqlite(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "--only", "chain,latency,event"]
        + ["--db", PG_URL, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    for results in (data, data["postgres"]):
        assert results["chain"]["steps_per_s"] > 0
        assert results["latency"]["p50_ms"] > 0
        assert results["event"]["p50_ms"] > 0
    chain = data["postgres"]["chain"]
    for key in ("postgres_cpu_us_per_step", "pg_xact_commit", "pg_write_xids"):
        assert isinstance(chain[key], int | float) and chain[key] >= 0, key
    assert chain["pg_write_xids"] >= chain["transactions"] > 0
    assert "PostgreSQL/SQLite" in proc.stdout
    # The schema the daemon wrote is gone.
    assert not _schema_exists(data["postgres_server"]["schema"])


def _schema_exists(schema: str) -> bool:
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import asyncio, asyncpg, sys\n"
            "async def main():\n"
            "    c = await asyncpg.connect(sys.argv[1])\n"
            "    print(await c.fetchval('SELECT count(*) FROM pg_namespace WHERE nspname = $1',"
            " sys.argv[2]))\n"
            "    await c.close()\n"
            "asyncio.run(main())",
            PG_URL,
            schema,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert found.stdout.strip() in ("0", "1"), found.stderr
    return found.stdout.strip() == "1"


@pytest.mark.timeout(180)
@pytest.mark.skipif(not _postgres_up(), reason="no PostgreSQL server (GRCTL_BENCH_PG)")
def test_quick_bench_on_a_cluster_of_daemons(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "--only", "chain", "--db", PG_URL]
        + ["--daemons", "1,2", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cluster = json.loads(out.read_text())["cluster"]
    one, two = cluster["points"]
    assert (one["daemons"], two["daemons"]) == (1, 2)
    assert one["partitions"] == [64] and two["partitions"] == [32, 32]
    for point in (one, two):
        assert point["steps_per_s"] > 0
        for key in ("daemon_cpu_us_per_step", "postgres_cpu_us_per_step", "pg_xact_commit"):
            assert isinstance(point[key], int | float) and point[key] >= 0, key
        assert not _schema_exists(point["schema"])
    assert "daemon_1_cpu_us_per_step" in two and "daemon_1_cpu_us_per_step" not in one
    # Round-robin over two members: about half the runs were started at the other one.
    assert one["forwarded_pct"] == 0 and 0 < two["forwarded_pct"] < 100
    assert [q["daemons"] for q in cluster["projection"]] == [1, 2]
    assert "projection to 16 cores" in proc.stdout
