"""Faults inside the daemon (SPEC 6): a failed commit, a held commit, a poison step.

- A commit that fails for any reason but a full disk stops the daemon (exit 1, one line naming
  the error) and nothing decided on top of the failed state reaches the database; a restart
  resumes from the last durable state and every run completes.
- Nothing that lets an effect happen outside the daemon leaves it before the commit it depends
  on is durable: a recovered step is not handed to a worker, a query does not see a step's
  unsaved writes, a client gets no acknowledgement.
- A step whose worker is lost ``max_worker_losses`` times in a row fails with ``WorkerLost``,
  and its retry policy applies.

Commits are held by the injected full disk (``GRCTL_FAULT_DISK_FULL``: while that file exists
every commit fails as a full disk does, and the daemon retries until it is removed) and failed by
``GRCTL_FAIL_AT=commit`` (the ``GRCTL_FAIL_AFTER``-th transaction and every later one fail with a
disk I/O error). The database is read directly (``Daemon.rows``) once the daemon is dead.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from grctl.errors import (
    StorageUnavailableError,
    WorkflowAlreadyRunningError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
)
from tests.conftest import PG_URL, Daemon, Worker, read_ledger, wait_until
from tests.conftest import _accepts as accepts
from tests.crash.support import entries, history, of_kind, reached, release, result, status

pytestmark = pytest.mark.backends

COUNTER = "flows.fp_counter"
HELD = "flows.fp_held"
POISON = "flows.fp_poison"
# How long a held commit is watched for anything leaking out: several of the writer's retries
# (it retries a full disk every 0.5 s at most).
HOLD_WATCH_MS = 1500


def storage(daemon: Daemon) -> dict[str, Any]:
    return daemon.status()["storage"]


def fault_file(daemon: Daemon) -> Path:
    return daemon.home / "disk-is-full"


def start_daemon(daemon: Daemon, *args: str, env: dict[str, str] | None = None) -> None:
    """``Daemon.start`` with extra command-line options."""
    with open(daemon.home / "daemon.out", "ab") as out:
        daemon.proc = subprocess.Popen(
            [sys.executable, "-m", "grctl_daemon", "--home", str(daemon.home), "--quiet", *args],
            env=daemon.env(env),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    proc = daemon.proc
    wait_until(lambda: proc.poll() is not None or accepts(daemon.socket), 15, message="socket")
    assert proc.poll() is None, (daemon.home / "daemon.out").read_text()


def restart_holding_commits(daemon: Daemon) -> Path:
    """Restart ``daemon`` able to hold commits; returns the file that holds them while it exists."""
    assert daemon.stop() == 0
    full = fault_file(daemon)
    daemon.start(env={"GRCTL_FAULT_DISK_FULL": str(full)})
    return full


def stays(check: Callable[[], None], until: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` (it asserts) until ``until()`` holds: a watch over a window, not a wait."""

    def watched() -> bool:
        check()
        return until()

    wait_until(watched, timeout, interval=0.02, message=what)


def log_lines(daemon: Daemon, text: str) -> list[str]:
    return [line for line in daemon.log.read_text().splitlines() if text in line]


# -- 1. a failed commit stops the daemon; nothing decided on top of it is committed -------------

RUNS, STEPS = 30, 20
# The starts take one transaction each (made one at a time, with nothing else running); the
# worker's registration, with the first dispatches, takes the next. Then the runs move in
# lockstep, each transaction holding one unit per run: the task records of step k, then the
# completions of step k with the dispatches of step k + 1. The fault hits the completions of
# step FAIL_AT_STEP, so a daemon that let a dispatch out before it was durable would have a
# worker run the next step's task, and run it again after the restart. A run needs
# 1 + 2 * STEPS transactions to complete, so none has when the fault fires.
FAIL_AT_STEP = 6
FAIL_AFTER = RUNS + 1 + 2 * FAIL_AT_STEP
assert 1 + 2 * FAIL_AT_STEP < 1 + 2 * STEPS


def durable_state(daemon: Daemon) -> dict[str, dict[str, Any]]:
    """Each FpCounter run as the database holds it, checked for consistency.

    The history has no gap, the run row's ``history_seq`` is its last event, and the store's
    counter equals the number of completed steps: a unit committed on top of a lost one would
    break one of these. Returns per workflow_id its status, the completed steps, the durable
    task outcomes and the history as ``(seq, kind, step_name)``.
    """
    out: dict[str, dict[str, Any]] = {}
    runs = daemon.rows(
        "SELECT run_id, workflow_id, status, history_seq, step_seq FROM runs "
        "WHERE workflow_type = 'FpCounter'",
    )
    for run_id, wid, run_status, history_seq, step_seq in runs:
        rows = daemon.rows(
            "SELECT seq, kind, step_name FROM history WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        assert [seq for seq, _, _ in rows] == list(range(1, history_seq + 1)), (wid, rows)
        kinds = Counter(kind for _, kind, _ in rows)
        store = {
            key: msgpack.unpackb(value)
            for key, value in daemon.rows(
                "SELECT key, value FROM store WHERE run_id = ?", (run_id,)
            )
        }
        completed = kinds["step_completed"]
        assert store.get("count", 0) == completed, (wid, store, kinds)
        assert completed == 0 or store["steps"] == STEPS, (wid, store)
        # One task per step, recorded before the step completes.
        assert kinds["task_completed"] in (completed, completed + 1), (wid, kinds)
        records = daemon.rows("SELECT step_seq FROM step_records WHERE run_id = ?", (run_id,))
        assert len(records) == kinds["task_completed"] - completed, (wid, records, kinds)
        assert all(seq == step_seq for (seq,) in records), (wid, records, step_seq)
        out[wid] = {
            "status": run_status,
            "completed": completed,
            "ticks_recorded": kinds["task_completed"],
            "history": rows,
        }
    return out


def run_into_a_failed_commit(daemon: Daemon, workers: Callable[..., Worker], ledger: Path):
    """RUNS FpCounter runs in flight when a transaction fails; returns their ids and the worker."""
    env = {"LEDGER": str(ledger)}
    # The types are registered, then the fault is armed: the runs can start before any worker.
    workers(COUNTER, env=env).stop()
    assert daemon.stop() == 0
    daemon.start(env={"GRCTL_FAIL_AT": "commit", "GRCTL_FAIL_AFTER": str(FAIL_AFTER)})
    # See test_failed_commit_is_reported_in_one_line_without_a_traceback (a known bug).
    daemon.allow_tracebacks = True
    ids = [f"count-{i:02d}" for i in range(RUNS)]
    for wid in ids:
        daemon.call(lambda c, wid=wid: c.start_workflow("FpCounter", wid, {"steps": STEPS}))
    assert daemon.status()["commits"]["transactions"] == RUNS  # every start acknowledged
    worker = workers(COUNTER, env=env, wait=False)
    code = daemon.wait_dead(20)
    assert code == 1, (daemon.home / "daemon.out").read_text()
    return ids, worker


def test_failed_commit_stops_the_daemon_and_commits_nothing_after_it(daemon, workers, ledger):
    ids, worker = run_into_a_failed_commit(daemon, workers, ledger)

    # It stopped by itself (exit 1) and said why.
    (line,) = log_lines(daemon, "database commit failed; stopping the daemon")
    assert "CRITICAL" in line and "disk I/O error" in line, line
    # The failing batch was not alone: the runs were in flight together.
    (dropped,) = log_lines(daemon, "were not committed")
    batch, behind = map(
        int, re.search(r"(\d+) unit\(s\) of that batch and (\d+)", dropped).groups()
    )
    assert batch + behind >= 2, dropped

    # What is durable is consistent: every store agrees with its history, no history has a gap.
    at_death = durable_state(daemon)
    assert sorted(at_death) == ids
    assert all(run["status"] == "running" for run in at_death.values()), at_death
    assert sum(run["completed"] for run in at_death.values()) > 0  # it failed mid-workload
    # The failed transaction held step completions (each with the next step's dispatch).
    assert any(run["ticks_recorded"] > run["completed"] for run in at_death.values()), at_death
    assert daemon.integrity_ok()

    # Restarted without the fault: every run resumes from what is durable and completes.
    daemon.start()
    for wid in ids:
        assert result(daemon, wid, timeout=30) == {"count": STEPS}, wid
    at_end = durable_state(daemon)
    ticks = Counter(
        (values[0], int(values[1])) for op, _, values in entries(ledger) if op == "tick"
    )
    for wid in ids:
        before, after = at_death[wid], at_end[wid]
        assert after["status"] == "completed" and after["completed"] == STEPS
        assert after["history"][: len(before["history"])] == before["history"], wid
        ran = {n: ticks[(wid, n)] for n in range(1, STEPS + 1)}
        # Only the step whose dispatch was durable at the failure (the one after the last
        # completed step) can have run before it. Its tick runs again only if its record was
        # lost; a tick whose outcome was durable never ran again, later ones ran once.
        done, recorded = before["completed"], before["ticks_recorded"]
        again = done + 1 if recorded == done else None
        assert all(ran[n] == 1 for n in ran if n != again), (wid, done, recorded, ran)
        assert again is None or ran[again] in (1, 2), (wid, done, recorded, ran)
    assert set(ticks) == {(wid, n) for wid in ids for n in range(1, STEPS + 1)}
    assert worker.proc.poll() is None  # it reconnected by itself
    assert daemon.integrity_ok()


def test_failed_commit_is_reported_in_one_line_without_a_traceback(daemon, workers, ledger):
    run_into_a_failed_commit(daemon, workers, ledger)
    text = daemon.log.read_text()
    assert len(log_lines(daemon, "database commit failed; stopping the daemon")) == 1
    assert "internal error" not in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "Traceback" not in (daemon.home / "daemon.out").read_text()


# -- 2. nothing leaves the daemon before the commit it depends on is durable --------------------

HELD_RUNS = 4


def test_recovered_steps_reach_no_worker_before_their_dispatch_is_durable(daemon, workers, ledger):
    worker = workers(HELD, env={"LEDGER": str(ledger)})
    ids = [f"held-{i}" for i in range(HELD_RUNS)]
    for wid in ids:
        daemon.call(lambda c, wid=wid: c.start_workflow("FpHeld", wid))
    for wid in ids:
        assert reached(ledger, f"held-{wid}") == worker.pid
    daemon.kill9()
    # The worker saw the daemon go and stopped the steps it was running.
    for wid in ids:
        wait_until((ledger.parent / f"held-{wid}.cancelled").exists, 10, message="step stopped")
    before = read_ledger(ledger)
    assert Counter(op for op, _, _ in entries(ledger)) == {"begin": HELD_RUNS}

    full = fault_file(daemon)
    full.touch()
    daemon.start(env={"GRCTL_FAULT_DISK_FULL": str(full)})

    def unchanged() -> None:
        assert read_ledger(ledger) == before, "a worker ran a step whose dispatch is not durable"

    def dispatches_held() -> bool:
        st = daemon.status()
        held = st["storage"]
        busy = [w["inflight"] for w in st["workers"]]
        # The worker is back and the daemon gave it the steps, in a unit still waiting for disk.
        return not held["writable"] and held["waiting_units"] >= HELD_RUNS and busy == [HELD_RUNS]

    stays(unchanged, dispatches_held, 15, "the re-dispatches waiting for the disk")
    since_ms = storage(daemon)["since_ms"]
    stays(unchanged, lambda: time.time() * 1000 > since_ms + HOLD_WATCH_MS, 10, "a held window")

    full.unlink()
    for wid in ids:
        assert result(daemon, wid) == {"done": wid}
        started = of_kind(history(daemon, wid), "step_started")
        assert [ev.data["attempt"] for ev in started] == [1, 2]
    after = [(op, pid, values) for op, pid, values in entries(ledger)][HELD_RUNS:]
    assert sorted(values[0] for _, _, values in after) == ids
    assert {pid for _, pid, _ in after} == {worker.pid}  # the same worker, reconnected
    assert daemon.integrity_ok()


def test_query_during_a_held_commit_sees_the_committed_store(daemon, workers, ledger):
    full = restart_holding_commits(daemon)
    workers(HELD, env={"LEDGER": str(ledger)})
    wid = "query-1"

    def query() -> Any:
        return daemon.call(lambda c: c.get_workflow_handle(wid).query("x"))

    daemon.call(lambda c: c.start_workflow("FpQuery", wid))
    reached(ledger, f"write-{wid}")
    # The start's x = "old" is committed once its worker, running fp_query_write in place
    # after it, reports it (at the step's first wait).
    assert wait_until(query, message="the start's store committed") == "old"

    full.touch()
    release(ledger, f"write-{wid}")
    # The step wrote x = "new" and reported: its unit is in the daemon, not on disk.
    wait_until(
        lambda: not (h := storage(daemon))["writable"] and h["waiting_units"] >= 1,
        10,
        message="the step's result waiting for the disk",
    )
    assert query() == "old"
    info = daemon.call(lambda c: c.get_workflow_handle(wid).describe())
    assert info.store["x"] == "old" and info.step_name == "fp_query_write"
    (run_id,) = daemon.rows("SELECT run_id FROM runs WHERE workflow_id = ?", (wid,))[0]
    stored = daemon.rows("SELECT value FROM store WHERE run_id = ? AND key = 'x'", (run_id,))
    assert [msgpack.unpackb(v) for (v,) in stored] == ["old"]
    assert query() == "old"  # still, however often it is asked
    assert not storage(daemon)["writable"]

    full.unlink()
    assert result(daemon, wid) == {"x": "new"}
    assert query() == "new"
    completed = of_kind(history(daemon, wid), "step_completed")
    assert [ev.step_name for ev in completed] == [
        "fp_query_start",
        "fp_query_write",
        "fp_query_done",
    ]


class Call(threading.Thread):
    """A client call in the background; what it saw of the database the moment it was answered."""

    def __init__(self, daemon: Daemon, fn: Any, observe: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._daemon, self._fn, self._observe = daemon, fn, observe
        self.answered_at: float | None = None
        self.seen: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._daemon.call(self._fn)
            self.seen = self._observe()
            self.answered_at = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_no_acknowledgement_before_the_unit_is_durable(daemon, workers, ledger):
    full = restart_holding_commits(daemon)
    workers(HELD, env={"LEDGER": str(ledger)})
    wid = "inbox-1"
    handle = daemon.call(lambda c: c.start_workflow("FpInbox", wid))
    wait_until(lambda: status(daemon, wid) == "waiting", message="run waiting")

    def inbox_rows() -> list[Any]:
        return daemon.rows("SELECT seq, event_name FROM inbox WHERE run_id = ?", (handle.run_id,))

    full.touch()
    assert storage(daemon)["writable"]  # nothing tried to commit yet: the daemon does not know
    send = Call(daemon, lambda c: c.get_workflow_handle(wid).send("poke", {"n": 1}), inbox_rows)
    send.start()
    wait_until(
        lambda: not (h := storage(daemon))["writable"] and h["waiting_units"] >= 1,
        10,
        message="the send's unit waiting for the disk",
    )
    # Once the daemon knows, new work is refused outright, and never stored.
    with pytest.raises(StorageUnavailableError) as refused:
        daemon.call(lambda c: c.get_workflow_handle(wid).send("poke", {"n": 2}))
    assert refused.value.code == "storage_unavailable"
    with pytest.raises(StorageUnavailableError):
        daemon.call(lambda c: c.start_workflow("FpInbox", "inbox-2"))

    # The send accepted before it knew is not acknowledged while its unit is not durable.
    since_ms = storage(daemon)["since_ms"]

    def unanswered() -> None:
        assert send.error is None, send.error
        assert send.answered_at is None, "acknowledged before the event was durable"

    stays(unanswered, lambda: time.time() * 1000 > since_ms + HOLD_WATCH_MS, 10, "a held window")
    assert inbox_rows() == []

    freed_at = time.monotonic()
    full.unlink()
    send.join(10)
    assert not send.is_alive() and send.error is None, send.error
    assert send.answered_at is not None and send.answered_at > freed_at
    assert send.seen == [(1, "poke")]  # durable by the time it was acknowledged
    assert result(daemon, wid) == {"n": 1}
    inbox = daemon.call(lambda c: c.get_workflow_handle(wid).inbox())
    assert [(ev.seq, ev.payload) for ev in inbox] == [(1, {"n": 1})]
    assert len(of_kind(history(daemon, wid), "event_received")) == 1
    with pytest.raises(WorkflowNotFoundError):
        daemon.call(lambda c: c.get_workflow_handle("inbox-2").describe())
    assert [values for op, _, values in entries(ledger) if op == "poke"] == [[wid, "1"]]


def stay_unanswered(daemon: Daemon, *calls: Call) -> None:
    """Watch ``calls`` stay unanswered for a window while the commits are held."""

    def unanswered() -> None:
        for call in calls:
            assert call.error is None, f"answered from memory ahead of the disk: {call.error!r}"
            assert call.answered_at is None, "answered before its unit was durable"

    since = time.monotonic()
    stays(unanswered, lambda: time.monotonic() > since + HOLD_WATCH_MS / 1000, 10, "a window")


def killed_while_held(
    daemon: Daemon, release: Callable[[], None], *calls: Call
) -> list[BaseException | None]:
    """``calls`` stay unanswered while the commits are held; then ``kill -9`` the daemon,
    ``release`` the hold and restart it. Returns what each call ended with."""
    stay_unanswered(daemon, *calls)
    daemon.kill9()
    daemon.wait_dead()
    for call in calls:
        call.join(15)
        assert not call.is_alive()
    release()
    daemon.start(env={"GRCTL_FAULT_DISK_FULL": str(fault_file(daemon))})
    return [call.error for call in calls]


class RunsLocked:
    """Writes to the runs table held from outside (PostgreSQL): the daemon's commits wait on a
    lock, with no error, so unlike a full disk it knows of no fault and refuses nothing."""

    def __init__(self, daemon: Daemon) -> None:
        self._schema = daemon.db_url.rsplit("schema=", 1)[1]
        self._locked, self._done = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)
        self._thread.start()
        assert self._locked.wait(10), "could not lock the runs table"

    async def _hold(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            async with conn.transaction():
                await conn.execute(f'LOCK TABLE "{self._schema}".runs IN SHARE MODE')
                self._locked.set()
                await asyncio.get_running_loop().run_in_executor(None, self._done.wait, 60)
        finally:
            await conn.close()

    def waiters(self, daemon: Daemon) -> int:
        """How many transactions wait for this lock (the daemon's commit, once it tries)."""
        sql = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'runs'::regclass"
        return daemon.rows(sql)[0][0]

    def release(self) -> None:
        self._done.set()
        self._thread.join(10)


def test_no_refusal_rests_on_a_unit_that_is_not_durable(daemon, workers, ledger):
    """A refusal, or a duplicate's acknowledgement, is decided on memory, which may be ahead of
    the disk: it is answered only once the state it read is durable, so a daemon killed first
    has told no client of a run, an end or an event that it then lost."""
    full = restart_holding_commits(daemon)
    workers(HELD, env={"LEDGER": str(ledger)})
    for wid in ("waits", "keyed"):
        daemon.call(lambda c, wid=wid: c.start_workflow("FpInbox", wid))
        wait_until(lambda wid=wid: status(daemon, wid) == "waiting", message="run waiting")

    def twice(fn: Callable[[Any], Any]) -> tuple[Call, Call]:
        """``fn`` while the commits are held, then again once the first one's unit waits."""
        full.touch()
        first = Call(daemon, fn, lambda: None)
        first.start()
        wait_until(lambda: storage(daemon)["waiting_units"] >= 1, 10, message="a unit held")
        again = Call(daemon, fn, lambda: None)
        again.start()
        return first, again

    # A start held on the disk; a second start of its workflow_id finds it in memory.
    first, again = twice(lambda c: c.start_workflow("FpInbox", "twice"))
    errors = killed_while_held(daemon, full.unlink, first, again)
    assert all(err is not None for err in errors), errors
    assert not any(isinstance(err, WorkflowAlreadyRunningError) for err in errors), errors
    with pytest.raises(WorkflowNotFoundError):  # the run it would have named never was
        daemon.call(lambda c: c.get_workflow_handle("twice").describe())

    # A keyed send held on the disk; the same key again finds it in memory.
    def keyed(c: Any) -> Any:
        return c.get_workflow_handle("keyed").send("poke", {"n": 3}, idempotency_key="k-1")

    first, again = twice(keyed)
    errors = killed_while_held(daemon, full.unlink, first, again)
    assert all(err is not None for err in errors), errors  # no "duplicate" of a lost event
    workers(HELD, env={"LEDGER": str(ledger)})
    assert daemon.call(keyed)["duplicate"] is False  # the retry is the first to land
    assert result(daemon, "keyed") == {"n": 3}

    if daemon.backend == "postgres":
        # A cancel held on a lock (the daemon knows of no fault, so a send is not refused for
        # the disk); the send finds the run ended in memory. SQLite writes on the daemon's
        # loop, so a lock held from outside would stall every request there: nothing to see.
        lock = RunsLocked(daemon)
        try:
            cancel = Call(daemon, lambda c: c.get_workflow_handle("waits").cancel(), lambda: None)
            cancel.start()
            wait_until(lambda: lock.waiters(daemon) >= 1, 10, message="the cancel's commit held")
            send = Call(
                daemon,
                lambda c: c.get_workflow_handle("waits").send("poke", {"n": 7}),
                lambda: None,
            )
            send.start()
            errors = killed_while_held(daemon, lock.release, cancel, send)
        finally:
            lock.release()
        assert all(err is not None for err in errors), errors
        assert not any(isinstance(err, WorkflowNotRunningError) for err in errors), errors
        assert status(daemon, "waits") == "waiting"  # the cancel was lost, and no one was told
    daemon.call(lambda c: c.get_workflow_handle("waits").send("poke", {"n": 7}))
    assert result(daemon, "waits") == {"n": 7}

    # Held, then written: the refusal follows the unit it rests on, and names its run.
    first, again = twice(lambda c: c.start_workflow("FpInbox", "thrice"))
    stay_unanswered(daemon, first, again)
    freed_at = time.monotonic()
    full.unlink()
    first.join(10)
    again.join(10)
    assert first.error is None and first.answered_at > freed_at, first.error
    assert isinstance(again.error, WorkflowAlreadyRunningError), again.error
    (run_id,) = daemon.rows("SELECT run_id FROM runs WHERE workflow_id = 'thrice'")[0]
    assert again.error.run_id == run_id


# -- 3. a poison step: its worker lost max_worker_losses times in a row -------------------------


def run_through_losses(
    daemon: Daemon, workers: Callable[..., Worker], ledger: Path, wtype: str, wid: str
) -> Any:
    """Start ``wid``, restarting the worker each time the step kills it, until the run ends."""
    env = {"LEDGER": str(ledger)}
    current = [workers(POISON, env=env)]  # registers the types, then takes the step and dies
    daemon.call(lambda c: c.start_workflow(wtype, wid))

    def ended() -> bool:
        if current[-1].proc.poll() is not None:
            current.append(workers(POISON, env=env, wait=False))
        return status(daemon, wid) not in ("running", "waiting")

    wait_until(ended, 30, interval=0.05, message=f"{wid} ending")
    return daemon.call(lambda c: c.get_workflow_handle(wid).describe())


def poison_pids(ledger: Path, wid: str) -> list[int]:
    return [pid for op, pid, values in entries(ledger) if op == "poison" and values[0] == wid]


def check_lost(events: list[Any], losses: list[int]) -> None:
    lost = of_kind(events, "worker_lost")
    assert [ev.data["losses"] for ev in lost] == losses
    assert [ev.step_name for ev in lost] == [lost[0].step_name] * len(losses)
    started = [ev for ev in of_kind(events, "step_started") if ev.step_name == lost[0].step_name]
    assert len(started) == len(losses)


def test_poison_step_fails_with_worker_lost_after_three_losses(daemon, workers, ledger):
    info = run_through_losses(daemon, workers, ledger, "FpPoison", "poison-1")
    assert info.status.value == "failed"
    assert info.error["type"] == "WorkerLost", info.error
    events = history(daemon, "poison-1")
    check_lost(events, [1, 2, 3])
    (failed,) = of_kind(events, "step_failed")
    assert failed.step_name == "fp_poison_step"
    assert failed.data["error"]["type"] == "WorkerLost" and failed.data["will_retry"] is False
    assert events[-1].kind == "workflow_failed"
    pids = poison_pids(ledger, "poison-1")
    assert len(pids) == 3 and len(set(pids)) == 3  # three workers, each killed by the step


@pytest.mark.parametrize("how", ["option", "env"])
def test_max_worker_losses_is_configurable(daemon, workers, ledger, how):
    assert daemon.stop() == 0
    if how == "option":
        start_daemon(daemon, "--max-worker-losses", "2")
    else:
        daemon.start(env={"GRCTL_MAX_WORKER_LOSSES": "2"})
    info = run_through_losses(daemon, workers, ledger, "FpPoison", "poison-2")
    assert info.status.value == "failed" and info.error["type"] == "WorkerLost", info.error
    events = history(daemon, "poison-2")
    check_lost(events, [1, 2])
    (failed,) = of_kind(events, "step_failed")
    assert failed.data["error"]["type"] == "WorkerLost" and failed.data["will_retry"] is False
    assert len(poison_pids(ledger, "poison-2")) == 2


def test_worker_lost_failure_follows_the_step_retry_policy(daemon, workers, ledger):
    info = run_through_losses(daemon, workers, ledger, "FpPoisonRetried", "poison-3")
    assert info.status.value == "failed" and info.error["type"] == "WorkerLost", info.error
    events = history(daemon, "poison-3")
    check_lost(events, [1, 2, 3, 1, 2, 3])
    failed = of_kind(events, "step_failed")
    assert [ev.data["will_retry"] for ev in failed] == [True, False]
    assert all(ev.data["error"]["type"] == "WorkerLost" for ev in failed)
    # The retry came after the first failure, with more losses, then the run failed.
    kinds = [ev.kind for ev in events if ev.kind in ("worker_lost", "step_failed")]
    assert kinds == ["worker_lost"] * 3 + ["step_failed"] + ["worker_lost"] * 3 + ["step_failed"]
    assert failed[0].data["retry_in_ms"] >= 0
    assert len(poison_pids(ledger, "poison-3")) == 6


def test_worker_losses_count_in_a_row_per_step(daemon, workers, ledger):
    info = run_through_losses(daemon, workers, ledger, "FpFlaky", "flaky-1")
    assert info.status.value == "completed", info.error
    assert result(daemon, "flaky-1") == "survived"
    events = history(daemon, "flaky-1")
    lost = of_kind(events, "worker_lost")
    assert [(ev.step_name, ev.data["losses"]) for ev in lost] == [
        ("fp_flaky_one", 1),
        ("fp_flaky_one", 2),
        ("fp_flaky_two", 1),
        ("fp_flaky_two", 2),
    ]
    assert not of_kind(events, "step_failed")
    assert len(poison_pids(ledger, "flaky-1")) == 4
