"""A client's requests that change a run: start, send, cancel, terminate, reset; and timers.

Each finds the run (memory or database), then decides on it as it is once every read is done
(``Runtime.on_run``), and answers once the unit is durable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ulid import ULID

from grctl import _faults as faults
from grctl import protocol as p
from grctl.errors import WorkflowAlreadyRunningError, WorkflowNotRunningError
from grctl.models.run import ACTIVE_STATUSES
from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.decide import (
    MAX_KEY_LENGTH,
    Cancel,
    Reset,
    ResetStarted,
    Send,
    SendWithStart,
    Start,
    Terminate,
    TimerFired,
    decide,
)
from grctl_daemon.engine.reset import ResetScan
from grctl_daemon.engine.state import RunState
from grctl_daemon.runtime.schedules import TIMER_KIND
from grctl_daemon.storage import base as rec
from grctl_daemon.storage.base import partition_of
from grctl_daemon.timers import now_ms

if TYPE_CHECKING:
    from grctl_daemon.runtime import Runtime


class Requests:
    """The request half of the Runtime (a mixin: see ``runtime/__init__.py``)."""

    async def start_workflow(self: Runtime, m: p.StartWorkflow) -> Any:
        self.check_owned(partition_of(m.workflow_id), m.workflow_id)
        start = Start(
            self.types.get(m.workflow_type),
            m.workflow_type,
            m.workflow_id,
            str(ULID()),
            p.unwrap(m.workflow_input),
            fault=self.fault(),
            known_types=self.types.keys(),
            run_timeout_ms=m.run_timeout_ms,
        )
        # A run of this workflow_id that memory does not hold is caught by the database's
        # one-active-run index, which refuses the unit.
        d = decide(self.cache.latest(m.workflow_id), start, now_ms())
        try:
            return await self.commit(d, early=True)
        except rec.UnitRefused:
            found = await self.storage.find_run(m.workflow_id, None)
            run_id = found.run_id if found is not None and found.status in ACTIVE_STATUSES else None
            raise WorkflowAlreadyRunningError(
                f"workflow {m.workflow_id!r} is already running"
                + (f" (run {run_id})" if run_id else "")
                + f"; wait for it with: grctl result {m.workflow_id} --wait",
                workflow_id=m.workflow_id,
                run_id=run_id,
            ) from None

    async def send(self: Runtime, m: p.SendEvent) -> Any:
        state = await self.find(m.workflow_id, m.run_id)
        return await self._send_to(
            state.run_id, m.event_name, p.unwrap(m.payload), m.idempotency_key
        )

    async def _send_to(
        self: Runtime, run_id: str, event_name: str, payload: bytes | None, key: str | None
    ) -> Any:
        """Send to one run. With a key, the database is asked for it first (only then: the
        keyless path reads nothing); a key sent since that read is in the run's memory, and
        the unique index refuses whatever slips past both (the key is then read again)."""
        for _ in range(2):
            known = None
            if isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH:
                known = await self.storage.find_event_key(run_id, key)

            def message(s: RunState, known: int | None = known) -> Send:
                tdef = self.types.get(s.workflow_type)
                return Send(tdef, event_name, payload, self.fault(), key, known)

            try:
                return await self.on_run(run_id, message, early=True)
            except rec.UnitRefused:
                if key is None:
                    raise
        raise rec.UnitRefused(f"the send of {event_name!r} to run {run_id} was refused twice")

    async def send_with_start(self: Runtime, m: p.SendWithStart) -> Any:
        """Start the run unless one is active, and send the event to it, in one unit.

        Races with a start of the same workflow_id end in the database's one-active-run
        index: the loser's unit is refused and it sends to the winner's run instead.
        """
        self.check_owned(partition_of(m.workflow_id), m.workflow_id)
        payload = p.unwrap(m.payload)
        key = m.idempotency_key
        for _ in range(3):
            state = await self.cache.find(m.workflow_id, None)
            if state is not None and state.is_active:
                self.check_owned(state.partition, m.workflow_id)
                try:
                    reply = await self._send_to(state.run_id, m.event_name, payload, key)
                except WorkflowNotRunningError:
                    continue  # it ended meanwhile: start a new one
                return {**reply, "started": False}
            start = Start(
                self.types.get(m.workflow_type),
                m.workflow_type,
                m.workflow_id,
                str(ULID()),
                p.unwrap(m.workflow_input),
                fault=self.fault(),
                known_types=self.types.keys(),
                run_timeout_ms=m.run_timeout_ms,
            )
            # No await since the look-up in memory: decided on what memory holds now.
            latest = self.cache.latest(m.workflow_id)
            if latest is not None and latest.is_active:
                continue  # a start won while we read: send to its run
            send = Send(self.types.get(m.workflow_type), m.event_name, payload, None, key)
            d = decide(latest, SendWithStart(start, send), now_ms())
            try:
                return await self.commit(d)
            except rec.UnitRefused:
                continue  # a run of this workflow_id the memory did not hold: send to it
        raise WorkflowAlreadyRunningError(
            f"workflow {m.workflow_id!r} kept starting and ending while the event was sent; "
            "send it again",
            workflow_id=m.workflow_id,
        )

    async def cancel(self: Runtime, m: p.CancelWorkflow) -> Any:
        state = await self.find(m.workflow_id, m.run_id)
        return await self.on_run(state.run_id, lambda s: Cancel(m.reason, self.fault()))

    async def terminate(self: Runtime, m: p.TerminateWorkflow) -> Any:
        state = await self.find(m.workflow_id, m.run_id)
        return await self.on_run(state.run_id, lambda s: Terminate(m.reason, self.fault()))

    async def reset(self: Runtime, m: p.ResetWorkflow) -> Any:
        """Refold the run's committed history a page at a time, then end it and start anew."""
        state = await self.find(m.workflow_id, m.run_id)
        scan = ResetScan(m.to_step)
        after = 0
        while True:
            rows = await self.storage.read_history(state.run_id, after, p.PAGE_ROWS)
            scan.feed(rows)
            if len(rows) < p.PAGE_ROWS:
                break
            after = rows[-1]["seq"]
        new_run_id = str(ULID())

        def message(s: RunState) -> Reset:
            return Reset(
                self.types.get(s.workflow_type), scan.plan, new_run_id, m.dry_run, self.fault()
            )

        async def commit(s: RunState, d: tr.Decision) -> None:
            if m.dry_run:
                return
            # The new run is decided on the old one as the reset leaves it: the old run's end
            # and the new run's row go in one unit, in that order (one active run per id).
            new = decide(d.state, ResetStarted(scan.plan, new_run_id), now_ms())
            try:
                await self.commit(d, new)
            except rec.UnitRefused:  # a newer run of the workflow_id is active
                found = await self.storage.find_run(s.workflow_id, None)
                other = found.run_id if found is not None else "?"
                raise WorkflowAlreadyRunningError(
                    f"workflow {s.workflow_id!r} has another active run ({other}); reset that "
                    f"run instead (grctl reset {s.workflow_id} --to-step {m.to_step}), or end "
                    f"it first: grctl terminate {s.workflow_id}",
                    workflow_id=s.workflow_id,
                    run_id=other,
                ) from None

        reply = await self.on_run(state.run_id, message, after=commit)
        return {
            **reply,
            "args": p.packed(reply["args"]),
            "store": {k: p.packed(v) for k, v in reply["store"].items()},
        }

    # -- timers ---------------------------------------------------------------------------------

    def on_timer(self: Runtime, run_id: str, kind: str, token: str) -> None:
        if kind == TIMER_KIND:
            return self.on_schedule_timer(run_id, token)
        state = self.cache.get(run_id)
        if state is not None and state.timers.get(kind, (0, None))[1] != token:
            return  # void, and known so without a read: the step or wait it was for is over
        self.spawn(self._fire(run_id, kind, token))

    async def _fire(self: Runtime, run_id: str, kind: str, token: str) -> None:
        def message(s: RunState) -> TimerFired:
            health = self.storage.health()
            return TimerFired(
                self.types.get(s.workflow_type), kind, token, self.fault(), health["cleared_ms"]
            )

        def after(s: RunState, d: tr.Decision):
            if faults.ARMED and (d.state is not s or d.ops):
                faults.hit("timer_fire")
            return self.apply(d)

        await self.on_run(run_id, message, after=after, missing_ok=True)
