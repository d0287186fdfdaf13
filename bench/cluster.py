"""``--daemons N[,N…]``: the chain workload on a cluster of N daemons sharing one PostgreSQL.

For each N: N daemons, each on a home of its own, on ONE fresh schema of the ``--db`` database
(``--lease-timeout 1``, so that joining and rebalancing settle in a second or two), and as many
workers per daemon as the single-daemon chain has (one, ``WORKER_CONCURRENCY``), each on its
daemon's home (a worker serves only the daemon it connects to: no fan-out). Once every member
holds ``64 // N`` or ``64 // N + 1`` partitions (``daemon status``' cluster section), the chain
workload of ``bench/workloads.py`` runs unchanged, its runs started round-robin over the N
daemons' sockets: a run whose partition another member holds is forwarded to it, its start
and its result alike (``forwarded_pct`` counts them).

Measured as the single-daemon PostgreSQL chain is (``bench/harness.py``, ``bench/pg.py``):
steps/s, CPU per step of each process class (daemons in sum and each, workers, the PostgreSQL
backends serving the schema — every member's connections carry the same ``application_name``
— and the server's aux processes), and ``xact_commit`` per step.

The projection to a bigger machine (``project``), per N measured, from the CPU per step ``c``
of each class (µs, summed over the class's processes):

* cores each class needs at the measured rate: ``c × steps/s / 10⁶`` (its CPU % / 100);
* PostgreSQL is one server shared by every member: its CPU per step (backends + aux) stays as
  measured whatever the number of members; daemons and workers scale out: the N members split
  the steps, and each daemon and each worker, one Python process on one event loop, uses at
  most about one core, so those two classes have N cores at most;
* on a box of C cores (16) running it all, the throughput is bounded by every class at once:
  ``min(C / Σc, N / c_daemon, N / c_worker)`` (× 10⁶ steps/s). The last two lift as members
  are added, the first does not: ``C / Σc`` is what C cores carry with enough members, and
  ``⌈that × c_daemon⌉`` daemons (likewise workers) are enough;
* with PostgreSQL alone on the C cores (members on other machines): ``C / (c_pg + c_aux)``.

The model is linear: it keeps each class's CPU per step as measured on this (2-core, shared)
machine, where every process competes for the cores and batches are sized by what arrives;
it ignores lock and WAL contention in PostgreSQL, the WAL writer being one process, memory,
disk and the network. An upper bound, not a forecast.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from typing import Any

from rich.table import Table

from bench import workloads
from bench.harness import Stack, cpu_seconds, fmt, runq_wait_seconds
from grctl.client import Client
from grctl_daemon.storage.base import PARTITIONS, partition_of

LEASE_TIMEOUT_S = 1.0
BALANCE_TIMEOUT_S = 60.0
PROJECTED_CORES = 16
# The process classes whose CPU per step the projection uses (the client is the bench's own).
CLASSES = ("daemon", "worker", "postgres", "postgres_aux")
CLASS_LABELS = {
    "daemon": "daemons",
    "worker": "workers",
    "postgres": "postgres backends",
    "postgres_aux": "postgres aux",
}


def parse_counts(text: str) -> list[int]:
    """``"1,2,3"`` → ``[1, 2, 3]``; ValueError unless each is a whole number from 1 to 64."""
    counts = [int(x) for x in text.split(",") if x.strip()]
    if not counts or any(not 1 <= n <= PARTITIONS for n in counts):
        raise ValueError(f"daemon counts run from 1 to {PARTITIONS}, not {text!r}")
    return counts


class RoundRobin:
    """One client per member: starts go to each in turn; ``daemon_status`` sums the commits.

    Stands in for a ``Client`` in ``workloads.chain``, which starts runs, awaits each result
    through the handle (so through the member that started it) and reads the commits.
    """

    def __init__(self, clients: list[Client], submitted: list[tuple[str, int]]) -> None:
        self.clients = clients
        self.submitted = submitted  # (workflow_id, member index) of every start, in order
        self._turn = itertools.cycle(range(len(clients)))

    async def start_workflow(self, workflow_type: str, workflow_id: str, *args: Any) -> Any:
        member = next(self._turn)
        self.submitted.append((workflow_id, member))
        return await self.clients[member].start_workflow(workflow_type, workflow_id, *args)

    async def daemon_status(self) -> dict[str, Any]:
        statuses = await asyncio.gather(*(c.daemon_status() for c in self.clients))
        commits: dict[str, float] = {}
        for status in statuses:
            for key, value in (status.get("commits") or {}).items():
                commits[key] = commits.get(key, 0) + value
        return {"commits": commits}

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients))


class ClusterStack:
    """N Stacks on one schema: the first makes, measures and drops it, the others join it.

    Stands in for a Stack in ``workloads.chain``: ``client()`` (round-robin), ``cpu()`` and
    ``runq_wait()`` (daemons and workers summed, and each as ``daemon_<i>``/``worker_<i>``;
    the PostgreSQL processes as the first Stack finds them), ``pg``, ``stats_settle_s`` and
    ``db_counters()`` (the first Stack's).
    """

    def __init__(self, db: str, n: int) -> None:
        args = ["--lease-timeout", str(LEASE_TIMEOUT_S)]
        self.first = Stack("FULL", db=db, daemon_args=args)
        self.members = [self.first]
        self.members += [Stack("FULL", join=self.first, daemon_args=args) for _ in range(n - 1)]
        self.pg = self.first.pg
        self.submitted: list[tuple[str, int]] = []
        self._running = contextlib.ExitStack()

    @property
    def stats_settle_s(self) -> float:
        return self.first.stats_settle_s

    def __enter__(self) -> ClusterStack:
        # Torn down in reverse: the joiners first (a clean stop hands their partitions back),
        # the first last (it drops the schema); on a failed start, those started so far.
        with contextlib.ExitStack() as started:
            for member in self.members:
                started.enter_context(member)
            self._running = started.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._running.close()

    def db_counters(self) -> dict[str, int]:
        return self.first.db_counters()

    def cpu(self) -> dict[str, float]:
        out = self.first.cpu()
        for i, member in enumerate(self.members):
            for name, pid in member.pids().items():
                out[f"{name}_{i}"] = cpu_seconds(pid)
        return {**out, **self._sums(out)}

    def runq_wait(self) -> dict[str, float]:
        out = self.first.runq_wait()
        for i, member in enumerate(self.members):
            for name, pid in member.pids().items():
                out[f"{name}_{i}"] = runq_wait_seconds(pid)
        return {**out, **self._sums(out)}

    def _sums(self, out: dict[str, float]) -> dict[str, float]:
        n = len(self.members)
        return {name: sum(out[f"{name}_{i}"] for i in range(n)) for name in ("daemon", "worker")}

    async def client(self) -> RoundRobin:
        clients = await asyncio.gather(*(m.client() for m in self.members))
        return RoundRobin(list(clients), self.submitted)

    async def statuses(self) -> list[dict[str, Any]]:
        """Each member's ``daemon status``."""
        client = await self.client()
        try:
            return await asyncio.gather(*(c.daemon_status() for c in client.clients))
        finally:
            await client.close()

    def shares(self, status: dict[str, Any]) -> list[int]:
        """Partitions per member, in the members' order here, as ``status`` shows them."""
        by_pid = {
            m["pid"]: m["partitions"] for m in (status.get("cluster") or {}).get("members", [])
        }
        return [by_pid.get(m.pids()["daemon"], 0) for m in self.members]

    async def wait_balanced(self, deadline_s: float = BALANCE_TIMEOUT_S) -> float:
        """Until every member, as each of them sees it, holds ``64 // N`` or ``64 // N + 1``
        partitions and all 64 are held; seconds it took."""
        n = len(self.members)
        t0 = time.monotonic()
        while True:
            views = [self.shares(s) for s in await self.statuses()]
            if all(
                sum(v) == PARTITIONS and all(PARTITIONS // n <= x <= PARTITIONS // n + 1 for x in v)
                for v in views
            ):
                return time.monotonic() - t0
            if time.monotonic() - t0 > deadline_s:
                raise RuntimeError(f"{n} daemons not balanced after {deadline_s:.0f} s: {views}")
            await asyncio.sleep(0.1)

    def idle_xacts_per_s(self, window_s: float) -> float:
        """Transactions per second the members commit with no runs to serve: lease renewals,
        takeover and balance checks, every third of a lease each. Read once the workload's own
        counts are published (busy backends publish them at most a second late)."""
        before = self.db_counters()
        time.sleep(window_s)
        after = self.db_counters()
        probe = after["probe_xacts"] - before["probe_xacts"]
        return (after["xact_commit"] - before["xact_commit"] - probe) / window_s

    def forwarded(self, started: list[tuple[str, int]], names: list[str]) -> int:
        """How many of ``started`` went to a member other than their partition's holder
        (``names``: each member's name, as its status gives it)."""
        assert self.pg is not None
        holders = {
            r["id"]: r["holder"]
            for r in self.pg.rows(f'SELECT id, holder FROM "{self.first.schema}".partitions')
        }
        return sum(
            1
            for workflow_id, member in started
            if holders.get(partition_of(workflow_id)) != names[member]
        )


def measure(db: str, n: int, runs: int, steps: int, quick: bool, log: Any) -> dict[str, Any]:
    """One point of the curve: the chain on ``n`` daemons (see the module's docstring)."""
    with ClusterStack(db, n) as cluster:
        if quick:
            cluster.first.stats_settle_s = 0.0  # xact_commit may then miss the last second's
        balance_s = asyncio.run(cluster.wait_balanced())
        log(f"chain on {n} daemon(s): balanced in {balance_s:.1f} s; {runs} runs round-robin")
        asyncio.run(workloads.chain(cluster, max(runs // 10, 5), steps, False))  # warm up
        cluster.submitted.clear()
        point = asyncio.run(workloads.chain(cluster, runs, steps))
        statuses = asyncio.run(cluster.statuses())
        # The chain's xact_commit spans its wall time and one settle: the members' lease
        # upkeep over that span is in it too.
        idle = cluster.idle_xacts_per_s(1.0 if quick else cluster.stats_settle_s)
        point.update(
            idle_xacts_per_s=idle,
            pg_upkeep_xact_commit_per_step=idle
            * (point["seconds"] + cluster.stats_settle_s)
            / point["steps"],
            daemons=n,
            balance_s=balance_s,
            schema=cluster.first.schema,
            forwarded_pct=100
            * cluster.forwarded(cluster.submitted, [s["cluster"]["member"] for s in statuses])
            / max(len(cluster.submitted), 1),
            partitions=cluster.shares(statuses[0]),
            member_transactions=[s["commits"]["transactions"] for s in statuses],
            total_cpu_us_per_step=sum(point[f"{k}_cpu_us_per_step"] for k in (*CLASSES, "client")),
        )
    return point


def run(db: str, counts: list[int], runs: int, steps: int, quick: bool, log: Any) -> dict[str, Any]:
    """The chain on each number of daemons in ``counts``, and the projection of each."""
    points = [measure(db, n, runs, steps, quick, log) for n in counts]
    return {
        "lease_timeout_s": LEASE_TIMEOUT_S,
        "points": points,
        "projection": [project(p) for p in points],
        "projected_cores": PROJECTED_CORES,
    }


def project(point: dict[str, Any], cores: int = PROJECTED_CORES) -> dict[str, Any]:
    """Steps/s a ``cores``-core box could carry, from ``point``'s CPU per step (module doc).

    A bound whose CPU per step is 0 (none measured: /proc counts 10 ms ticks) is None.
    """
    n = point["daemons"]
    c = {k: point[f"{k}_cpu_us_per_step"] for k in CLASSES}
    rate = point["steps_per_s"]

    def bound(cpu_cores: float, us_per_step: float) -> float | None:
        return cpu_cores * 1e6 / us_per_step if us_per_step > 0 else None

    box = bound(cores, sum(c.values()))
    daemons = bound(n, c["daemon"])
    workers = bound(n, c["worker"])
    return {
        "daemons": n,
        **{f"{k}_cores": c[k] * rate / 1e6 for k in CLASSES},
        "daemons_bound": daemons,
        "workers_bound": workers,
        "box_bound": box,
        "bound_with_n": min((b for b in (box, daemons, workers) if b is not None), default=None),
        "daemon_cores_for_box": (box or 0) * c["daemon"] / 1e6,
        "worker_cores_for_box": (box or 0) * c["worker"] / 1e6,
        # Members as measured here: one daemon and one worker each, each at most one core.
        "members_for_box": math.ceil((box or 0) * max(c["daemon"], c["worker"]) / 1e6),
        "postgres_alone_bound": bound(cores, c["postgres"] + c["postgres_aux"]),
    }


# -- the tables ---------------------------------------------------------------------------------


def _rows(n_max: int) -> list[tuple[str, str]]:
    rows = [
        ("steps/s", "steps_per_s"),
        ("runs/s", "runs_per_s"),
        ("CPU µs/step, all processes", "total_cpu_us_per_step"),
        ("daemons CPU µs/step (sum)", "daemon_cpu_us_per_step"),
    ]
    rows += [(f"  daemon {i + 1} CPU µs/step", f"daemon_{i}_cpu_us_per_step") for i in range(n_max)]
    rows += [
        ("workers CPU µs/step", "worker_cpu_us_per_step"),
        ("client CPU µs/step", "client_cpu_us_per_step"),
        ("postgres backends CPU µs/step", "postgres_cpu_us_per_step"),
        ("postgres aux processes CPU µs/step", "postgres_aux_cpu_us_per_step"),
        ("xact_commit per step (pg_stat_database)", "pg_xact_commit_per_step"),
        ("  of it lease upkeep (idle rate × span)", "pg_upkeep_xact_commit_per_step"),
        ("group commits per step (all daemons)", "transactions_per_step"),
        ("WAL bytes per step", "pg_wal_bytes_per_step"),
        ("daemons CPU % of a core (sum)", "daemon_cpu_pct"),
    ]
    rows += [(f"  daemon {i + 1} CPU % of a core", f"daemon_{i}_cpu_pct") for i in range(n_max)]
    rows += [
        ("workers CPU % of a core (sum)", "worker_cpu_pct"),
        ("postgres backends CPU % of a core", "postgres_cpu_pct"),
        ("postgres aux CPU % of a core", "postgres_aux_cpu_pct"),
        ("daemons waiting for a CPU % (sum)", "daemon_runq_wait_pct"),
        ("runs started at a non-owner (forwarded) %", "forwarded_pct"),
        ("s until balanced", "balance_s"),
    ]
    return rows


def _table(title: str, counts: list[int], rows: list[tuple[str, list[str]]]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    for n in counts:
        table.add_column(f"{n} daemon{'s' if n > 1 else ''}", justify="right")
    for label, cells in rows:
        table.add_row(label, *cells)
    return table


def build_tables(cluster: dict[str, Any]) -> list[Table]:
    """The measured curve and the projection, a column per N each."""
    points, projection = cluster["points"], cluster["projection"]
    counts = [p["daemons"] for p in points]
    runs = int(points[0]["runs"]) if points else 0
    measured = [(label, [fmt(p.get(key)) for p in points]) for label, key in _rows(max(counts))]
    measured.append(
        ("partitions per daemon", ["/".join(map(str, p["partitions"])) for p in points])
    )
    cores = cluster["projected_cores"]
    projected = [
        (f"{CLASS_LABELS[k]}: cores used now", [f"{q[f'{k}_cores']:.2f}" for q in projection])
        for k in CLASSES
    ]
    for label, key in (
        ("≤ N daemons, one core each (steps/s)", "daemons_bound"),
        ("≤ N workers, one core each", "workers_bound"),
        (f"≤ {cores} cores for all classes", "box_bound"),
        ("bound with N members (least of the three)", "bound_with_n"),
        (f"PostgreSQL alone on {cores} cores", "postgres_alone_bound"),
    ):
        projected.append((label, [fmt(q[key]) for q in projection]))
    projected.append(
        (
            f"cores for daemons + workers at the {cores}-core bound",
            [
                f"{q['daemon_cores_for_box']:.1f} + {q['worker_cores_for_box']:.1f}"
                for q in projection
            ],
        )
    )
    projected.append(
        (
            "members for it (a daemon + a worker each)",
            [str(q["members_for_box"]) for q in projection],
        )
    )
    return [
        _table(
            f"chain ({runs:,} runs) on N daemons sharing one PostgreSQL schema (lease "
            f"{cluster['lease_timeout_s']:g} s; runs started round-robin over the daemons)",
            counts,
            measured,
        ),
        _table(f"projection to {cores} cores (CPU per step as measured here)", counts, projected),
    ]


def model_note(cores: int = PROJECTED_CORES) -> str:
    return (
        f"projection (steps/s; c = a class's CPU µs per step as measured): 'cores now' = c × "
        f"steps/s; PostgreSQL is shared, its c (backends + aux) fixed whatever N; daemons and "
        f"workers scale out, each process at most one core, so ≤ N × 10⁶/c for each; all on "
        f"one {cores}-core box ≤ {cores} × 10⁶/Σc; 'bound with N' is the least of the three, "
        f"and 'members for it' how many daemon + worker pairs (one core each at most) carry "
        f"the {cores}-core figure; 'PG alone' = {cores} × 10⁶/(c_pg + c_aux), the members on "
        "other machines. Linear in CPU alone: no lock, WAL or disk contention; an upper bound"
    )
