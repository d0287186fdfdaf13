"""Workers: dispatch, the queue per type, shared slots, joins and losses.

Step results (the hot path, chains) and the children a step starts are ``steps``.

A step goes to a worker once the unit that scheduled it is durable (``Commits.apply`` sends it
from the commit's callback), or before, marked early, when a start or an event scheduled it (the
worker then acts on nothing before that commit); the fencing token it carries is made of values
that unit makes durable. A run queued for a worker may have left memory: it is read back before it is handed
out, with the worker's slot reserved meanwhile so that a drain never reads more runs than the
worker can take.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from grctl import protocol as p
from grctl.errors import (
    QueryFailedError,
)
from grctl_daemon.dispatch import TypeLimit, WorkerSlot
from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.decide import (
    DispatchTo,
    WorkerLost,
    decide,
)
from grctl_daemon.engine.state import RunState, TypeDef
from grctl_daemon.storage import base as rec
from grctl_daemon.timers import now_ms

if TYPE_CHECKING:
    from grctl_daemon.runtime import Runtime

log = logging.getLogger("grctl.daemon")

SLOT_POLL_S = 0.1  # a member whose runs wait for a shared slot asks the database again
Prepared = tuple[tr.Decision, WorkerSlot, p.DispatchStep]


class Workers:
    """The worker half of the Runtime (a mixin: see ``runtime/__init__.py``)."""

    # -- dispatch -------------------------------------------------------------------------------

    def _dispatch(self: Runtime, run_id: str, from_queue: bool = False) -> None:
        """Hand the run's scheduled step to a worker once durable, or queue it for one.

        ``from_queue``: the run was just taken from the head of its type's queue.
        """
        if run_id not in self.cache:
            self.spawn(self._dispatch_loaded(run_id, None))
            return
        prepared = self._prepare_dispatch(run_id, from_queue)
        if prepared is not None:
            self.apply(prepared[0], sends=[prepared[1:]])

    async def _dispatch_loaded(
        self: Runtime, run_id: str, slot: WorkerSlot | None, lim: TypeLimit | None = None
    ) -> None:
        """Read the run back, then dispatch it; ``slot`` (and ``lim``'s slot) was reserved by
        the caller (``_drain``)."""
        self.cache.hold(run_id)
        try:
            state = await self.cache.load(run_id)
        finally:
            if slot is not None:
                slot.reserved -= 1
            if lim is not None:
                lim.reserved -= 1
        try:
            if state is not None and run_id in self.cache:  # not if another daemon owns it now
                self._dispatch(run_id, from_queue=slot is not None)
        finally:
            self.cache.release(run_id)
            if lim is not None:  # its slot, if not taken by this run, goes to the next
                self.type_slot_free(lim.workflow_type)

    def _prepare_dispatch(self: Runtime, run_id: str, from_queue: bool = False) -> Prepared | None:
        """Pick a worker and build the dispatch; ``None`` when nothing to send (or queued)."""
        state = self.cache.get(run_id)
        if state is None or not tr.ready(state) or not self.owns(state.partition):
            return None
        workflow_type = state.workflow_type
        lim = self.dispatcher.limits.get(workflow_type)  # all a type without a limit pays
        if lim is not None and not self.dispatcher.admits(workflow_type, from_queue):
            self.dispatcher.enqueue(workflow_type, run_id)
            if lim.free > 0:  # others were ahead: serve them first
                self.type_slot_free(workflow_type)
            elif lim.shared:
                self.want_type_slots(workflow_type)
            return None
        slot = self.dispatcher.pick(workflow_type)
        tdef = self.types.get(workflow_type)
        if slot is None or tdef is None:
            self.dispatcher.enqueue(workflow_type, run_id)
            return None
        d = decide(state, DispatchTo(tdef, slot.name), now_ms())
        s = d.state
        if s is state or s is None or s.dispatch_id is None:
            return None
        self.dispatcher.assign(slot, s.dispatch_id, run_id, lim)
        msg = p.DispatchStep(
            dispatch_id=s.dispatch_id,
            workflow_id=s.workflow_id,
            run_id=s.run_id,
            workflow_type=s.workflow_type,
            step_name=s.step_name or "",
            handler_kind=s.handler_kind or "step",
            args=p.packed(s.step_args),
            store={k: p.packed(v) for k, v in s.store.items()},
            records=[p.packed(r) for r in s.records],
            attempt=s.attempt,
            timeout_ms=d.reply,
            parent_workflow_id=s.parent_workflow_id,
            parent_run_id=s.parent_run_id,
            # A type with a limit takes its slots through the queue, step by step; a step whose
            # worker was lost goes alone, so that a step that kills workers is the one blamed.
            chain=self.config.chain_steps if lim is None and not s.worker_losses else 0,
        )
        return d, slot, msg

    def _drain(self: Runtime, slot: WorkerSlot) -> None:
        if self.dispatcher.workers.get(slot.connection_id) is not slot:
            # The worker left while the commit was pending: with no other worker free, each
            # run taken from the queue would be queued again behind itself, forever.
            return
        for workflow_type in slot.types:
            queue = self.dispatcher.queued(workflow_type)
            lim = self.dispatcher.limits.get(workflow_type)
            if lim is not None and lim.shared and queue and lim.free <= 0:
                self.want_type_slots(workflow_type)
            while queue and slot.free > 0 and (lim is None or lim.free > 0):
                run_id = queue.popleft()
                if run_id in self.cache:
                    self._dispatch(run_id, from_queue=True)
                else:
                    # Reserved now, not when the task starts: otherwise ``slot.free`` does not
                    # drop in this loop, which then empties the whole queue into reads (and
                    # every run past the slot's capacity is queued again, evicted, read again).
                    slot.reserved += 1
                    if lim is not None:
                        lim.reserved += 1
                    self.spawn(self._dispatch_loaded(run_id, slot, lim))

    def type_slot_free(self: Runtime, workflow_type: str) -> None:
        """A slot of a limited type came free: serve its queue at the next tick (once)."""
        if workflow_type not in self._draining_types:
            self._draining_types.add(workflow_type)
            asyncio.get_running_loop().call_soon(self._drain_type, workflow_type)

    def _drain_type(self: Runtime, workflow_type: str) -> None:
        """Give the free slots of a limited type to the runs at the head of its queue."""
        self._draining_types.discard(workflow_type)
        lim = self.dispatcher.limits.get(workflow_type)
        queue = self.dispatcher.queued(workflow_type)
        while lim is not None and queue and lim.free > 0:
            slot = self.dispatcher.pick(workflow_type)
            if slot is None:
                return  # no worker has room: its ``_drain`` serves the queue when it has
            run_id = queue.popleft()
            if run_id in self.cache:
                self._dispatch(run_id, from_queue=True)
            else:
                slot.reserved += 1
                lim.reserved += 1
                self.spawn(self._dispatch_loaded(run_id, slot, lim))
        if lim is not None and lim.shared:
            if queue:
                self.want_type_slots(workflow_type)
            elif lim.spare and lim.free > 0:  # claimed for runs that went elsewhere
                extra = lim.spare[len(lim.spare) - lim.free :]
                del lim.spare[len(lim.spare) - lim.free :]
                self.spawn(self._give_back(workflow_type, extra))

    # -- slots shared by a cluster (PostgreSQL: rows of type_slots) -----------------------------
    # A member claims rows for the runs queued here, in one statement, and gives each back once
    # the step's outcome is committed. Rows of a member that died come back when it is taken
    # over (a row whose holder is no member is free). Within a member runs keep their order;
    # across members the order is approximate: a member waiting for a row asks again every
    # SLOT_POLL_S.

    def want_type_slots(self: Runtime, workflow_type: str) -> None:
        if workflow_type not in self._claiming:
            self._claiming.add(workflow_type)
            self.spawn(self._claim_type_slots(workflow_type))

    async def _claim_type_slots(self: Runtime, workflow_type: str) -> None:
        try:
            while not self.storage.lost.is_set():
                lim = self.dispatcher.limits.get(workflow_type)
                queue = self.dispatcher.queued(workflow_type)
                if lim is None or lim.limit is None or not queue or lim.free > 0:
                    return
                if self._giving.get(workflow_type):
                    return  # the row given back now is asked for again once it is back
                count = min(len(queue), lim.limit - len(lim.holders) - len(lim.spare))
                got: list[int] = []
                if count > 0:
                    try:
                        got = await self.storage.claim_type_slots(workflow_type, lim.limit, count)
                    except Exception as exc:  # the database is away: ask again
                        log.warning("could not claim a slot of %s: %s", workflow_type, exc)
                if got:
                    lim.spare.extend(got)
                    self._claiming.discard(workflow_type)
                    self._drain_type(workflow_type)
                    return
                await asyncio.sleep(SLOT_POLL_S)
        finally:
            self._claiming.discard(workflow_type)

    def type_slot_back(self: Runtime, workflow_type: str, row: int) -> None:
        self.spawn(self._give_back(workflow_type, [row]))

    async def _give_back(self: Runtime, workflow_type: str, rows: list[int]) -> None:
        self._giving[workflow_type] = self._giving.get(workflow_type, 0) + 1
        try:
            while not self.storage.lost.is_set():
                try:
                    await self.storage.release_type_slots(workflow_type, rows)
                    break
                except Exception as exc:  # held until given back: ask again
                    log.warning("could not give back a slot of %s: %s", workflow_type, exc)
                    await asyncio.sleep(SLOT_POLL_S)
        finally:
            self._giving[workflow_type] -= 1
        queue = self.dispatcher.queued(workflow_type)
        if queue and workflow_type not in self._claiming:
            self.want_type_slots(workflow_type)

    def drain_all(self: Runtime) -> None:
        for slot in list(self.dispatcher.workers.values()):
            self._drain(slot)

    # -- workers come and go --------------------------------------------------------------------

    def worker_joined(self: Runtime, slot: WorkerSlot, definitions: list[dict[str, Any]]):
        ops: list[rec.Op] = []
        tdefs = [TypeDef.from_definition(definition) for definition in definitions]
        slot.limits = {
            t.workflow_type: t.max_concurrent_runs
            for t in tdefs
            if t.max_concurrent_runs is not None
        }
        for definition, tdef in zip(definitions, tdefs, strict=True):
            self.types[tdef.workflow_type] = tdef
            ops.append(rec.SaveType(tdef.workflow_type, definition, now_ms()))
        self.dispatcher.add(slot)
        self._drain(slot)
        return tr.Decision(None, ops=ops, reply={"worker": slot.name})

    def worker_left(self: Runtime, connection_id: str) -> None:
        for run_id, dispatch_id in self.dispatcher.remove(connection_id):
            self.step_reported(run_id)  # progress held for its step: the next attempt says anew
            self.spawn(self.on_run(run_id, self._lost(dispatch_id)))
        for qid, fut in list(self.queries.items()):
            if getattr(fut, "connection_id", None) == connection_id and not fut.done():
                fut.set_exception(QueryFailedError("the worker running the query disconnected"))
                self.queries.pop(qid, None)

    def _lost(self: Runtime, dispatch_id: str):
        def message(s: RunState) -> WorkerLost:
            return WorkerLost(
                self.types[s.workflow_type], dispatch_id, self.config.max_worker_losses
            )

        return message
