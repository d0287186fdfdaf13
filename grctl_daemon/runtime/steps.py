"""A step's reports: its records and outcome (the hot path, with the steps chained after it),
the children it starts and the events it sends its parent.

Each is checked against the dispatch's fencing token (``_by_dispatch``): a report of a
dispatch that is no longer current is refused and changes nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ulid import ULID

from grctl import _faults as faults
from grctl import codec
from grctl import protocol as p
from grctl.errors import (
    InvalidInputError,
    StaleDispatchError,
    WorkflowAlreadyRunningError,
    WorkflowNotRunningError,
)
from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.decide import (
    Cancel,
    DispatchTo,
    Recorded,
    Send,
    Start,
    StepReturned,
    decide,
    record_summary,
)
from grctl_daemon.engine.progress import checked as checked_progress
from grctl_daemon.engine.state import RunState
from grctl_daemon.storage import base as rec
from grctl_daemon.timers import now_ms

if TYPE_CHECKING:
    from grctl_daemon.runtime import Runtime

MAX_AGO_MS = 60_000  # a chained step said to have run longer ago than this is timed "now"


@dataclass(slots=True)
class Link:
    """A step its worker ran in place after the one it reports (chained): its name, its outcome
    (whose dispatch id is set once it is decided; None for the step still running, ``running``)
    and when it began and ended (daemon ms)."""

    name: str
    outcome: p.CompleteStep | None
    began_ms: int
    ended_ms: int


class Steps:
    """The step-report half of the Runtime (a mixin: see ``runtime/__init__.py``)."""

    # -- the step hot path ----------------------------------------------------------------------
    # Answered without a task of their own: the decision is applied at once and the reply goes
    # out when the commit is durable (``Server._answer_hot`` adds that callback). Each returns
    # (durable, reply) or raises a refusal.

    def record(self: Runtime, m: p.RecordOutcome) -> tuple[asyncio.Future[None], Any]:
        state = self._by_dispatch(m.dispatch_id)
        d = decide(state, Recorded(m.dispatch_id, p.unwrap(m.record)), now_ms())
        if d.error is not None:
            raise d.error
        durable = self.apply(d)
        if faults.ARMED:
            durable.add_done_callback(lambda _: faults.hit("after_record"))
        return durable, d.reply

    def complete_step(self: Runtime, m: p.CompleteStep) -> tuple[asyncio.Future[Any], Any]:
        state = self._by_dispatch(m.dispatch_id)
        now = now_ms()
        links = self._links(state, m, now)
        message = self._step_returned(state, m)
        child = _child_waited(m, links)
        if child is not None or (
            state.parent_run_id is not None and state.parent_run_id not in self.cache
        ):
            # The step may end this child, and its parent hears of it in the same unit: read
            # the parent back first, then decide on the child as it is by then. A step that
            # waits for its own child is decided on that child's state, read back too.
            return asyncio.ensure_future(self._complete_later(state, m, links, child)), None
        # Timed when it ended: just before the first chained step began.
        d = decide(state, message, links[0].began_ms if links else now)
        if d.error is not None:
            raise d.error
        unit, reply, adopted = self._chained(state, d, m, links, None)
        return self._step_over(state, m.dispatch_id, unit, adopted), reply

    async def _complete_later(
        self: Runtime,
        state: RunState,
        m: p.CompleteStep,
        links: list[Link],
        child: str | None = None,
    ) -> Any:
        answer: list[Any] = [None]

        def after(s: RunState, d: tr.Decision) -> asyncio.Future[None]:
            unit, answer[0], adopted = self._chained(s, d, m, links, child)
            return self._step_over(s, m.dispatch_id, unit, adopted)

        await self.on_run(
            state.run_id, lambda s: self._step_returned(s, m, child), after=after, also=child
        )
        return answer[0]

    def _links(self: Runtime, state: RunState, m: p.CompleteStep, now: int) -> list[Link]:
        """The steps the worker ran in place after this one (``m.chain``), timed by the
        ``ago_ms`` each carries (how long before the report it began and ended, by the
        worker's clock: no skew). A malformed chain is refused whole, before anything is
        decided; a time that makes no sense is "now"."""
        if not m.chain and m.running is None:
            return []
        limit = 0 if self.dispatcher.limits.get(state.workflow_type) else self.config.chain_steps
        if len(m.chain or ()) + (m.running is not None) > limit + 1:
            raise InvalidInputError(
                f"the worker ran {len(m.chain or ())} steps of {state.workflow_id!r} in place; "
                f"this daemon allows {limit}"
            )
        links = []
        for link in m.chain or ():
            if not isinstance(link, dict) or not isinstance(link.get("step_name"), str):
                raise InvalidInputError("each step of a chain is a map with a 'step_name'")
            fields = {k: link.get(k) for k in ("directive", "error", "progress")}
            fields["store_writes"] = link.get("store_writes") or {}
            for name, value in fields.items():
                if value is not None and not isinstance(value, dict):
                    raise InvalidInputError(f"field {name!r} of a chained step is not a map")
            began = ended = now
            ago = link.get("ago_ms")
            if type(ago) is list and len(ago) == 2:
                a, b = ago
                if type(a) is int and type(b) is int and MAX_AGO_MS >= a >= b >= 0:
                    began, ended = now - a, now - b
            links.append(Link(link["step_name"], p.CompleteStep(0, "", **fields), began, ended))
        return links

    def _chained(
        self: Runtime,
        state: RunState,
        first: tr.Decision,
        m: p.CompleteStep,
        links: list[Link],
        child: str | None,
    ) -> tuple[list[tr.Decision], Any, str | None]:
        """The unit of a step and the steps its worker ran in place after it: (decisions,
        reply, dispatch id adopted).

        Each chained step is decided as if it had been dispatched to the worker the moment the
        step before it was decided (a ``step_started`` marked ``chained``, then its outcome),
        so the whole chain commits as one unit, through the same transitions as any step.
        The chain stops at the first step the decider did not schedule (the run was cancelled,
        say): the worker's outcomes past it are dropped, and the step that was scheduled goes
        out as usual. ``m.running`` names the step the worker runs in place still; if it is
        the one scheduled it is dispatched to that worker (adopted) in this unit, and the reply
        says so once the unit is durable.

        A cancel that came while the chain ran (its EndChain push let the worker start no
        further step) ends the run after the steps that ran, which are all kept: every step
        that ran is in the history, as a dispatched step that finishes is.

        History is timed by when each step began and ended on the worker (``Link``), kept in
        order.
        """
        reply = first.reply
        if not links and m.running is None:
            return [first], reply, None
        cancelled = False
        if links and state.cancel_requested:
            calm = state.copy()
            calm.cancel_requested = False
            again = decide(calm, self._step_returned(calm, m, child), links[0].began_ms)
            if again.error is None:
                first, cancelled = again, True
        unit = [first]
        last = first
        adopted = None
        if m.running is not None:
            reply = {"adopted": None}
        slot = self.dispatcher.holder_of(m.dispatch_id)
        at = first.state.updated_ms if first.state is not None else now_ms()
        if m.running is not None:
            links = [*links, Link(m.running, None, now_ms(), now_ms())]
        for link in links:
            name = link.name
            s = last.state
            scheduled = next((e for e in last.effects if type(e) is tr.Dispatch), None)
            if (
                slot is None
                or scheduled is None
                or s is None
                or not tr.ready(s)
                or s.handler_kind != "step"
                or s.step_name != name
            ):
                break
            tdef = self.types[s.workflow_type]
            at = max(at, link.began_ms)  # in order, whatever the worker said
            sent = decide(s, DispatchTo(tdef, slot.name, chained=True), at)
            if sent.state is None or sent.state.dispatch_id is None:
                break
            outcome = link.outcome
            if outcome is None:  # still running on the worker: it keeps it, unless cancelled
                if cancelled:
                    break
                last.effects.remove(scheduled)
                unit.append(sent)
                adopted = sent.state.dispatch_id
                reply = {
                    "adopted": {
                        "dispatch_id": adopted,
                        "attempt": sent.state.attempt,
                        "timeout_ms": sent.reply,
                    }
                }
                break
            outcome.dispatch_id = sent.state.dispatch_id
            at = max(at, link.ended_ms)
            returned = decide(sent.state, self._step_returned(sent.state, outcome, child), at)
            if returned.error is not None:
                break
            last.effects.remove(scheduled)
            # Over before it was armed: no step timer for it.
            sent.effects = [e for e in sent.effects if type(e) is not tr.ArmTimer]
            unit += (sent, returned)
            last = returned
        if cancelled:
            end = decide(last.state, Cancel("cancel requested"), now_ms())
            if end.error is None:
                last.effects = [e for e in last.effects if type(e) is not tr.Dispatch]
                unit.append(end)
        return unit, reply, adopted

    def _step_returned(
        self: Runtime, state: RunState, m: p.CompleteStep, child: str | None = None
    ) -> StepReturned:
        directive = None
        if m.directive is not None:
            directive = dict(m.directive)
            directive["result"] = p.unwrap(directive.get("result"))
        writes = {}
        for key, value in (m.store_writes or {}).items():
            if not isinstance(key, str):
                raise InvalidInputError("store keys must be strings")
            writes[key] = p.unwrap(value)
        tdef = self.types[state.workflow_type]
        child_state = None if child is None else self.cache.get(child)
        progress = None
        if m.progress is not None:  # the step emitted: the last of each name, kept in history
            progress = {k: p.unwrap(v) for k, v in checked_progress(m.progress).items()}
        return StepReturned(tdef, m.dispatch_id, directive, writes, m.error, child_state, progress)

    def _step_over(
        self: Runtime,
        state: RunState,
        dispatch_id: str,
        unit: list[tr.Decision],
        adopted: str | None = None,
    ) -> asyncio.Future[None]:
        """Commit a step's outcome (with the steps chained after it), free its worker's slot,
        or hand it the step ``adopted`` (see ``_chained``)."""
        self.timers.cancel(state.run_id, tr.STEP_TIMER)
        if self.latest:  # some step emitted progress (only then: the step path stays as it was)
            self.step_reported(state.run_id)
        limited = self.dispatcher.holds_type_slot(dispatch_id)
        slot = self.dispatcher.release(dispatch_id, hold_type_slot=limited)
        if adopted is not None and slot is not None:
            self.dispatcher.assign(slot, adopted, state.run_id)
            slot = None  # still busy: nothing to drain
        durable = self.apply(*unit)
        self.storage.linger.back(dispatch_id)  # handed out early: its outcome is queued now
        if adopted is not None and faults.ARMED:  # handed over with the reply: a dispatch too
            loop = asyncio.get_running_loop()
            durable.add_done_callback(lambda _: loop.call_soon(faults.hit, "after_dispatch"))
        if limited:  # the type's slot is held until the outcome is committed (or not)
            durable.add_done_callback(lambda _: self.dispatcher.release_type(dispatch_id))
        if slot is not None:

            def drain(f: asyncio.Future[None]) -> None:
                if not f.cancelled() and f.exception() is None:
                    self._drain(slot)

            durable.add_done_callback(drain)
        return durable

    # -- children -------------------------------------------------------------------------------

    async def start_child(self: Runtime, m: p.StartChild) -> Any:
        parent = self._by_dispatch(m.dispatch_id)
        blob = p.unwrap(m.record)
        record_summary(blob)  # refuses a record that is not a map with an 'op'
        start = Start(
            self.types.get(m.workflow_type),
            m.workflow_type,
            m.workflow_id,
            str(ULID()),
            p.unwrap(m.workflow_input),
            parent=parent,
            parent_tdef=self.types.get(parent.workflow_type),
            completion_event=m.completion_event,
            known_types=self.types.keys(),
            run_timeout_ms=m.run_timeout_ms,
        )
        child = decide(self.cache.latest(m.workflow_id), start, now_ms())
        try:
            if child.error is not None:
                await self.refuse(child)
            record = codec.unpack(blob)
            record["value"] = child.reply
            note = {"child_workflow_id": m.workflow_id, "child_run_id": child.reply["run_id"]}
            blob = codec.pack(record)
            recd = decide(parent, Recorded(m.dispatch_id, blob, note), now_ms())
            return await self.commit(child, recd)
        except rec.UnitRefused:
            raise WorkflowAlreadyRunningError(
                f"workflow {m.workflow_id!r} is already running", workflow_id=m.workflow_id
            ) from None

    async def send_to_parent(self: Runtime, m: p.SendToParent) -> Any:
        child = self._by_dispatch(m.dispatch_id)
        if not child.parent_workflow_id or not child.parent_run_id:
            raise InvalidInputError(f"workflow {child.workflow_id!r} has no parent")
        parent_id = child.parent_run_id
        self.cache.hold(parent_id)
        try:
            parent = await self.cache.load(parent_id)
            child = self._by_dispatch(m.dispatch_id)  # as it is now, after the read
            if parent is None or not parent.is_active:
                ended = WorkflowNotRunningError(
                    f"parent workflow {child.parent_workflow_id!r} has ended; cannot send "
                    f"{m.event_name!r} to it",
                    workflow_id=child.parent_workflow_id,
                )
                await self.refuse(tr.Decision(parent, error=ended))
            sent = decide(
                parent,
                Send(self.types.get(parent.workflow_type), m.event_name, p.unwrap(m.payload)),
                now_ms(),
            )
            recd = decide(child, Recorded(m.dispatch_id, p.unwrap(m.record)), now_ms())
            return await self.commit(recd, sent)
        finally:
            self.cache.release(parent_id)

    def _by_dispatch(self: Runtime, dispatch_id: str) -> RunState:
        state = self.cache.get(dispatch_id.split(".", 1)[0])
        if state is None or state.dispatch_id != dispatch_id:
            self.dispatcher.release(dispatch_id)
            raise StaleDispatchError(f"dispatch {dispatch_id} is no longer current; result dropped")
        return state


def _child_waited(m: p.CompleteStep, links: list[Link]) -> str | None:
    """The child whose end a ``wait_for_child`` directive of this unit names: the step's own,
    or the last chained step's (a wait ends a chain)."""
    directive = (links[-1].outcome if links else m).directive
    child = directive.get("child_run_id") if directive else None
    return child if isinstance(child, str) else None
