"""Prometheus metrics (``--metrics HOST:PORT``): the runtime only counts, a collector exports.

Theory of operation. The step path pays for plain ints in dicts and nothing else: once a unit is
durable the runtime hands its decisions to ``Tally.committed``, which reads the history ops the
engine already built (``workflow_started``, ``step_*``, ``workflow_<outcome>``); the group
commit hands each batch's size and latency to ``Tally.batch``. Histograms are bucket counts in
lists. No prometheus-client object is touched per step: its locks and label lookups would cost
more than the counting itself.

At scrape time the HTTP thread of prometheus-client asks the event loop for a ``Snapshot``
(copies of the tallies, the dispatch queues and workers held in memory, and two cheap reads: the
runs ``waiting`` by the status index, and the database size) and turns it into metric families
there. Nothing is read from the database between scrapes.

Every daemon serves its own metrics: in a cluster, the runs it started, the steps it committed,
its workers and its queues, and the waiting runs of the partitions it owns. Sum them across the
members; counters restart from zero when a daemon restarts, as Prometheus expects.

``prometheus_client`` is imported only by ``start_exporter``, so a daemon without ``--metrics``
does not need the ``grctl[metrics]`` extra.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grctl.home import Address
from grctl_daemon.storage import base as rec

if TYPE_CHECKING:
    from grctl_daemon.engine import transitions as tr
    from grctl_daemon.runtime import Runtime

log = logging.getLogger("grctl.daemon")

STEP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
SCRAPE_TIMEOUT_S = 5.0  # a scrape that waits longer on the daemon fails (HTTP 500): alert on it
DB_READ_TIMEOUT_S = 2.0  # the database gauges are left out of a scrape when reads take longer
# Steps whose start was counted but not their end: a run that left this daemon mid-step (its
# partition moved) never ends here. Past this many the oldest are forgotten.
MAX_OPEN_STEPS = 100_000

# History kinds that end a step, and the outcome label they count under.
STEP_OUTCOMES = {
    "step_completed": "completed",
    "step_failed": "failed",
    "step_timed_out": "timed_out",
    "worker_lost": "worker_lost",
}
RUN_OUTCOMES = {
    "workflow_completed": "completed",
    "workflow_failed": "failed",
    "workflow_cancelled": "cancelled",
    "workflow_terminated": "terminated",
}
INSTALL_HINT = "pip install 'grctl[metrics]'"


class MetricsError(Exception):
    """The metrics endpoint cannot be served (the extra is missing, the port is taken)."""


@dataclass
class Histogram:
    """Bucket counts (not cumulative; one more than the bounds, for +Inf) and the sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total)

    def cumulative(self) -> list[tuple[str, float]]:
        """The ``(le, count)`` pairs prometheus-client's HistogramMetricFamily takes."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


class Tally:
    """What the daemon counts as it goes: plain ints, read only at scrape time."""

    def __init__(self) -> None:
        self.runs_started: dict[str, int] = {}
        self.runs_ended: dict[tuple[str, str], int] = {}
        self.steps: dict[tuple[str, str], int] = {}
        self.step_seconds: dict[str, Histogram] = {}
        self.commit_seconds = Histogram(COMMIT_BUCKETS_S)
        self.batch_units = Histogram(BATCH_BUCKETS)
        self._step_began: dict[str, int] = {}  # run_id → ts_ms of its step_started

    def committed(self, unit: list[tr.Decision]) -> None:
        """A durable unit: count the runs it started and ended and the steps it ended.

        On the step path (once per durable unit): one pass over the ops, a type check each.
        """
        history = rec.AppendHistory
        for d in unit:
            for op in d.ops:
                if type(op) is not history:
                    continue
                kind = op.kind
                if kind == "step_started":
                    began = self._step_began
                    began[op.run_id] = op.ts_ms
                    if len(began) > MAX_OPEN_STEPS:
                        del began[next(iter(began))]
                    continue
                state = d.state
                if state is None:
                    continue
                wtype = state.workflow_type
                outcome = STEP_OUTCOMES.get(kind)
                if outcome is not None:
                    key = (wtype, outcome)
                    self.steps[key] = self.steps.get(key, 0) + 1
                    start_ms = self._step_began.pop(op.run_id, None)
                    if start_ms is not None:
                        hist = self.step_seconds.get(wtype)
                        if hist is None:
                            hist = self.step_seconds[wtype] = Histogram(STEP_BUCKETS_S)
                        hist.observe((op.ts_ms - start_ms) / 1000)
                elif kind == "workflow_started":
                    self.runs_started[wtype] = self.runs_started.get(wtype, 0) + 1
                elif kind in RUN_OUTCOMES:
                    key = (wtype, RUN_OUTCOMES[kind])
                    self.runs_ended[key] = self.runs_ended.get(key, 0) + 1
                    self._step_began.pop(op.run_id, None)

    def batch(self, units: int, seconds: float) -> None:
        """One group commit: how many units it carried and how long it took to be durable."""
        self.commit_seconds.observe(seconds)
        self.batch_units.observe(units)


@dataclass
class Snapshot:
    """Everything one scrape reports, copied on the event loop."""

    runs_started: dict[str, int]
    runs_ended: dict[tuple[str, str], int]
    steps: dict[tuple[str, str], int]
    step_seconds: dict[str, Histogram]
    commit_seconds: Histogram
    batch_units: Histogram
    ready: dict[str, int]
    oldest_ready_s: float
    steps_in_flight: int
    workers: int
    waiting: int | None
    database_bytes: int | None
    writable: bool


async def snapshot(runtime: Runtime) -> Snapshot:
    """Copy the tallies and in-memory gauges, then read the two database gauges."""
    tally: Tally = runtime.tally  # type: ignore[assignment]
    now = time.monotonic()
    ready = dict.fromkeys(runtime.types, 0)
    oldest = now
    for wtype, queue in runtime.dispatcher.queues().items():
        ready[wtype] = len(queue)
        head = queue.oldest()
        if head is not None:
            oldest = min(oldest, head)
    workers = runtime.dispatcher.workers.values()
    snap = Snapshot(
        runs_started=dict(tally.runs_started),
        runs_ended=dict(tally.runs_ended),
        steps=dict(tally.steps),
        step_seconds={t: h.copy() for t, h in tally.step_seconds.items()},
        commit_seconds=tally.commit_seconds.copy(),
        batch_units=tally.batch_units.copy(),
        ready=ready,
        oldest_ready_s=now - oldest,
        steps_in_flight=sum(len(s.inflight) for s in workers),
        workers=len(workers),
        waiting=None,
        database_bytes=None,
        writable=bool(runtime.storage.health()["writable"]),
    )
    storage = runtime.storage
    partitions = sorted(storage.owned) if storage.members() else None
    try:
        snap.waiting, snap.database_bytes = await asyncio.wait_for(
            asyncio.gather(storage.count_runs("waiting", partitions), storage.database_bytes()),
            DB_READ_TIMEOUT_S,
        )
    except Exception as exc:  # noqa: BLE001 - a database fault must not fail the whole scrape
        # The scrape still reports everything held in memory; grctl_database_writable and the
        # daemon's log say what is wrong with the database.
        log.debug("metrics: database gauges unavailable: %s", exc)
    return snap


class Exporter:
    """The HTTP endpoint: prometheus-client's server, on its own thread, with our collector."""

    def __init__(self, address: Address, loop: asyncio.AbstractEventLoop) -> None:
        try:
            import prometheus_client
            from prometheus_client import registry as prom_registry
        except ImportError:
            raise MetricsError(
                f"--metrics needs the prometheus-client package; install it with: {INSTALL_HINT}"
            ) from None
        self.loop = loop
        self.runtime: Runtime | None = None  # set once the runtime exists
        registry = prom_registry.CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        prometheus_client.ProcessCollector(registry=registry)
        try:
            self._server, self._thread = prometheus_client.start_http_server(
                address.port, addr=address.host or "0.0.0.0", registry=registry
            )
        except OSError as exc:
            raise MetricsError(
                f"--metrics {address}: cannot serve there ({exc.strerror or exc}); pick a free "
                "port, or stop what uses it"
            ) from None
        self.address = address

    def read(self) -> Snapshot | None:
        """Called on the HTTP thread: the event loop takes the snapshot."""
        runtime = self.runtime
        if runtime is None or self.loop.is_closed():
            return None
        fut = asyncio.run_coroutine_threadsafe(snapshot(runtime), self.loop)
        return fut.result(timeout=SCRAPE_TIMEOUT_S)

    async def close(self) -> None:
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()


class _Collector:
    """Turns one Snapshot into metric families; prometheus-client writes the text format."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snap = self.exporter.read()
        if snap is None:
            return
        c = CounterMetricFamily(
            "grctl_runs_started", "Runs started by this daemon.", labels=["workflow_type"]
        )
        for wtype, n in sorted(snap.runs_started.items()):
            c.add_metric([wtype], n)
        yield c
        c = CounterMetricFamily(
            "grctl_runs_ended",
            "Runs ended, by outcome (completed, failed, cancelled, terminated).",
            labels=["workflow_type", "outcome"],
        )
        for (wtype, outcome), n in sorted(snap.runs_ended.items()):
            c.add_metric([wtype, outcome], n)
        yield c
        c = CounterMetricFamily(
            "grctl_steps",
            "Step attempts ended, by outcome (completed, failed, timed_out, worker_lost).",
            labels=["workflow_type", "outcome"],
        )
        for (wtype, outcome), n in sorted(snap.steps.items()):
            c.add_metric([wtype, outcome], n)
        yield c
        h = HistogramMetricFamily(
            "grctl_step_duration_seconds",
            "Step attempts from dispatch to their end, as the daemon saw them (ms resolution).",
            labels=["workflow_type"],
        )
        for wtype, hist in sorted(snap.step_seconds.items()):
            h.add_metric([wtype], hist.cumulative(), hist.total)
        yield h
        yield _histogram(
            "grctl_commit_duration_seconds",
            "Group commits from write to durable (faults waited out included).",
            snap.commit_seconds,
        )
        yield _histogram(
            "grctl_commit_batch_units", "Units (decisions) per group commit.", snap.batch_units
        )
        g = GaugeMetricFamily(
            "grctl_runs_ready",
            "Runs with a step ready but not yet dispatched (no worker with a free slot).",
            labels=["workflow_type"],
        )
        for wtype, n in sorted(snap.ready.items()):
            g.add_metric([wtype], n)
        yield g
        yield GaugeMetricFamily(
            "grctl_oldest_ready_run_age_seconds",
            "How long the run longest ready has waited for a worker (0 when none waits).",
            value=snap.oldest_ready_s,
        )
        yield GaugeMetricFamily(
            "grctl_steps_in_flight", "Steps running on workers now.", value=snap.steps_in_flight
        )
        if snap.waiting is not None:
            yield GaugeMetricFamily(
                "grctl_runs_waiting",
                "Runs waiting for an event (in the partitions this daemon owns).",
                value=snap.waiting,
            )
        yield GaugeMetricFamily(
            "grctl_workers_connected", "Workers connected to this daemon.", value=snap.workers
        )
        if snap.database_bytes is not None:
            yield GaugeMetricFamily(
                "grctl_database_size_bytes",
                "The database on disk (SQLite: file, WAL and shm; PostgreSQL: the database).",
                value=snap.database_bytes,
            )
        yield GaugeMetricFamily(
            "grctl_database_writable",
            "1 while commits go through, 0 while they wait on a database fault.",
            value=1 if snap.writable else 0,
        )


def _histogram(name: str, doc: str, hist: Histogram) -> Any:
    from prometheus_client.core import HistogramMetricFamily

    return HistogramMetricFamily(name, doc, buckets=hist.cumulative(), sum_value=hist.total)
