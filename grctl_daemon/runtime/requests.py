"""A client's requests that change a run: start, send, cancel, terminate; and timers firing.

Each finds the run (memory or database), then decides on it as it is once every read is done
(``Runtime.on_run``), and answers once the unit is durable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ulid import ULID

from grctl import _faults as faults
from grctl import protocol as p
from grctl.errors import WorkflowAlreadyRunningError
from grctl.models.run import ACTIVE_STATUSES
from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.decide import Cancel, Send, Start, Terminate, TimerFired, decide
from grctl_daemon.engine.state import RunState
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
        )
        # A run of this workflow_id that memory does not hold is caught by the database's
        # one-active-run index, which refuses the unit.
        d = decide(self.cache.latest(m.workflow_id), start, now_ms())
        try:
            return await self.commit(d)
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
        payload = p.unwrap(m.payload)

        def message(s: RunState) -> Send:
            return Send(self.types.get(s.workflow_type), m.event_name, payload, self.fault())

        return await self.on_run(state.run_id, message)

    async def cancel(self: Runtime, m: p.CancelWorkflow) -> Any:
        state = await self.find(m.workflow_id, m.run_id)
        return await self.on_run(state.run_id, lambda s: Cancel(m.reason, self.fault()))

    async def terminate(self: Runtime, m: p.TerminateWorkflow) -> Any:
        state = await self.find(m.workflow_id, m.run_id)
        return await self.on_run(state.run_id, lambda s: Terminate(m.reason, self.fault()))

    # -- timers ---------------------------------------------------------------------------------

    def on_timer(self: Runtime, run_id: str, kind: str, token: str) -> None:
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
