"""The benchmark suite: grctl's workloads against a real daemon and worker, optionally beside peers.

    scripts/bench [--only chain,latency,...] [--peers] [--durability full|normal|both]
                  [--db postgresql://… [--daemons 1,2,3]] [--profile] [--quick]
                  [--chain-runs N] [--waiting-runs N]
                  [--out bench/results/DATE.json]

Prints a table (stdout) and writes a JSON file (plus the table as text, and the profiles with
``--profile``) next to it. Progress goes to stderr. See docs/performance.md for what each
workload is and how the peers map onto it.

With ``--peers``, ``chain``, ``latency`` and ``event`` run on DBOS Transact (SQLite as shipped,
and tuned) and LlamaIndex workflows too, in alternation with ours: ours, peer 1, ours, peer 2,
ours, … Each ratio compares a peer with the mean of the two grctl rounds on either side of it,
because the machine is shared and its speed drifts; the grctl figure printed is the median of
all its rounds.

With ``--db postgresql://…``, ``chain``, ``latency``, ``event`` (and ``tasks``, ``fanout`` if
selected) run on SQLite and then on PostgreSQL (one daemon, a fresh schema, dropped after), and
the table has a column for each and their ratio; the PostgreSQL column adds the server's CPU per
step and its transactions per step (``bench/pg.py``). ``--profile`` then profiles the daemon on
PostgreSQL. ``idle``, ``growth``, ``waiting``, ``retention`` and ``cli`` run on SQLite only.

With ``--daemons 1,2,3`` too, ``chain`` also runs on a cluster of each number of daemons on one
fresh schema of that database, its runs started round-robin over them, and a second table gives
each point's figures and a projection to 16 cores (``bench/cluster.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench import cli, cluster, pg, profiling, waiting, workloads
from bench import growth as growth_mod
from bench import retention as retention_mod
from bench.harness import ROOT, Stack, fmt, machine_info
from grctl_daemon.server import MAX_WAITS

BENCH = ROOT / "bench"
PEERS_VENV = BENCH / ".peers-venv"
PEERS_PY = PEERS_VENV / "bin" / "python"
PY_SPY = PEERS_VENV / "bin" / "py-spy"
WORKLOADS = (
    "chain",
    "latency",
    "event",
    "tasks",
    "fanout",
    "idle",
    "growth",
    "waiting",
    "retention",
    "cli",
)
# The workloads that run on each Stack (and with --db on PostgreSQL too).
STACK_WORKLOADS = ("chain", "latency", "event", "tasks", "fanout")
# Run only when asked for (``--only waiting``): at 100,000 runs it takes minutes.
OPT_IN = ("waiting", "retention")
PEER_WORKLOADS = ("chain", "latency", "event")
# The tuned DBOS variant is the same script with --tuned (WAL file, 1 ms notification polling).
PEERS: dict[str, tuple[str, list[str]]] = {
    "dbos-sqlite": ("dbos_bench.py", []),
    "dbos-sqlite-tuned": ("dbos_bench.py", ["--tuned"]),
    "llama-workflows": ("llama_bench.py", []),
}


@dataclass(frozen=True)
class Sizes:
    chain_runs: int = 2000
    # Peers' chain, and the grctl rounds interleaved with them, start fewer runs together: at
    # 2,000 DBOS on SQLite exhausts its 20-connection pool and falls to ~66 steps/s (150 s).
    peer_chain_runs: int = 500
    steps: int = 5
    samples: int = 200
    sample_budget_s: float = 20.0
    tasks_runs: int = 100
    tasks_per_step: int = 20
    fanout_parents: int = 20
    fanout_children: int = 50
    idle_runs: int = 10_000
    idle_window_s: float = 10.0
    growth_levels: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    growth_runs: int = 1000
    growth_rounds: int = 2
    waiting_runs: int = 100_000
    waiting_in_flight: int = 200
    waiting_timer_share: float = 0.01
    waiting_timeout_s: tuple[int, int] = (5, 180)
    waiting_cold_events: int = 50
    waiting_after_restart_s: float = 30.0
    retention_runs: int = 200_000  # under --retention 1m, started at retention_rate per second
    retention_rate: float = 800.0
    retention_sample_s: float = 15.0
    retention: str = "1m"
    cli_rounds: int = 11


QUICK = Sizes(
    # Enough daemon CPU for /proc's 10 ms ticks to see it: chained steps cost it little.
    chain_runs=300,
    peer_chain_runs=20,
    samples=10,
    sample_budget_s=3.0,
    tasks_runs=5,
    tasks_per_step=20,
    fanout_parents=2,
    fanout_children=5,
    idle_runs=50,
    idle_window_s=1.0,
    growth_levels=(100, 300, 1000),
    growth_runs=20,
    growth_rounds=1,
    waiting_runs=2000,
    waiting_timeout_s=(1, 5),
    waiting_cold_events=10,
    waiting_after_restart_s=2.0,
    retention_runs=2000,
    retention_sample_s=0.5,
    retention="1s",
    cli_rounds=3,
)

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# -- ours ---------------------------------------------------------------------------------------


def run_ours(
    stack: Stack, workload: str, sz: Sizes, chain_runs: int | None = None
) -> dict[str, Any]:
    runs = chain_runs or sz.chain_runs
    log(
        f"{workload}: grctl "
        + ("PostgreSQL" if stack.pg is not None else stack.synchronous)
        + (f" ({runs} runs)" if workload == "chain" else "")
    )
    match workload:
        case "chain":
            m = asyncio.run(workloads.chain(stack, runs, sz.steps))
            m["total_cpu_us_per_step"] = sum(v for k, v in m.items() if k.endswith("_us_per_step"))
            return m
        case "latency":
            return asyncio.run(workloads.latency(stack, sz.samples, sz.steps, sz.sample_budget_s))
        case "event":
            return asyncio.run(workloads.event(stack, sz.samples, sz.sample_budget_s))
        case "tasks":
            return asyncio.run(workloads.tasks(stack, sz.tasks_runs, sz.tasks_per_step))
        case "fanout":
            return asyncio.run(workloads.fanout(stack, sz.fanout_parents, sz.fanout_children))
    raise ValueError(workload)


def median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-key median over rounds (non-numbers from the first round)."""
    out: dict[str, Any] = {}
    for key, value in rounds[0].items():
        values = [r[key] for r in rounds if isinstance(r.get(key), int | float)]
        out[key] = statistics.median(values) if isinstance(value, int | float) else value
    out["rounds"] = len(rounds)
    return out


def mean_of(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (a[k] + b[k]) / 2
        for k in a
        if isinstance(a.get(k), int | float) and isinstance(b.get(k), int | float)
    }


# -- peers --------------------------------------------------------------------------------------


def ensure_peers_venv() -> None:
    """Create bench/.peers-venv on first use (idempotent: setup.sh keeps a stamp file)."""
    subprocess.run(["bash", str(BENCH / "peers" / "setup.sh")], check=True)


def run_peer(name: str, workload: str, sz: Sizes) -> dict[str, Any]:
    script, extra = PEERS[name]
    log(f"{workload}: {name}")
    cmd = [
        str(PEERS_PY),
        str(BENCH / "peers" / script),
        "--workload",
        workload,
        "--runs",
        str(sz.peer_chain_runs),
        "--steps",
        str(sz.steps),
        "--samples",
        str(sz.samples),
        "--budget-s",
        str(sz.sample_budget_s),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=400, env=env, cwd=BENCH / "peers"
        )
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 400 s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}"}


def interleave_peers(
    stack: Stack,
    workload: str,
    sz: Sizes,
    peers: list[str],
    results: dict[str, Any],
    first: dict[str, Any],
) -> list[dict[str, Any]]:
    """Peer, grctl, peer, grctl… after grctl's ``first`` round; returns grctl's new rounds.

    Fills ``results["peers"]`` and ``results["ratios"]``. The grctl rounds beside the peers run
    the peers' sizes (for chain, fewer runs than ours), so each ratio is like for like; for
    chain one more round at our own size follows.
    """
    beside_runs = sz.peer_chain_runs if workload == "chain" else None
    # For latency and event, ``first`` already has the peers' size: it is the round before peer 1.
    beside = [run_ours(stack, workload, sz, beside_runs) if workload == "chain" else first]
    for peer in peers:
        peer_result = run_peer(peer, workload, sz)
        beside.append(run_ours(stack, workload, sz, beside_runs))
        entry = results.setdefault("peers", {}).setdefault(peer, {})
        entry[workload] = peer_result
        if "error" in peer_result:
            log(f"  {peer} failed: {peer_result['error']}")
            continue
        entry["version"] = peer_result["version"]
        around = mean_of(beside[-2], beside[-1])
        ratios = results.setdefault("ratios", {}).setdefault(peer, {})
        for key, value in peer_result.items():
            if key in ("runs", "steps", "samples", "seconds"):
                continue
            if isinstance(value, int | float) and value and key in around:
                ratios[f"{workload}.{key}"] = around[key] / value
        if workload == "chain" and peer_result.get("cpu_us_per_step"):
            ratios["chain.cpu_us_per_step"] = (
                around["total_cpu_us_per_step"] / peer_result["cpu_us_per_step"]
            )
    if workload == "chain":
        results["chain_beside_peers"] = median_of(beside)
        return [run_ours(stack, workload, sz)]
    return beside[1:]


# -- the table ----------------------------------------------------------------------------------

# (workload, label, our key, peer key or None, higher is better)
ROWS: list[tuple[str, str, str, str | None, bool]] = [
    ("chain", "steps/s", "steps_per_s", None, True),
    ("chain", "runs/s", "runs_per_s", None, True),
    ("chain", "CPU µs/step, all processes", "total_cpu_us_per_step", None, False),
    ("chain", "daemon CPU µs/step", "daemon_cpu_us_per_step", None, False),
    ("chain", "worker CPU µs/step", "worker_cpu_us_per_step", None, False),
    ("chain", "client CPU µs/step", "client_cpu_us_per_step", None, False),
    ("chain", "daemon CPU % of a core", "daemon_cpu_pct", None, False),
    ("chain", "worker CPU % of a core", "worker_cpu_pct", None, False),
    ("chain", "postgres backends CPU µs/step", "postgres_cpu_us_per_step", None, False),
    ("chain", "postgres aux processes CPU µs/step", "postgres_aux_cpu_us_per_step", None, False),
    ("chain", "postgres backends CPU % of a core", "postgres_cpu_pct", None, False),
    ("chain", "daemon waiting for a CPU %", "daemon_runq_wait_pct", None, False),
    ("chain", "worker waiting for a CPU %", "worker_runq_wait_pct", None, False),
    ("chain", "postgres waiting for a CPU %", "postgres_runq_wait_pct", None, False),
    ("chain", "commit units per transaction", "units_per_transaction", None, True),
    ("chain", "group commits per step (daemon)", "transactions_per_step", None, False),
    ("chain", "xact_commit per step (pg_stat_database)", "pg_xact_commit_per_step", None, False),
    ("chain", "xids (writing xacts + savepoints) per step", "pg_write_xids_per_step", None, False),
    ("chain", "WAL bytes per step", "pg_wal_bytes_per_step", None, False),
    ("chain", "writing batches % of wall time", "writer_busy_pct", None, False),
    ("chain", "COMMIT % of wall time", "commit_pct", None, False),
    ("chain", "COMMIT ms per transaction", "commit_ms_per_transaction", None, False),
    ("chain_beside_peers", "steps/s", "steps_per_s", "steps_per_s", True),
    ("chain_beside_peers", "runs/s", "runs_per_s", "runs_per_s", True),
    (
        "chain_beside_peers",
        "CPU µs/step, all processes",
        "total_cpu_us_per_step",
        "cpu_us_per_step",
        False,
    ),
    ("latency", "p50 ms (one 5-step run)", "p50_ms", "p50_ms", False),
    ("latency", "p99 ms", "p99_ms", "p99_ms", False),
    ("event", "p50 ms (send → result)", "p50_ms", "p50_ms", False),
    ("event", "p99 ms", "p99_ms", "p99_ms", False),
    ("tasks", "tasks/s", "tasks_per_s", None, True),
    ("tasks", "ms per task, one run alone", "ms_per_task_alone", None, False),
    ("fanout", "parent step p50 ms (50 starts)", "parent_p50_ms", None, False),
    ("fanout", "all children done p50 ms", "all_children_done_p50_ms", None, False),
    ("fanout", "children/s", "children_per_s", None, True),
    ("idle", "daemon CPU % while idle", "daemon_cpu_pct", None, False),
    ("idle", "worker CPU % while idle", "worker_cpu_pct", None, False),
    ("idle", "daemon RSS MB", "daemon_rss_mb", None, False),
    ("idle", "daemon KB per waiting run", "daemon_rss_kb_per_waiting_run", None, False),
    ("idle", "worker RSS MB", "worker_rss_mb", None, False),
    ("waiting", "starts/s (200 in flight)", "start_runs_per_s", None, True),
    ("waiting", "daemon RSS MB, all waiting", "rss_mb", None, False),
    ("waiting", "daemon bytes per waiting run", "rss_per_run_bytes", None, False),
    ("waiting", "restart (kill -9): s until it accepts", "restart_accept_s", None, False),
    ("waiting", "restart: s until describe answers", "restart_describe_s", None, False),
    ("waiting", "daemon RSS MB after restart", "rss_after_restart_mb", None, False),
    ("waiting", "cold event p50 ms (send → result)", "cold_event_p50_ms", None, False),
    ("waiting", "cold event p99 ms", "cold_event_p99_ms", None, False),
    ("waiting", "wait timers due", "timers_due", None, True),
    ("waiting", "wait timers fired", "timers_fired", None, True),
    ("waiting", "timer lateness p50 ms", "timer_late_p50_ms", None, False),
    ("waiting", "timer lateness max ms", "timer_late_max_ms", None, False),
    ("retention", "runs/s under --retention", "runs_per_s", None, True),
    ("retention", "runs deleted by retention", "pruned_runs", None, True),
    ("retention", "delete unit mean ms (200 runs)", "delete_unit_mean_ms", None, False),
    ("retention", "delete unit max ms", "delete_unit_max_ms", None, False),
    ("retention", "run p99 ms (start → result)", "run_p99_ms", None, False),
    ("retention", "database MB at the end", "file_mb_final", None, False),
    ("retention", "database MB growth after 2 min", "file_mb_growth_after_2min", None, False),
    ("cli", "grctl --help CPU ms (median)", "help_cpu_ms", None, False),
    ("cli", "grctl list CPU ms (median)", "list_cpu_ms", None, False),
    ("cli", "grctl list --json CPU ms (median)", "list_json_cpu_ms", None, False),
]


# Rows shown only beside a PostgreSQL column (the default table stays as it was).
BESIDE_POSTGRES_ONLY = frozenset({"transactions_per_step"})


def table_rows(
    results: dict[str, Any], peers: list[str], normal: bool
) -> tuple[list[str], list[list[str]]]:
    """The comparison as a header and rows of text cells (for rich and for markdown)."""
    postgres = "postgres" in results
    # Columns beside the first (SQLite, FULL): (header, key in results).
    extra = [("grctl NORMAL", "normal")] if normal else []
    if postgres:
        extra.append(("PostgreSQL", "postgres"))
    header = ["workload", "metric", "SQLite FULL" if postgres else "grctl FULL"]
    header += [name for name, _ in extra]
    if postgres:
        header.append("PostgreSQL/SQLite")
    header += peers + [f"ours/{p}" for p in peers]
    rows = list(ROWS)
    if "growth" in results:
        for point in results["growth"]["points"]:
            lvl = point["level"]
            rows.append(
                ("growth", f"steps/s after {lvl:,} steps", f"steps_per_s_at_{lvl}", None, True)
            )
        rows.append(("growth", "degradation % (first → last)", "degradation_pct", None, False))
    out = []
    for workload, label, key, peer_key, _higher in rows:
        if workload not in results or (key in BESIDE_POSTGRES_ONLY and not postgres):
            continue
        if key not in results[workload] and not any(
            key in results.get(col, {}).get(workload, {}) for _, col in extra
        ):
            continue
        shown = workload
        if workload == "chain":
            shown = f"chain ({int(results[workload].get('runs', 0)):,} runs)"
        elif workload == "chain_beside_peers":
            shown = f"chain ({int(results[workload].get('runs', 0)):,} runs, beside peers)"
        elif workload == "waiting":
            shown = f"waiting ({int(results[workload].get('runs', 0)):,} runs)"
        cells = [shown, label, fmt(results[workload].get(key))]
        for _, col in extra:
            cells.append(fmt(results.get(col, {}).get(workload, {}).get(key)))
        if postgres:
            ours, theirs = (
                results[workload].get(key),
                results["postgres"].get(workload, {}).get(key),
            )
            both = isinstance(ours, int | float) and isinstance(theirs, int | float)
            cells.append(f"{theirs / ours:.3g}×" if both and ours else "")
        peer_wl = "chain" if workload == "chain_beside_peers" else workload
        peer_cells, ratio_cells = [], []
        for p in peers:
            pr = results.get("peers", {}).get(p, {}).get(peer_wl, {})
            peer_cells.append(fmt(pr.get(peer_key)) if peer_key else "")
            ratio = results.get("ratios", {}).get(p, {}).get(f"{peer_wl}.{peer_key}")
            ratio_cells.append(f"{ratio:.3g}×" if peer_key and ratio else "")
        out.append(cells + peer_cells + ratio_cells)
    return header, out


CAPTION = "ours/peer: for rates >1 means grctl is better; for ms and CPU, <1 does"


def build_table(results: dict[str, Any], peers: list[str], normal: bool) -> Table:
    header, rows = table_rows(results, peers, normal)
    table = Table(title="grctl benchmark", caption=CAPTION)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(results: dict[str, Any], peers: list[str], normal: bool) -> str:
    header, rows = table_rows(results, peers, normal)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["--:"] * (len(header) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def bound_note(chain: dict[str, Any], machine: dict[str, Any], label: str = "chain") -> str:
    """Which resource bounds the chain figure, from its CPU and transaction numbers."""
    procs = [p for p in ("daemon", "worker", "client", "postgres") if f"{p}_cpu_pct" in chain]
    busiest = max(procs, key=lambda k: chain.get(f"{k}_cpu_pct", 0))
    parts = ", ".join(f"{k} {chain.get(f'{k}_cpu_pct', 0):.0f}%" for k in procs)
    if "postgres_aux_cpu_pct" in chain:
        parts += f" (+ postgres aux {chain['postgres_aux_cpu_pct']:.0f}%)"
    total = sum(chain.get(f"{k}_cpu_pct", 0) for k in (*procs, "postgres_aux"))
    cores = machine.get("cores") or 1
    tx = chain.get("transactions", 0)
    tx_ms = 1000 * chain["seconds"] / tx if tx else 0.0
    fsync = machine.get("tmp_fsync", {}).get("p50_ms", 0.0)
    waited = [k for k in ("daemon", "worker", "postgres") if f"{k}_runq_wait_pct" in chain]
    waits = ", ".join(f"{k} {chain.get(f'{k}_runq_wait_pct', 0):.0f}%" for k in waited)
    starved = max(chain.get(f"{k}_runq_wait_pct", 0) for k in waited)
    if chain.get(f"{busiest}_cpu_pct", 0) >= 80:
        verdict = f"CPU-bound in the {busiest}"
    elif "postgres_cpu_pct" in chain and total >= 80 * cores:
        verdict = f"CPU-bound: all processes together use {total:.0f}% of {cores} cores"
    elif starved >= 20:
        verdict = (
            "short of CPU: threads often runnable but waiting for a core (held by our other "
            "processes on 2 cores, or by other tenants)"
        )
    else:
        verdict = "no process near 100% of a core and little CPU wait: bound by commit latency"
    return (
        f"{label}: CPU % of one core: {parts}; waiting for a CPU: {waits}; "
        f"{chain.get('units_per_transaction', 0):.1f} commit units (steps, starts) "
        f"per transaction, one transaction per {tx_ms:.1f} ms of wall time (fsync p50 on /tmp: "
        f"{fsync:.1f} ms): {verdict}"
    )


def redact(url: str) -> str:
    """``url`` without its password, if it has one."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def waiting_note(w: dict[str, Any]) -> str:
    """What the waiting row's timers and restart figures are made of."""
    return (
        f"waiting: {w['runs']:,} runs started through the client in {w['start_s']:.1f} s, all "
        f"waiting after {w['start_to_all_waiting_s']:.1f} s; {w['timers']:,} of them wait with a "
        f"timeout: {w['timers_due']:,} came due by the check ({w['timers_due_before_kill']:,} "
        f"before the kill, {w['timers_overdue_at_restart']:,} while the daemon was down or "
        f"recovering, {w['timers_due_after_restart']:,} after the restart), "
        f"{w['timers_fired']:,} fired, {w['timers_fired_early']:,} early"
    )


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        default=",".join(w for w in WORKLOADS if w not in OPT_IN),
        help=f"comma-separated workloads among {', '.join(WORKLOADS)} (default: all but "
        f"{', '.join(OPT_IN)})",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also run chain, latency and event on DBOS and LlamaIndex workflows (makes "
        "bench/.peers-venv on first use)",
    )
    parser.add_argument(
        "--durability",
        choices=["full", "normal", "both"],
        default="full",
        help="synchronous=FULL (default); 'normal' or 'both' adds a synchronous=NORMAL column "
        "beside it",
    )
    parser.add_argument(
        "--profile", action="store_true", help="run chain once more under py-spy (daemon, worker)"
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        help="also run chain, latency and event (and tasks, fanout if selected) on this "
        "PostgreSQL database (postgresql://…; a fresh schema each time, dropped after), beside "
        "SQLite",
    )
    parser.add_argument(
        "--daemons",
        metavar="N[,N…]",
        help="with --db: also run chain on a cluster of each number of daemons sharing one "
        "schema, runs started round-robin over them (e.g. 1,2,3), and project it to 16 cores",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument(
        "--chain-runs",
        type=int,
        help=f"runs the chain workload starts (default {Sizes.chain_runs:,}; "
        f"{QUICK.chain_runs:,} with --quick)",
    )
    parser.add_argument(
        "--waiting-runs",
        type=int,
        help=f"runs the waiting workload starts (default {Sizes.waiting_runs:,}; "
        f"{QUICK.waiting_runs:,} with --quick)",
    )
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/DATE.json)")
    args = parser.parse_args(argv)
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(only) - set(WORKLOADS))
    if unknown:
        parser.error(
            f"unknown workload(s) {', '.join(unknown)}; choose among {', '.join(WORKLOADS)}"
        )
    args.only = [w for w in WORKLOADS if w in only]
    for name in ("chain_runs", "waiting_runs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.chain_runs is not None and args.chain_runs > MAX_WAITS:
        parser.error(f"--chain-runs: one connection awaits at most {MAX_WAITS:,} results")
    if args.db is not None and not pg.is_postgres(args.db):
        parser.error(f"--db takes a postgresql:// URL (SQLite is always run), not {args.db!r}")
    if args.daemons is not None:
        try:
            args.daemons = cluster.parse_counts(args.daemons)
        except ValueError as exc:
            parser.error(f"--daemons: {exc}")
        if args.db is None or "chain" not in args.only:
            parser.error("--daemons runs chain on PostgreSQL: give --db and keep chain in --only")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sz = QUICK if args.quick else Sizes()
    if args.chain_runs is not None:
        sz = replace(sz, chain_runs=args.chain_runs)
    if args.waiting_runs is not None:
        sz = replace(sz, waiting_runs=args.waiting_runs)
    out: Path = args.out or BENCH / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    normal = args.durability in ("normal", "both")
    peers = list(PEERS) if args.peers else []
    if peers or args.profile:
        ensure_peers_venv()
    results: dict[str, Any] = {
        "machine": machine_info(),
        "config": {
            "quick": args.quick,
            "only": args.only,
            "durability": args.durability,
            "peers": peers,
            "sizes": asdict(sz),
        },
        "notes": [],
    }
    if args.db:
        results["config"]["db"] = redact(args.db)
    if args.daemons:
        results["config"]["daemons"] = args.daemons
    started = time.monotonic()

    with Stack("FULL") as stack:
        asyncio.run(workloads.chain(stack, max(sz.chain_runs // 10, 5), sz.steps, False))  # warm up
        for workload in [w for w in args.only if w in STACK_WORKLOADS]:
            rounds = [run_ours(stack, workload, sz)]
            if workload in PEER_WORKLOADS and peers:
                rounds += interleave_peers(stack, workload, sz, peers, results, rounds[0])
            results[workload] = median_of(rounds)
            results.setdefault("rounds", {})[workload] = rounds
        if "cli" in args.only:
            log(f"cli: grctl --help, list, list --json; median CPU of {sz.cli_rounds} runs each")
            results["cli"] = cli.cli(stack, sz.cli_rounds)

    if normal:
        with Stack("NORMAL") as stack:
            asyncio.run(workloads.chain(stack, max(sz.chain_runs // 10, 5), sz.steps, False))
            for workload in [w for w in args.only if w in STACK_WORKLOADS]:
                results.setdefault("normal", {})[workload] = run_ours(stack, workload, sz)

    if args.db and any(w in STACK_WORKLOADS for w in args.only):
        with Stack("FULL", db=args.db) as stack:
            assert stack.pg is not None
            if args.quick:
                stack.stats_settle_s = 0.0  # xact_commit may then miss the last second's
            results["postgres_server"] = {
                "version": stack.pg.version,
                "synchronous_commit": stack.pg.synchronous_commit,
                "fsync": stack.pg.fsync,
                "database": stack.pg.database,
                "schema": stack.schema,
            }
            asyncio.run(workloads.chain(stack, max(sz.chain_runs // 10, 5), sz.steps, False))
            for workload in [w for w in args.only if w in STACK_WORKLOADS]:
                results.setdefault("postgres", {})[workload] = run_ours(stack, workload, sz)

    if args.daemons:
        results["cluster"] = cluster.run(
            args.db, args.daemons, sz.chain_runs, sz.steps, args.quick, log
        )

    if "idle" in args.only:
        log(f"idle: {sz.idle_runs:,} waiting runs, {sz.idle_window_s:.0f} s window")
        with Stack("FULL") as stack:
            results["idle"] = asyncio.run(workloads.idle(stack, sz.idle_runs, sz.idle_window_s))

    if "growth" in args.only:
        log(f"growth: levels {', '.join(f'{x:,}' for x in sz.growth_levels)} finished steps")
        results["growth"] = growth_mod.growth(
            list(sz.growth_levels), sz.growth_runs, sz.steps, rounds=sz.growth_rounds
        )
        results["notes"].append(
            "growth: the finished steps in the database were made by cloning one real run's rows "
            "with SQL (the daemon stopped), not by running them; then chain runs on top"
        )

    if "waiting" in args.only:
        log(f"waiting: {sz.waiting_runs:,} waiting runs, then kill -9 and restart the daemon")
        with Stack("FULL") as stack:
            results["waiting"] = asyncio.run(
                waiting.waiting(
                    stack,
                    sz.waiting_runs,
                    sz.waiting_in_flight,
                    sz.waiting_timer_share,
                    sz.waiting_timeout_s,
                    sz.waiting_cold_events,
                    sz.waiting_after_restart_s,
                )
            )
        results["notes"].append(waiting_note(results["waiting"]))

    if "retention" in args.only:
        log(
            f"retention: {sz.retention_runs:,} runs at {sz.retention_rate:.0f}/s, "
            f"--retention {sz.retention}"
        )
        results["retention"] = retention_mod.retention(
            sz.retention_runs,
            rate=sz.retention_rate,
            retention=sz.retention,
            sample_s=sz.retention_sample_s,
        )

    if args.profile:
        results["profile"] = run_profile(sz, out, args.db)

    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["bench_seconds"] = time.monotonic() - started
    if "chain" in results:
        results["notes"].append(bound_note(results["chain"], results["machine"]))
    if "chain" in results.get("postgres", {}):
        results["notes"].append(
            bound_note(results["postgres"]["chain"], results["machine"], "chain on PostgreSQL")
        )

    console = Console(record=True, width=None if sys.stdout.isatty() else 200)
    shown_peers = [p for p in peers if p in results.get("peers", {})]
    console.print(build_table(results, shown_peers, normal))
    for note in results["notes"]:
        console.print(f"• {note}")
    if "cluster" in results:
        for table in cluster.build_tables(results["cluster"]):
            console.print(table)
        console.print(f"• {cluster.model_note(results['cluster']['projected_cores'])}")
    if "profile" in results:
        print_profile(console, results["profile"])
    m = results["machine"]
    console.print(
        f"machine: {m['cpu_model']}, {m['cores']} cores, Python {m['python']}, kernel "
        f"{m['kernel']}, load {m['loadavg_at_start']} → {m['loadavg_at_end']}, fsync p50 "
        f"{m['tmp_fsync']['p50_ms']:.2f} ms, commit {m['git_commit'][:12]}, "
        f"{m['bench_seconds']:.0f} s"
    )
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    out.with_suffix(".txt").write_text(console.export_text())
    out.with_suffix(".md").write_text(markdown_table(results, shown_peers, normal))
    console.print(f"results: {out}")
    return 0


def run_profile(sz: Sizes, out: Path, db: str | None = None) -> dict[str, Any]:
    log(f"profile: chain under py-spy (daemon and worker){' on PostgreSQL' if db else ''}")
    profile: dict[str, Any] = {"backend": "postgres" if db else "sqlite"}
    with Stack("FULL", db=db) as stack:
        asyncio.run(workloads.chain(stack, max(sz.chain_runs // 10, 5), sz.steps, False))
        spies = {}
        for name, pid in stack.pids().items():
            raw = out.with_name(f"{out.stem}-{name}.collapsed.txt")
            spies[name] = (profiling.start(PY_SPY, pid, raw), raw)
        time.sleep(0.5)  # py-spy attaches
        try:
            chain = asyncio.run(workloads.chain(stack, sz.chain_runs, sz.steps, False))
        finally:
            errors = {name: profiling.stop(proc) for name, (proc, _) in spies.items()}
    for name, (_, raw) in spies.items():
        stacks = profiling.read_stacks(raw)
        speedscope = out.with_name(f"{out.stem}-{name}.speedscope.json")
        if stacks:
            profiling.write_speedscope(stacks, f"grctl {name} (chain)", speedscope)
        profile[name] = {
            "collapsed": str(raw),
            "speedscope": str(speedscope) if stacks else None,
            **profiling.summarise(stacks),
            "py_spy_stderr": errors[name].strip()[-300:] if not stacks else "",
        }
    profile["chain_steps_per_s_under_profiler"] = chain["steps_per_s"]
    return profile


def print_profile(console: Console, profile: dict[str, Any]) -> None:
    for name in ("daemon", "worker"):
        info = profile.get(name)
        if not info:
            continue
        table = Table(
            title=f"{name}: top {profiling.TOP} functions by own time ({info['busy_samples']} "
            f"busy samples; {info['idle_pct']:.0f}% of all samples were idle waits, left out)"
        )
        table.add_column("own %", justify="right")
        table.add_column("total %", justify="right")
        table.add_column("function (file)")
        for row in info["top_own"]:
            note = profiling.FRAME_NOTES.get(row["function"])
            label = escape(f"{row['function']} ({note})" if note else row["function"])
            table.add_row(f"{row['own_pct']:.1f}", f"{row['total_pct']:.1f}", label)
        console.print(table)
        for frame, pct in info.get("watched_total_pct", {}).items():
            if name == "daemon" and pct:
                console.print(
                    f"{name}: {frame} (the commit transaction) in {pct:.0f}% of busy samples"
                )
        if info.get("py_spy_stderr"):
            console.print(f"py-spy: {info['py_spy_stderr']}")
    console.print(
        f"profiles: {profile.get('daemon', {}).get('speedscope')}, "
        f"{profile.get('worker', {}).get('speedscope')} (open at speedscope.app)"
    )


if __name__ == "__main__":
    sys.exit(main())
