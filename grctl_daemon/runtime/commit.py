"""Decisions applied: states installed, one unit committed, effects performed once it is durable.

Every request is handled in two halves. The first is synchronous: find the run's state (after
any await that loads it), ask ``decide`` for a Decision, install the new state in the cache and
queue the unit, so decisions on one run are strictly ordered by the event loop. The second runs
when the unit is durable and only then lets anything out: a step to a worker, a reply, a
result to its waiters, history to its followers, a timer armed. A unit that fails never lets
its effects out: a refused one (a duplicate start, a stale save) drops the runs it touched from
memory so they are read back as the database has them; any other failure stops the daemon.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, NoReturn

from grctl import _faults as faults
from grctl import protocol as p
from grctl.errors import StaleDispatchError, StorageUnavailableError
from grctl_daemon.dispatch import WorkerSlot
from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.decide import ChildEnded, decide
from grctl_daemon.engine.state import RunState
from grctl_daemon.storage import base as rec
from grctl_daemon.timers import now_ms

if TYPE_CHECKING:
    from grctl_daemon.runtime import Runtime

log = logging.getLogger("grctl.daemon")

Send = tuple[WorkerSlot, p.DispatchStep]


def _stopping(exc: BaseException) -> StorageUnavailableError:
    """What a request hears when a commit it depends on failed (the daemon then stops)."""
    why = f" ({exc})" if isinstance(exc, rec.CommitFailed) else ""
    return StorageUnavailableError(
        f"the daemon's database failed a commit{why}; the daemon is stopping and nothing "
        "acknowledged is lost. Restart it with: grctl daemon start"
    )


class Commits:
    """The apply/commit/effects half of the Runtime (a mixin: see ``runtime/__init__.py``)."""

    def apply(
        self: Runtime,
        *decisions: tr.Decision,
        sends: list[Send] | None = None,
        early: bool = False,
    ) -> asyncio.Future[None]:
        """Install the decisions' states now, commit their ops as one unit, then do effects.

        ``sends`` are dispatches already prepared for these decisions: they go out with the
        ones prepared here, once the unit is durable. ``early`` (a start, an event delivered):
        they go out now, marked early, and the writer waits a moment for their outcome to
        commit both at once (``group_commit.Linger``); the worker acts on nothing (no task, no
        durable call) before asking ``Settle``, answered once this unit is durable.
        """
        unit = list(decisions)
        touched: dict[str, RunState] = {}
        for d in unit:
            self._install(d, touched)
        self._child_endings(unit, touched)
        # A step scheduled here is handed to a worker in the same unit, so the hot path costs
        # one commit per step; the worker hears of it only once that commit is durable.
        sends = list(sends or ())
        for d in list(unit):
            for effect in d.effects:
                if type(effect) is tr.Dispatch:
                    prepared = self._prepare_dispatch(effect.run_id)
                    if prepared is not None:
                        unit.append(prepared[0])
                        self._install(prepared[0], touched)
                        sends.append(prepared[1:])
        ops: list[rec.Op] = [op for d in unit for op in d.ops]
        # Nothing to write (a duplicate event key, say): the reply still rests on the state
        # memory holds, so it leaves once that state is durable.
        fut = self.storage.commit(ops) if ops else self._behind(touched)
        if early and sends:
            for slot, msg in sends:
                msg.early = True
                slot.send(msg)
                self.unsettled[msg.dispatch_id] = fut
                self.storage.linger.expect(msg.dispatch_id)
        for run_id in touched:
            self.inflight[run_id] = fut
        fut.add_done_callback(lambda f: self._settled(f, unit, touched, sends, early))
        return fut

    def _behind(self: Runtime, runs: dict[str, RunState]) -> asyncio.Future[Any]:
        """A future done once every unit in flight for ``runs`` is (at once if there is none)."""
        pending = [f for r in runs if (f := self.inflight.get(r)) is not None and not f.done()]
        if len(pending) == 1:
            return pending[0]
        if pending:
            return asyncio.gather(*pending)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def settle(self: Runtime, m: p.Settle) -> tuple[asyncio.Future[Any], Any]:
        """A step handed out early is about to act: answer once its dispatch is durable."""
        self.storage.linger.back(m.dispatch_id)  # it waits for that commit: no lingering
        committing = self.unsettled.get(m.dispatch_id)
        answer = asyncio.get_running_loop().create_future()
        if committing is None:
            self._by_dispatch(m.dispatch_id)  # durable, or refused as stale (never committed)
            answer.set_result(None)
            return answer, None

        def settled(f: asyncio.Future[None]) -> None:
            if answer.done():
                return
            if f.cancelled() or f.exception() is not None:
                # Refused (a start whose workflow_id the database found running) or failed:
                # the step never existed, and must not act.
                answer.set_exception(
                    StaleDispatchError(
                        f"dispatch {m.dispatch_id} was never committed; the step must not act"
                    )
                )
            else:
                answer.set_result(None)

        committing.add_done_callback(settled)
        return answer, None

    def _install(self: Runtime, d: tr.Decision, touched: dict[str, RunState]) -> None:
        s = d.state
        if s is None or d.error is not None:
            return
        if s.run_id not in touched:
            self.cache.deciding(s.run_id, self.cache.get(s.run_id))
        touched[s.run_id] = s
        self.cache.put(s)

    def _settled(
        self: Runtime,
        f: asyncio.Future[None],
        unit: list[tr.Decision],
        touched: dict[str, RunState],
        sends: list[Send],
        early: bool = False,
    ) -> None:
        if early:
            for _, msg in sends:
                self.unsettled.pop(msg.dispatch_id, None)
        inflight = self.inflight
        for run_id in touched:
            if inflight.get(run_id) is f:
                del inflight[run_id]
        exc = None if f.cancelled() else f.exception()
        if f.cancelled() or exc is not None:
            for run_id in touched:
                self.cache.settled(run_id, None)
            for slot, msg in sends:  # the workers' slots are free again
                self.dispatcher.release(msg.dispatch_id)
                if early:  # handed out on a unit that never became durable: stop it
                    slot.send(p.CancelStep(msg.dispatch_id, "its dispatch was not committed"))
            if isinstance(exc, rec.UnitRefused):
                for run_id in touched:
                    self.cache.forget(run_id)
                    self.spawn(self._revive(run_id))
            elif exc is not None and not self.fatal.is_set():
                log.critical("database commit failed; stopping the daemon: %s", exc)
                self.fatal.set()
            return
        for run_id, state in touched.items():
            self.cache.settled(run_id, state)
        if not early:
            for slot, msg in sends:
                slot.send(msg)
        if sends and faults.ARMED:
            faults.hit("after_dispatch")
        for d in unit:
            self._effects(d)
            self._publish(d)
        if self.tally is not None:
            self.tally.committed(unit)

    async def commit(self: Runtime, *decisions: tr.Decision, early: bool = False) -> Any:
        """Apply, wait until durable, return the first decision's reply (or raise its error).

        ``early``: the steps it dispatches go out at once (see ``apply``)."""
        for d in decisions:
            if d.error is not None:
                await self.refuse(d)
        try:
            await self.apply(*decisions, early=early)
        except rec.CommitFailed as exc:
            raise _stopping(exc) from None
        return decisions[0].reply

    async def refuse(self: Runtime, d: tr.Decision) -> NoReturn:
        """Raise ``d``'s refusal once the state it was decided on is durable.

        A refusal reads memory, which may be ahead of the database: a start, or an end, whose
        unit is not yet durable. Answered at once, it could tell a client of a run, or of an
        end, that a crash then loses. So it waits for the run's units in flight (they commit in
        order). If one fails, what the refusal read never existed: ``rec.UnitRefused`` asks the
        caller to decide again (a refused unit's runs are read back), and a failed commit says
        the daemon is stopping. A refusal about the disk itself answers at once.
        """
        error = d.error
        assert error is not None
        if d.state is not None and not isinstance(error, StorageUnavailableError):
            pending = self._behind({d.state.run_id: d.state})
            try:
                await asyncio.shield(pending)
            except rec.UnitRefused:
                raise rec.UnitRefused(f"decided on a unit that was refused: {error}") from None
            except (rec.CommitFailed, asyncio.CancelledError) as exc:
                if not pending.done() or (not pending.cancelled() and not pending.exception()):
                    raise  # this request was cancelled, not the unit
                raise _stopping(exc) from None
        raise error

    def _child_endings(
        self: Runtime, unit: list[tr.Decision], touched: dict[str, RunState]
    ) -> None:
        """A child that ends tells its parent, in the same unit: through ``completion_event``,
        and by ending a ``wait_for_child`` on it (the decider says which, if any).

        The callers that can end a child hold its parent in memory first (``Runtime.on_run``).
        """
        for d in list(unit):
            s = d.state
            if s is None or s.is_active or not s.parent_run_id or d.error is not None:
                continue
            if not any(type(e) is tr.RunEnded for e in d.effects):
                continue
            parent = self.cache.get(s.parent_run_id or "")
            if parent is None:
                # Not in memory: read back, it hears of the end in a unit of its own; a
                # parent pruned meanwhile (it ended first) is not there to tell.
                self.spawn(self._late_child_end(s))
                continue
            ended = decide(parent, ChildEnded(self.types.get(parent.workflow_type), s), now_ms())
            if ended.state is not parent and ended.error is None:
                unit.append(ended)
                self._install(ended, touched)

    async def _late_child_end(self: Runtime, child: RunState) -> None:
        def message(parent: RunState) -> ChildEnded:
            return ChildEnded(self.types.get(parent.workflow_type), child)

        told = await self.on_run(child.parent_run_id or "", message, missing_ok=True)
        if told is None and await self.cache.load(child.parent_run_id or "") is None:
            log.info(
                "child %s ended after its parent run %s was deleted (retention); its "
                "completion event is dropped",
                child.run_id,
                child.parent_run_id,
            )

    async def _revive(self: Runtime, run_id: str) -> None:
        """A run dropped after a refused unit, read back; a step it still has goes out again."""
        state = await self.cache.load(run_id)
        if state is not None and tr.ready(state):
            self._dispatch(run_id)

    def _effects(self: Runtime, d: tr.Decision) -> None:
        for effect in d.effects:
            kind = type(effect)
            if kind is tr.ArmTimer:
                self.timers.arm(
                    effect.run_id,
                    effect.kind,
                    effect.due_ms,
                    effect.token,
                    stored=effect.kind in tr.DURABLE_TIMERS,
                )
            elif kind is tr.Dispatch:
                self._dispatch(effect.run_id)
            elif kind is tr.StopStep:
                self.step_reported(effect.dispatch_id.split(".", 1)[0])  # its progress too
                slot = self.dispatcher.release(effect.dispatch_id)
                if slot is not None:
                    slot.send(p.CancelStep(effect.dispatch_id, effect.reason))
                    self._drain(slot)
            elif kind is tr.EndChain:
                slot = self.dispatcher.holder_of(effect.dispatch_id)
                if slot is not None:
                    slot.send(p.EndChain(effect.dispatch_id))
            elif kind is tr.RunEnded and d.state is not None:
                self.run_ended(d.state)

    def _publish(self: Runtime, d: tr.Decision) -> None:
        if d.state is None:
            return
        subs = self.followers.get(d.state.run_id)
        if not subs:
            return
        rows = [
            self.wire_history(
                d.state.workflow_id,
                d.state.run_id,
                {
                    "seq": op.seq,
                    "ts_ms": op.ts_ms,
                    "kind": op.kind,
                    "step_name": op.step_name,
                    "data": op.data,
                },
            )
            for op in d.ops
            if type(op) is rec.AppendHistory
        ]
        ended = not d.state.is_active
        for sub in list(subs):
            sub(rows, ended)
