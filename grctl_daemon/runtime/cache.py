"""The runs the daemon holds in memory: a bounded cache in front of the database.

A run costs disk, not RAM, while nothing happens to it: one waiting for an event or a timer is
read back when something does. What must stay in memory is never evicted: a run with a step on a
worker (its fencing token and step deadline live here), a run with a unit not yet durable
(memory is ahead of the database until then), and a run a request holds across an await (it
loaded the run and is about to decide on it). Everything else is evicted, least recently used
first, once the cache is over ``capacity`` runs.

Reads must not see what is not durable (SPEC 3.8: a query runs on the committed store), so for
a run with units in flight the cache also keeps the state of its last durable unit:
``committed(run_id)``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterator

from grctl_daemon.config import DEFAULT_RUN_CACHE
from grctl_daemon.engine.state import InboxItem, RunState, Seq
from grctl_daemon.storage import base as rec

TRIM_SCAN = 32  # kept runs looked past per eviction, so a trim stays O(1)


class Elsewhere(Exception):
    """The run lives in a partition another daemon owns: learnt from its row, not loaded."""

    def __init__(self, partition: int) -> None:
        super().__init__(partition)
        self.partition = partition


class RunCache:
    """Run states by run_id, LRU, with loads from storage deduplicated per run."""

    def __init__(
        self,
        storage: rec.Storage,
        capacity: int = DEFAULT_RUN_CACHE,
        owns: Callable[[int], bool] = lambda partition: True,
    ) -> None:
        self.storage = storage
        self.capacity = capacity
        self.owns = owns  # a run read back from a partition another daemon owns is not kept
        self._runs: OrderedDict[str, RunState] = OrderedDict()
        self._latest: dict[str, str] = {}  # workflow_id → its newest cached run
        self._pending: dict[str, int] = {}  # run_id → its units not yet durable
        self._held: dict[str, int] = {}  # run_id → requests about to decide on it
        self._committed: dict[str, RunState | None] = {}  # run_id → last durable, while pending
        self._loading: dict[str, asyncio.Future[RunState | None]] = {}
        self._batch: list[str] = []  # runs to read back at the end of this turn of the loop
        self._reads: set[asyncio.Task[None]] = set()
        self.loads = 0  # runs read back from the database, for daemon status
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def get(self, run_id: str) -> RunState | None:
        return self._runs.get(run_id)

    def states(self) -> Iterator[RunState]:
        return iter(self._runs.values())

    def latest(self, workflow_id: str) -> RunState | None:
        run_id = self._latest.get(workflow_id)
        return self._runs.get(run_id) if run_id is not None else None

    def put(self, state: RunState) -> None:
        """Install a run's newest state (decided, maybe not yet durable)."""
        run_id = state.run_id
        runs = self._runs
        if run_id in runs:
            runs.move_to_end(run_id)
        runs[run_id] = state
        if state.is_active:  # an active run is its workflow_id's newest
            self._latest[state.workflow_id] = run_id
        if len(runs) > self.capacity:
            self._trim()

    def forget(self, run_id: str) -> None:
        """Drop a run whose state memory can no longer vouch for (its unit was refused, or its
        partition went to another daemon)."""
        state = self._runs.pop(run_id, None)
        if state is not None and self._latest.get(state.workflow_id) == run_id:
            del self._latest[state.workflow_id]

    # -- holds and durability -----------------------------------------------------------------

    def hold(self, run_id: str) -> None:
        """Keep the run in memory while a request awaits before deciding on it."""
        self._held[run_id] = self._held.get(run_id, 0) + 1

    def release(self, run_id: str) -> None:
        n = self._held.pop(run_id, 1) - 1
        if n > 0:
            self._held[run_id] = n

    def busy(self) -> bool:
        """Whether a run is being read back, decided on, or has a unit not yet durable."""
        return bool(self._pending or self._held or self._loading or self._batch)

    def deciding(self, run_id: str, before: RunState | None) -> None:
        """A unit for this run was queued; ``before`` is its state before that unit's decisions."""
        n = self._pending.get(run_id, 0)
        if n == 0:
            self._committed[run_id] = before
        self._pending[run_id] = n + 1

    def settled(self, run_id: str, state: RunState | None) -> None:
        """A unit for this run ended: durable (it left the run at ``state``) or not (None)."""
        n = self._pending.pop(run_id, 1) - 1
        if n > 0:
            self._pending[run_id] = n
            if state is not None:
                self._committed[run_id] = state
        else:
            self._committed.pop(run_id, None)

    def committed(self, state: RunState) -> RunState | None:
        """The run as its last durable unit left it (None: its start is not durable yet)."""
        if state.run_id in self._committed:
            return self._committed[state.run_id]
        return state

    # -- loading --------------------------------------------------------------------------------

    async def load(self, run_id: str) -> RunState | None:
        """The run's state, from memory or (once, however many ask) read back from the database.

        Reads asked for in one turn of the loop go to the database together (a drain that
        hands a hundred queued runs to a worker reads them with one batch of queries).
        """
        state = self._runs.get(run_id)
        if state is not None:
            self._runs.move_to_end(run_id)
            return state
        fut = self._loading.get(run_id)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._loading[run_id] = loop.create_future()
            self._batch.append(run_id)
            if len(self._batch) == 1:
                loop.call_soon(self._flush)
        return await asyncio.shield(fut)

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        self._reads.add(task := asyncio.ensure_future(self._read(batch)))
        task.add_done_callback(self._reads.discard)

    async def _read(self, run_ids: list[str]) -> None:
        try:
            loaded = await self.storage.load_runs(run_ids)
        except BaseException as exc:
            for run_id in run_ids:
                fut = self._loading.pop(run_id)
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved here: a reader that gave up must not warn
            return
        for run_id in run_ids:
            fut = self._loading.pop(run_id)
            state = self._runs.get(run_id)  # decided on while we read: memory is newer
            if state is None and run_id in loaded:
                state = self._state(loaded[run_id])
                self.loads += 1
                if self.owns(state.partition):
                    self.put(state)
            if not fut.done():
                fut.set_result(state)

    @staticmethod
    def _state(loaded: rec.LoadedRun) -> RunState:
        state = RunState(**vars(loaded.run))
        state.store = loaded.store
        state.records = Seq(loaded.records)
        state.inbox = Seq([InboxItem(seq, name, payload) for seq, name, payload in loaded.inbox])
        state.timers = loaded.timers
        return state

    async def find(self, workflow_id: str, run_id: str | None) -> RunState | None:
        """The given run of ``workflow_id``, or its newest run."""
        if run_id is not None:
            state = self._runs.get(run_id) or await self.load(run_id)
            return state if state is not None and state.workflow_id == workflow_id else None
        state = self.latest(workflow_id)
        if state is not None:
            return state
        row = await self.storage.find_run(workflow_id, None)
        if row is None:
            return None
        if not self.owns(row.partition):  # forwarded: loading its store and inbox is wasted
            raise Elsewhere(row.partition)
        # A newer run may have started while we read: it would be cached now.
        state = self.latest(workflow_id) or await self.load(row.run_id)
        if state is not None and state.run_id in self._runs and workflow_id not in self._latest:
            self._latest[workflow_id] = state.run_id
        return state

    # -- eviction -------------------------------------------------------------------------------

    def _trim(self) -> None:
        runs, pending, held = self._runs, self._pending, self._held
        scanned = 0
        while len(runs) > self.capacity and scanned < TRIM_SCAN:
            run_id, state = next(iter(runs.items()))
            scanned += 1
            if run_id in pending or run_id in held or state.dispatch_id is not None:
                runs.move_to_end(run_id)  # in use: look at it again after the others
                continue
            del runs[run_id]
            self.evictions += 1
            if self._latest.get(state.workflow_id) == run_id:
                del self._latest[state.workflow_id]
