"""Group commit, shared by every backend: the queue of units, batching, waiting out faults.

``commit(ops)`` queues a *unit* (everything one decision produced); its future resolves once the
unit is durable. The writer takes every queued unit (up to ``MAX_BATCH_UNITS``) and hands them
to the backend's ``_write_batch`` as one transaction, so throughput is not bound by one
durable commit per step.

A backend names the failures it can wait out (``_transient``): a full disk, a database that
went away. The same batch is then tried again, after ``RETRY_INITIAL_S`` doubling to every
``RETRY_MAX_S``; the units keep their order and their futures stay pending, so nothing is
acknowledged or dispatched that is not durable, and ``health()`` says what is wrong meanwhile
(the runtime refuses new work). A backend whose commit may have landed before the failure was
seen (a connection lost during COMMIT) finds out in ``_write_batch`` on the retry. Any other
failure fails the batch and every unit queued behind it (they were decided on its state) and
takes no more: the daemon stops and a restart resumes from what is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from grctl_daemon.storage import base as rec

MAX_BATCH_UNITS = 1000
# How long the writer may wait for the outcome of a step handed out early before it writes the
# unit that dispatched it (``Linger``): a step that is not back by then commits separately.
# On 2 busy vCPUs a start and five chained steps are back in 0.2-0.6 ms, but over 1 ms in a
# quarter of the runs; at 2 ms nearly all are caught (docs/performance.md, issue 13).
LINGER_S = 0.002
RETRY_INITIAL_S = 0.05
RETRY_MAX_S = 0.5
CLOSE_GRACE_S = 2.0  # how long a stopping daemon still waits out a fault before dropping units

log = logging.getLogger("grctl.daemon.storage")

Outcomes = list[Exception | None]  # per unit: None (committed) or UnitRefused


class Linger:
    """Steps handed out before the unit that dispatched them is durable (an event's handler, a
    run's first step: see ``Runtime.apply``), whose outcome the writer waits for, at most
    LINGER_S, so that both commit in one transaction: one fsync where there were two.

    The outcome is decided on the dispatching unit's state and queued behind it, so it can
    never be durable without it; nothing of either leaves the daemon before that commit.
    """

    def __init__(self) -> None:
        self.expected: set[str] = set()
        self._back = asyncio.Event()

    def expect(self, dispatch_id: str) -> None:
        self.expected.add(dispatch_id)

    def back(self, dispatch_id: str) -> None:
        """The step reported (its unit is queued), or wants the commit now (a task)."""
        if dispatch_id in self.expected:
            self.expected.discard(dispatch_id)
            if not self.expected:
                self._back.set()

    async def wait(self) -> None:
        """Until every expected step is back, at most LINGER_S; after that none is waited for."""
        if not self.expected:
            return
        self._back.clear()
        try:
            await asyncio.wait_for(self._back.wait(), LINGER_S)
        except TimeoutError:
            pass
        self.expected.clear()


class GroupCommit:
    """The writer half of a backend; subclasses implement ``_write_batch`` and ``_transient``."""

    database = ""  # what logs and status call the database (no password)
    hint = ""  # what an operator can do while commits wait on a fault

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[list[rec.Op], asyncio.Future[None]] | None] = (
            asyncio.Queue()
        )
        self._writer_task: asyncio.Task[None] | None = None
        self.batches = 0
        self.units = 0
        self.write_s = 0.0  # time spent writing batches (the commit included)
        self.commit_s = 0.0  # of which in the commit itself (the fsync)
        # Set while commits wait on a fault: the error, since when, how many units wait.
        self.fault: str | None = None
        self.fault_since_ms: int | None = None
        self.fault_cleared_ms: int | None = None  # when commits last went through again
        self._waiting = 0
        self._close_deadline: float | None = None
        self.epoch = 0
        self.failed: rec.CommitFailed | None = None  # set once a commit failed: no more commits
        self.lost = asyncio.Event()  # set when another daemon took the database over
        self.linger = Linger()
        # Told of each committed batch: its units and the seconds from write to durable
        # (faults waited out included). The metrics set it; it must stay cheap.
        self.on_batch: Callable[[int, float], None] | None = None

    # -- what a backend provides ----------------------------------------------------------------

    async def _write_batch(self, units: list[list[rec.Op]]) -> Outcomes:
        """Commit the units in one transaction; a refused unit alone rolls back (UnitRefused)."""
        raise NotImplementedError

    def _transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a fault to wait out (the batch is tried again), not a failure."""
        return False

    # -- the writer -----------------------------------------------------------------------------

    def start_writer(self) -> None:
        self._writer_task = asyncio.create_task(self._write_loop(), name="grctl-group-commit")

    async def stop_writer(self) -> None:
        """Finish every queued commit (waiting out a fault at most ``CLOSE_GRACE_S``)."""
        self._close_deadline = time.monotonic() + CLOSE_GRACE_S
        if self._writer_task is not None:
            await self._queue.put(None)
            await self._writer_task
            self._writer_task = None

    def commit(self, ops: list[rec.Op]) -> asyncio.Future[None]:
        """Queue one unit; the future resolves when it is durable (or fails with UnitRefused)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failed is not None:
            fut.set_exception(self.failed)
        else:
            self._queue.put_nowait((ops, fut))
        return fut

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is None:
                break
            if self.linger.expected:
                if self._queue.empty():  # a lone unit: worth a moment to add the outcome
                    await self.linger.wait()
                else:  # a batch forms anyway: write it now
                    self.linger.expected.clear()
            batch = [item]
            while not self._queue.empty() and len(batch) < MAX_BATCH_UNITS:
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            began = time.perf_counter()
            try:
                outcomes = await self._write_until_done([ops for ops, _ in batch])
            except Exception as exc:
                # The database itself failed. Every unit queued behind this batch was decided
                # on its state, so none may be committed: fail them all and take no more.
                self.failed = rec.CommitFailed(f"{type(exc).__name__}: {exc}")
                self.failed.__cause__ = exc
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(self.failed)
                dropped = self._drop_queue(self.failed)
                log.critical(
                    "commit to %s failed (%s); %d unit(s) of that batch and %d queued behind it "
                    "were not committed",
                    self.database,
                    self.failed,
                    len(batch),
                    dropped,
                )
                break
            if outcomes is None:
                # Stopping during a fault. The units behind build on these: all are dropped,
                # their futures cancelled (never acknowledged, nothing to answer).
                for _, fut in batch:
                    fut.cancel()
                log.error(
                    "stopping with %d unit(s) not committed (%s); they were never "
                    "acknowledged and the next start recovers from what is durable",
                    len(batch) + self._drop_queue(),
                    self.fault,
                )
                break
            self.batches += 1
            self.units += len(batch)
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - began)
            for (_, fut), outcome in zip(batch, outcomes, strict=True):
                if fut.done():
                    continue
                if outcome is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(outcome)

    async def _write_until_done(self, units: list[list[rec.Op]]) -> Outcomes | None:
        """Write one batch, waiting out transient faults (see top).

        Returns None when the daemon is stopping and the fault lasted past CLOSE_GRACE_S.
        """
        delay = RETRY_INITIAL_S
        self._waiting = len(units)
        while True:
            try:
                outcomes = await self._write_batch(units)
            except Exception as exc:
                if not self._transient(exc):
                    raise
                if self.fault is None:
                    self.fault = str(exc) or type(exc).__name__
                    self.fault_since_ms = int(time.time() * 1000)
                    log.error(
                        "cannot write the database %s: %s; new starts, events, cancels and "
                        "terminates are refused and %d pending commit(s) wait; %s and the "
                        "daemon resumes by itself (retrying every %gs)",
                        self.database,
                        self.fault,
                        self._waiting + self._queue.qsize(),
                        self.hint.lower(),
                        RETRY_MAX_S,
                    )
                if self._close_deadline is not None and time.monotonic() > self._close_deadline:
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if self.fault is not None:
                waited = time.time() - (self.fault_since_ms or 0) / 1000
                log.info(
                    "the database %s is writable again after %.1fs; the waiting commits are "
                    "durable and new work is accepted",
                    self.database,
                    waited,
                )
                self.fault = self.fault_since_ms = None
                self.fault_cleared_ms = int(time.time() * 1000)
            self._waiting = 0
            return outcomes

    def _drop_queue(self, exc: BaseException | None = None) -> int:
        dropped = 0
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                if exc is None:
                    item[1].cancel()
                else:
                    item[1].set_exception(exc)
                dropped += 1
        return dropped

    def health(self) -> dict[str, Any]:
        """Whether commits succeed; while they do not, why, since when and how many wait."""
        return {
            "writable": self.fault is None and self.failed is None,
            "error": self.fault or (str(self.failed) if self.failed else None),
            "since_ms": self.fault_since_ms,
            "cleared_ms": self.fault_cleared_ms,
            "hint": self.hint,
            "database": self.database,
            "waiting_units": self._waiting + self._queue.qsize() if self.fault else 0,
        }
