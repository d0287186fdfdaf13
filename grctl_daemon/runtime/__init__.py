"""The runtime: the I/O and wiring around the decider (``engine.decide``), split by concern.

``Runtime`` is one object made of the halves in this package, each a mixin over the same
state: ``commit`` (apply decisions, commit, effects once durable), ``requests`` (start, send,
cancel, terminate, timers), ``workers`` (dispatch, joins and losses, step results, children),
``reads`` (describe, list, inbox, history, result), ``progress`` (``ctx.emit`` relayed to
followers), ``queries``, ``schedules`` (cron schedules on the timer heap), ``cluster``
(partitions changing hands) and ``retention`` (ended runs deleted). What they share lives here: the run cache, the type registry, the dispatcher
and the timer heap, and the lifecycle.

Start-up reads nothing per run. Types are loaded; runs that have a step to run are handed to
the dispatch queues by a scan in the background (ids only: each is read back when a worker
takes it); timers are loaded by due time, a window at a time (``TIMER_WINDOW_MS``), so the
daemon serves requests at once whatever the number of runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

from grctl import protocol as p
from grctl.errors import GrctlError, WorkflowNotFoundError, WorkflowTypeNotRegisteredError
from grctl_daemon.config import DaemonConfig
from grctl_daemon.dispatch import Dispatcher
from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.decide import Message, StorageFault, decide
from grctl_daemon.engine.state import RunState, TypeDef
from grctl_daemon.metrics import Tally
from grctl_daemon.runtime.cache import Elsewhere, RunCache
from grctl_daemon.runtime.cluster import Ownership
from grctl_daemon.runtime.commit import Commits
from grctl_daemon.runtime.progress import ProgressBuffer, ProgressRelay
from grctl_daemon.runtime.queries import Queries
from grctl_daemon.runtime.reads import Follower, Reads
from grctl_daemon.runtime.requests import Requests
from grctl_daemon.runtime.retention import Retention
from grctl_daemon.runtime.schedules import Schedules
from grctl_daemon.runtime.steps import Steps
from grctl_daemon.runtime.workers import Workers
from grctl_daemon.storage import base as rec
from grctl_daemon.timers import TimerWheel, now_ms

log = logging.getLogger("grctl.daemon")

# How many times a request is decided again when what it was decided on was refused by the
# database (``Commits.refuse``): each retry reads the run back as the database has it.
REDECIDE_LIMIT = 3
TIMER_WINDOW_MS = 60_000  # durable timers further out than this stay on disk until they near


class Runtime(
    Commits,
    Requests,
    Workers,
    Steps,
    Reads,
    Queries,
    Ownership,
    Retention,
    Schedules,
    ProgressRelay,
):
    """Applies the engine's decisions to the runs it holds or reads back."""

    def __init__(self, config: DaemonConfig, storage: rec.Storage) -> None:
        self.config = config
        self.storage = storage
        self.started = time.time()
        self.pid = os.getpid()
        self.cache = RunCache(storage, config.run_cache, self.owns)
        self.types: dict[str, TypeDef] = {}
        # On PostgreSQL the slots of limited types are rows shared by every member.
        self.dispatcher = Dispatcher(shared_limits=hasattr(storage, "claim_type_slots"))
        self.dispatcher.on_type_free = self.type_slot_free
        self.dispatcher.on_slot_back = self.type_slot_back
        self._draining_types: set[str] = set()  # types whose queue is served at the next tick
        self._claiming: set[str] = set()  # types whose runs wait for rows of type_slots
        self._giving: dict[str, int] = {}  # type → rows of type_slots being given back
        self.timers = TimerWheel(self.on_timer, horizon_ms=0)
        self.waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self.followers: dict[str, set[Follower]] = {}
        self.listeners: dict[str, set[ProgressBuffer]] = {}  # followers of progress, by run
        # The latest progress of each name of a step in flight, by run: (dispatch_id, rows).
        self.latest: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {}
        self.queries: dict[str, asyncio.Future[p.QueryAnswer]] = {}
        # Steps handed out early (``Commits.apply``): the commit of the unit that dispatched each.
        self.unsettled: dict[str, asyncio.Future[None]] = {}
        # The newest unit not yet durable of each run (a refusal waits for it: ``refuse``).
        self.inflight: dict[str, asyncio.Future[None]] = {}
        self.fatal: asyncio.Event = asyncio.Event()
        # Counts for --metrics (grctl_daemon/metrics.py); None without it, so no counting.
        self.tally: Tally | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._schedule_lock = asyncio.Lock()  # schedule changes, one at a time (schedules.py)
        # In a cluster (runtime/cluster.py): partitions being handed over, the partition of
        # each run with result waits or followers, and the members our workers were told of.
        self.leaving: set[int] = set()
        self.watched: dict[str, int] = {}
        self.pushed_members: list[dict[str, Any]] | None = None
        self.pruned = {"runs": 0, "units": 0, "max_unit_ms": 0.0, "total_unit_ms": 0.0}

    # -- lifecycle ------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Load the types; start the timer windows and the scan for runs with a step to run."""
        for name, definition in (await self.storage.load_types()).items():
            self.types[name] = TypeDef.from_definition(definition)
        self.storage.on_ownership(self.gained, self.releasing)
        await self._load_timers()
        await self.arm_schedules(self.storage.owned)  # an overdue fire runs once, at once
        self.timers.start()
        self.spawn(self._timer_windows())
        self.spawn(self.scan_ready(self.storage.owned))
        if self.config.retention_ms > 0:
            self.spawn(self.retention_loop())
        if self.storage.members():
            self.pushed_members = self.other_members()
            self.spawn(self.watch_members())
        log.info("loaded %d workflow types; runs are read back as they are needed", len(self.types))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.timers.stop()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background; a refusal is dropped, a bug is logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, GrctlError | rec.CommitFailed):
            log.error("internal error in a background task", exc_info=exc)

    async def _load_timers(self) -> None:
        """Arm the stored timers due before the next window's end (overdue ones fire at once)."""
        start = self.timers.horizon_ms
        end = now_ms() + TIMER_WINDOW_MS
        self.timers.horizon_ms = end  # timers armed from now on below it stay in memory
        for t in await self.storage.due_timers(start, end, self.storage.owned):
            self.timers.arm(t.run_id, t.kind, t.due_ms, t.token)

    async def _timer_windows(self) -> None:
        while True:
            await asyncio.sleep(TIMER_WINDOW_MS / 2000)
            await self._load_timers()

    # -- shared lookups -------------------------------------------------------------------------

    def fault(self) -> StorageFault | None:
        h = self.storage.health()
        if h["writable"]:
            return None
        return StorageFault(
            h["error"] or "unknown", h["since_ms"] or now_ms(), h["database"], h["hint"]
        )

    def tdef(self, workflow_type: str) -> TypeDef:
        tdef = self.types.get(workflow_type)
        if tdef is None:
            known = ", ".join(sorted(self.types)) or "none yet"
            raise WorkflowTypeNotRegisteredError(
                f"workflow type {workflow_type!r} is not registered (known: {known}); start a "
                "worker that defines it: grctl worker MODULE"
            )
        return tdef

    async def find(self, workflow_id: str, run_id: str | None) -> RunState:
        try:
            state = await self.cache.find(workflow_id, run_id)
        except Elsewhere as elsewhere:
            raise self.not_owner(elsewhere.partition, workflow_id=workflow_id) from None
        if state is None:
            raise WorkflowNotFoundError(
                f"workflow {workflow_id!r}{f' run {run_id}' if run_id else ''} not found; "
                "list runs with: grctl list",
                workflow_id=workflow_id,
                run_id=run_id,
            )
        self.check_owned(state.partition, workflow_id)
        return state

    async def on_run(
        self,
        run_id: str,
        message: Callable[[RunState], Message],
        after: Callable[[RunState, tr.Decision], asyncio.Future[None]] | None = None,
        missing_ok: bool = False,
        also: str | None = None,
        early: bool = False,
    ) -> Any:
        """Read the run back if needed (and its parent, which its end may tell), then decide.

        The decision is taken on the run as memory holds it once every read is done, never on
        a state that was current before an await. ``also`` names one more run to hold in
        memory while deciding (the child a ``wait_for_child`` names).
        """
        held = [run_id]
        self.cache.hold(run_id)
        try:
            for attempt in range(REDECIDE_LIMIT):
                state = await self.cache.load(run_id)
                if state is None:
                    if missing_ok:
                        return None
                    raise WorkflowNotFoundError(f"run {run_id} not found", run_id=run_id)
                # A child's end tells its parent (completion_event, wait_for_child) in its unit.
                for other in (state.parent_run_id, also):
                    if not other:
                        continue
                    if other not in held:  # (held once, however often it is decided again)
                        held.append(other)
                        self.cache.hold(other)
                    await self.cache.load(other)
                state = self.cache.get(run_id) or state
                self.check_owned(state.partition, state.workflow_id)  # no await since: still ours
                d = decide(state, message(state), now_ms())
                if d.error is not None:
                    try:
                        await self.refuse(d)
                    except rec.UnitRefused:
                        if attempt + 1 == REDECIDE_LIMIT:
                            raise
                        continue  # decided on a unit that never became durable: read it back
                if after is None:
                    return await self.commit(d, early=early)
                await after(state, d)
                return d.reply
            raise AssertionError("unreachable: the last attempt returns or raises")
        finally:
            for held_id in held:
                self.cache.release(held_id)

    # -- status ---------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        backend = self.storage.describe()
        return {
            "pid": self.pid,
            "version": p.PROTOCOL_VERSION,
            "socket": str(self.config.socket_path),
            "listen": None
            if self.config.listen is None
            else {"address": str(self.config.listen), "tls": self.config.tls_cert is not None},
            "database": backend.get("database"),
            "database_bytes": backend.get("database_bytes"),
            "synchronous": backend.get("synchronous"),
            "backend": backend,
            "uptime_s": time.time() - self.started,
            "workers": [
                {
                    "name": s.name,
                    "workflow_types": sorted(s.types),
                    "inflight": len(s.inflight),
                    "concurrency": s.capacity,
                    "connected_ms": s.connected_ms,
                }
                for s in self.dispatcher.workers.values()
            ],
            "runs": await self.storage.count_by_status(),
            # What each registered type takes: shell completion offers these names.
            "types": {
                name: {"events": sorted(t.events), "queries": sorted(t.queries)}
                for name, t in sorted(self.types.items())
            },
            "cluster": self.cluster_status(),
            "memory": {
                "cached_runs": len(self.cache),
                "run_cache": self.cache.capacity,
                "loads": self.cache.loads,
                "evictions": self.cache.evictions,
                "timers": len(self.timers),
                "waits": sum(len(w) for w in self.waiters.values()),
                "followers": sum(len(f) for f in self.followers.values()),
                "progress": self.progress_status(),
            },
            "retention": {
                "retention_ms": self.config.retention_ms,
                "interval_ms": self.config.prune_interval_ms,
                **{k: round(v, 3) for k, v in self.pruned.items()},
            },
            "commits": {
                "transactions": self.storage.batches,
                "units": self.storage.units,
                "write_s": round(self.storage.write_s, 6),
                "commit_s": round(self.storage.commit_s, 6),
            },
        }


def refusal(exc: GrctlError, req_id: int | None) -> p.ErrorReply:
    return p.ErrorReply(
        req_id, exc.code, exc.message, exc.workflow_id, exc.run_id, exc.details or None
    )
