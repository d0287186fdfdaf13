"""The ``waiting`` workload: N runs waiting for events, the daemon's memory, a crash, a restart.

1. N BenchWaiting runs are started through the client, ``in_flight`` start requests at a time
   on one connection. Every ``1/timer_share``-th run waits with a timeout (whole seconds drawn
   between ``timeout_s``, from a fixed seed), so the daemon also holds timers, some of which
   come due during the workload.
2. Once every run is waiting (or, for a timed one, ended by its timeout step): the daemon's RSS,
   and RSS per waiting run over that of the empty daemon measured before the first start.
3. The daemon is killed with SIGKILL and started again on the same home. From the spawn: until
   a client connects (the daemon answers its hello), and until a ``describe`` of a random
   waiting run answers on that connection; the RSS then.
4. Cold events: once the worker is back, ``go`` is sent to random waiting runs untouched since
   the restart, one at a time, send → ``result()``. Then the workload waits until
   ``after_restart_s`` have passed since the daemon answered, so that timers also come due on
   the restarted daemon.
5. Timers: from each timed run's history, its due time (the start step's commit + the timeout)
   and when it fired (``wait_timed_out``, counted only if the timeout step then completed).
   Every timer due at the check must fire (each is waited for up to ``TIMER_PATIENCE_S``).
   Lateness is reported for the timers due while the daemon served (before the kill or after
   the restart); the ones that came due while it was down or recovering are counted apart, with
   when the last of them fired after the restart.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from bench.harness import Stack, percentile, rss_bytes
from grctl.client import Client
from grctl.errors import DaemonUnavailableError

WORKFLOW = "BenchWaiting"
SEED = 20240611
TIMER_PATIENCE_S = 30.0  # how long a timer due at the check is waited for before it counts unfired


def _now_ms() -> int:
    return int(time.time() * 1000)


def _wid(i: int) -> str:
    return f"wait-{i}"


async def _start_all(client: Client, runs: int, timed: dict[int, int], in_flight: int) -> None:
    """Start every run, ``in_flight`` requests outstanding at a time."""
    todo = iter(range(runs))

    async def starter() -> None:
        for i in todo:
            await client.start_workflow(WORKFLOW, _wid(i), {"timeout_s": timed.get(i)})

    await asyncio.gather(*(starter() for _ in range(in_flight)))


async def _until_settled(client: Client, runs: int, deadline_s: float) -> None:
    """Poll until every run waits or has ended (a timeout step may end one early)."""
    deadline = time.monotonic() + deadline_s
    while True:
        counts = (await client.daemon_status())["runs"]
        if counts.get("waiting", 0) + counts.get("completed", 0) >= runs:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"waiting runs did not all settle in {deadline_s:.0f} s: {counts}")
        await asyncio.sleep(0.2)


async def _connect_after_spawn(stack: Stack, t0: float, deadline_s: float) -> tuple[Client, float]:
    """The first client connection the restarted daemon answers, and seconds since ``t0``."""
    assert stack.daemon is not None
    while True:
        if stack.daemon.poll() is not None:
            raise RuntimeError(f"daemon exited on restart: {stack.tail('daemon.out')}")
        try:
            return await stack.client(), time.perf_counter() - t0
        except (OSError, DaemonUnavailableError):
            if time.perf_counter() - t0 > deadline_s:
                raise RuntimeError(
                    f"restarted daemon not serving after {deadline_s:.0f} s"
                ) from None
            await asyncio.sleep(0.01)


async def _until_worker(client: Client, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while not (await client.daemon_status())["workers"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not reconnect to the restarted daemon")
        await asyncio.sleep(0.05)


async def _timer_outcomes(
    client: Client, timed: dict[int, int], batch: int = 100
) -> dict[int, tuple[int, int | None]]:
    """(due ms, fired ms or None) of each timed run, read from its history."""

    async def one(i: int) -> tuple[int, tuple[int, int | None]]:
        events = await client.get_workflow_handle(_wid(i)).history()
        waited = next(e for e in events if e.kind == "step_completed")
        due = int(waited.time.timestamp() * 1000) + timed[i] * 1000
        fired = next((e for e in events if e.kind == "wait_timed_out"), None)
        ran = any(e.kind == "step_completed" and e.step_name == "expired" for e in events)
        return i, (due, int(fired.time.timestamp() * 1000) if fired and ran else None)

    out: dict[int, tuple[int, int | None]] = {}
    ids = list(timed)
    for lo in range(0, len(ids), batch):
        out.update(await asyncio.gather(*(one(i) for i in ids[lo : lo + batch])))
    return out


def _timer_figures(
    outcomes: dict[int, tuple[int, int | None]],
    checked_ms: int,
    killed_ms: int,
    spawned_ms: int,
    serving_ms: int,
) -> dict[str, float | None]:
    """Due vs fired; lateness of those due while the daemon served; when the overdue ones fired.

    A timer is overdue if it came due between the kill and the restarted daemon's first answer;
    ``timer_overdue_fired_s`` is when the last of them fired, in seconds after the spawn. Figures
    with no timer to measure are None.
    """
    due = {i: o for i, o in outcomes.items() if o[0] <= checked_ms}
    fired = {i: o for i, o in due.items() if o[1] is not None}
    overdue = {i for i, (d, _) in due.items() if killed_ms < d <= serving_ms}
    late = [float(f - d) for i, (d, f) in fired.items() if i not in overdue and f is not None]
    overdue_fired = [
        f - spawned_ms for i, (_, f) in fired.items() if i in overdue and f is not None
    ]
    return {
        "timers": len(outcomes),
        "timers_due": len(due),
        "timers_fired": len(fired),
        "timers_fired_early": sum(1 for d, f in outcomes.values() if f is not None and f < d),
        "timers_due_before_kill": sum(1 for d, _ in due.values() if d <= killed_ms),
        "timers_overdue_at_restart": len(overdue),
        "timers_due_after_restart": sum(1 for d, _ in due.values() if d > serving_ms),
        "timer_late_p50_ms": percentile(late, 50) if late else None,
        "timer_late_max_ms": max(late) if late else None,
        "timer_overdue_fired_s": max(overdue_fired) / 1000 if overdue_fired else None,
    }


async def waiting(
    stack: Stack,
    runs: int,
    in_flight: int,
    timer_share: float,
    timeout_s: tuple[int, int],
    cold_events: int,
    after_restart_s: float,
) -> dict[str, Any]:
    """Start ``runs`` waiting runs; memory; kill and restart the daemon; cold events; timers."""
    rng = random.Random(SEED)
    every = max(1, round(1 / timer_share))
    timed = {i: rng.randint(*timeout_s) for i in range(every - 1, runs, every)}
    untimed = [i for i in range(runs) if i not in timed]
    assert stack.daemon is not None
    rss_empty = rss_bytes(stack.daemon.pid)

    client = await stack.client()
    try:
        t0 = time.perf_counter()
        await _start_all(client, runs, timed, in_flight)
        start_s = time.perf_counter() - t0
        await _until_settled(client, runs, deadline_s=max(120.0, runs / 100))
        settle_s = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # let the last replies and GC settle, as ``idle`` does
        counts = (await client.daemon_status())["runs"]
        rss = rss_bytes(stack.daemon.pid)
    finally:
        await client.close()

    killed_ms = _now_ms()
    stack.kill_daemon()
    t0 = time.perf_counter()
    spawned_ms = _now_ms()
    stack.spawn_daemon()
    client, accept_s = await _connect_after_spawn(stack, t0, deadline_s=600)
    serving_ms = _now_ms()
    try:
        probe = client.get_workflow_handle(_wid(rng.choice(untimed)))
        described = await probe.describe()
        describe_s = time.perf_counter() - t0
        assert described.status.value == "waiting", described.status
        rss_restarted = rss_bytes(stack.daemon.pid)

        await _until_worker(client)
        cold: list[float] = []
        for value, i in enumerate(rng.sample(untimed, min(cold_events, len(untimed)))):
            handle = client.get_workflow_handle(_wid(i))
            t1 = time.perf_counter()
            await handle.send("go", {"value": value})
            result = await handle.result()
            cold.append((time.perf_counter() - t1) * 1000)
            assert result == value, (handle, result)
        await asyncio.sleep(max(0.0, t0 + accept_s + after_restart_s - time.perf_counter()))

        checked_ms = _now_ms()
        outcomes = await _timer_outcomes(client, timed)
        patience = time.monotonic() + TIMER_PATIENCE_S
        while time.monotonic() < patience:
            unfired = {
                i: timed[i] for i, (d, f) in outcomes.items() if f is None and d <= checked_ms
            }
            if not unfired:
                break
            await asyncio.sleep(0.5)
            outcomes.update(await _timer_outcomes(client, unfired))
        status = await client.daemon_status()
    finally:
        await client.close()

    waiting_runs = counts.get("waiting", 0)
    return {
        "runs": runs,
        "in_flight": in_flight,
        "start_s": start_s,
        "start_runs_per_s": runs / start_s,
        "start_to_all_waiting_s": settle_s,
        "waiting_runs": waiting_runs,
        "rss_empty_mb": rss_empty / 2**20,
        "rss_mb": rss / 2**20,
        "rss_per_run_bytes": (rss - rss_empty) / max(waiting_runs, 1),
        "database_mb": status.get("database_bytes", 0) / 2**20,
        "restart_accept_s": accept_s,
        "restart_describe_s": describe_s,
        "rss_after_restart_mb": rss_restarted / 2**20,
        "cold_events": len(cold),
        "cold_event_p50_ms": percentile(cold, 50),
        "cold_event_p99_ms": percentile(cold, 99),
        "cold_event_max_ms": max(cold, default=0.0),
        **_timer_figures(outcomes, checked_ms, killed_ms, spawned_ms, serving_ms),
    }
