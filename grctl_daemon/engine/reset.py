"""Reset: a new run of a workflow_id that starts at a step of an old run, with its store then.

Pure, like the rest of the engine. ``ResetScan`` folds an old run's history (fed a page at a
time, so a long history never sits in memory whole) into a ``ResetPlan``: the store as it was
committed when the step last began (replayed from the ``writes`` of each ``step_completed``),
the arguments the step was scheduled with, and the steps of the old run after that point. The
transitions then end the old run (``terminated`` if still active, with a ``reset`` history row
naming the new run, in the same unit) and start the new one at the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grctl.errors import InvalidInputError
from grctl.models.definition import TypeDef
from grctl.models.run import RunStatus
from grctl_daemon.engine.decision import Decision, StopStep, _history, _save
from grctl_daemon.engine.scheduling import _end, _schedule
from grctl_daemon.engine.state import RunState
from grctl_daemon.storage import base as rec

MAX_SKIPPED = 100  # steps after the reset point listed by name; the rest are only counted


@dataclass
class ResetPlan:
    """What a reset to ``to_step`` takes from the old run's history."""

    to_step: str
    found: bool = False  # the step began at least once in the run
    seq: int = 0  # the history row of its last ``step_started``
    handler_kind: str = "step"
    args: bytes | None = None
    store: dict[str, bytes | None] = field(default_factory=dict)
    unrecorded: bool = False  # a store write before that point was not kept (an older grctl)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # steps started after it
    skipped_count: int = 0
    ran: set[str] = field(default_factory=set)  # every step that began in the run


class ResetScan:
    """Feed an old run's history rows in order (``feed``), then read ``plan``."""

    def __init__(self, to_step: str) -> None:
        self.plan = ResetPlan(to_step)
        self._store: dict[str, bytes | None] = {}
        self._unrecorded = False
        self._pending: dict[int, bytes | None] = {}  # events received, not yet dispatched
        self._kind: str = "start"
        self._args: bytes | None = None

    def feed(self, rows: list[dict[str, Any]]) -> None:
        plan = self.plan
        for row in rows:
            kind, data, step = row["kind"], row.get("data") or {}, row.get("step_name")
            if kind == "workflow_started":
                self._kind, self._args = "start", data.get("input")
            elif kind == "workflow_reset":
                self._kind, self._args = data.get("handler_kind", "step"), data.get("args")
                self._store = dict(data.get("store") or {})
            elif kind == "event_received":
                self._pending[data.get("inbox_seq", 0)] = data.get("payload")
            elif kind == "event_dispatched":
                self._kind, self._args = "event", self._pending.pop(data.get("inbox_seq", 0), None)
            elif kind == "step_completed":
                if "writes" in data:
                    self._store.update(data["writes"] or {})
                elif data.get("store_keys"):
                    self._unrecorded = True
                self._kind, self._args = "step", None
            elif kind == "wait_timed_out":
                self._kind, self._args = "step", None
            elif kind == "child_ended":  # a wait_for_child's target gets the child's outcome
                self._kind, self._args = "step", data.get("outcome")
            elif kind == "step_started" and step:
                plan.ran.add(step)
                if step == plan.to_step:
                    plan.found, plan.seq = True, row["seq"]
                    plan.handler_kind, plan.args = self._kind, self._args
                    plan.store, plan.unrecorded = dict(self._store), self._unrecorded
                    plan.skipped, plan.skipped_count = [], 0
                elif plan.found:
                    plan.skipped_count += 1
                    if len(plan.skipped) < MAX_SKIPPED:
                        attempt = data.get("attempt")
                        plan.skipped.append({"seq": row["seq"], "step": step, "attempt": attempt})


def preview(s: RunState, plan: ResetPlan) -> dict[str, Any]:
    """What a reset would do (and, once done, did): the reply without the new run's id."""
    return {
        "workflow_id": s.workflow_id,
        "from_run_id": s.run_id,
        "from_status": str(s.status),
        "to_step": plan.to_step,
        "handler_kind": plan.handler_kind,
        "args": plan.args,
        "store": plan.store,
        "skipped": plan.skipped,
        "skipped_count": plan.skipped_count,
        "terminates": s.is_active,
    }


def reset_old(s0: RunState, plan: ResetPlan, new_run_id: str, now: int) -> Decision:
    """The old run: ``terminated`` now if still active, and a ``reset`` row naming the new run."""
    s = s0.copy()
    d = Decision(s)
    reason = f"reset to {plan.to_step} as run {new_run_id}"
    terminated = s.is_active
    if terminated:
        if s.dispatch_id is not None:
            d.effects.append(StopStep(s.dispatch_id, "run reset"))
        _end(s, d, RunStatus.TERMINATED, now, reason=reason)
    _history(
        s,
        d,
        "reset",
        now,
        {
            "to_step": plan.to_step,
            "new_run_id": new_run_id,
            "from_seq": plan.seq,
            "terminated": terminated,
        },
        plan.to_step,
    )
    _save(s, d, now)
    d.reply = preview(s0, plan) | {"run_id": new_run_id}
    return d


def reset_start(old: RunState, plan: ResetPlan, new_run_id: str, now: int) -> Decision:
    """The new run: same workflow_id, input and partition, the plan's store, at the step."""
    s = RunState(
        run_id=new_run_id,
        workflow_id=old.workflow_id,
        workflow_type=old.workflow_type,
        status=RunStatus.RUNNING,
        created_ms=now,
        updated_ms=now,
        input=old.input,
        parent_workflow_id=old.parent_workflow_id,
        parent_run_id=old.parent_run_id,
        partition=old.partition,
        version=1,
    )
    d = Decision(s)
    _history(
        s,
        d,
        "workflow_reset",
        now,
        {
            "from_run_id": old.run_id,
            "to_step": plan.to_step,
            "from_seq": plan.seq,
            "handler_kind": plan.handler_kind,
            "args": plan.args,
            "input": old.input,
            "store": plan.store,
        },
    )
    store = {k: v for k, v in plan.store.items() if v is not None}
    if store:
        s.store = store
        d.ops.append(rec.PutStore(s.run_id, store))
    _schedule(s, d, plan.to_step, plan.handler_kind, plan.args)
    d.ops.insert(0, rec.InsertRun(s))
    d.reply = {"workflow_id": s.workflow_id, "run_id": new_run_id}
    return d


def check_plan(s: RunState, tdef: TypeDef, plan: ResetPlan) -> None:
    """Refuse a reset to a step the type lacks, one that never began, or a store not kept."""
    step = plan.to_step
    handlers = {tdef.start_name, *tdef.steps, *tdef.events}
    if step not in handlers:
        raise InvalidInputError(
            f"workflow type {s.workflow_type!r} has no step {step!r} (handlers: "
            f"{', '.join(sorted(handlers))}); cannot reset {s.workflow_id!r} to it",
            workflow_id=s.workflow_id,
            run_id=s.run_id,
        )
    if not plan.found:
        ran = ", ".join(sorted(plan.ran)) or "none"
        raise InvalidInputError(
            f"step {step!r} never ran in workflow {s.workflow_id!r} run {s.run_id} (steps that "
            f"ran: {ran}); reset to a step that began in this run, or start a new run with: "
            f"grctl start {s.workflow_type} --id {s.workflow_id}",
            workflow_id=s.workflow_id,
            run_id=s.run_id,
        )
    if plan.unrecorded:
        raise InvalidInputError(
            f"workflow {s.workflow_id!r} run {s.run_id} was recorded by an older grctl that did "
            f"not keep the store's values in its history, so its store at step {step!r} cannot "
            "be rebuilt; reset works on runs recorded by this version",
            workflow_id=s.workflow_id,
            run_id=s.run_id,
        )
