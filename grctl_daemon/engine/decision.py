"""What a transition returns, and the bookkeeping every transition shares.

Holds the ``Decision`` (new state, ops to commit, effects to perform after the commit, reply or
refusal), the effect types (``Dispatch``, ``StopStep``, ``RunEnded``, ``ArmTimer``), the timer
kinds, and the small helpers the transitions build a Decision with: ``_history`` (append a
history row), ``_save`` (bump the version, save the run), ``_arm``/``_disarm`` (timers),
``_refuse`` and the refusal errors ``not_running`` and ``_stale``. The underscored helpers are
private to the engine package; callers reach the public names through ``transitions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grctl.errors import (
    GrctlError,
    StaleDispatchError,
    WorkflowNotRunningError,
)
from grctl_daemon.engine.state import RunState
from grctl_daemon.storage import base as rec

STEP_TIMER = "step"
WAIT_TIMER = "wait"
RETRY_TIMER = "retry"
# A run's deadline (``run_timeout``): its token is the run_id, its row lives until the run ends.
RUN_TIMER = "run"
# A step's deadline lives in memory only: after a daemon restart every running step is
# dispatched again with a fresh deadline, so a stored one would never be read. Not storing it
# saves two writes per step.
DURABLE_TIMERS = frozenset({WAIT_TIMER, RETRY_TIMER, RUN_TIMER})


# Effects, like storage ops, are values nobody changes; slotted rather than frozen dataclasses
# because a frozen one costs ~1 us more to build, on the step hot path.
@dataclass(slots=True)
class Dispatch:
    """Give the run's scheduled step to a worker."""

    run_id: str


@dataclass(slots=True)
class StopStep:
    """Tell the worker holding this dispatch to stop it."""

    dispatch_id: str
    reason: str


@dataclass(slots=True)
class EndChain:
    """Tell the worker holding this dispatch to run no more steps in place after it."""

    dispatch_id: str


@dataclass(slots=True)
class RunEnded:
    run_id: str


@dataclass(slots=True)
class ArmTimer:
    run_id: str
    kind: str
    due_ms: int
    token: str


Effect = Dispatch | StopStep | EndChain | RunEnded | ArmTimer


@dataclass
class Decision:
    state: RunState | None
    ops: list[rec.Op] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    reply: Any = None
    error: GrctlError | None = None


def _refuse(state: RunState | None, error: GrctlError) -> Decision:
    return Decision(state, error=error)


def _history(
    s: RunState,
    d: Decision,
    kind: str,
    now: int,
    data: dict[str, Any] | None = None,
    step_name: str | None = None,
) -> None:
    s.history_seq += 1
    d.ops.append(rec.AppendHistory(s.run_id, s.history_seq, now, kind, step_name, data or {}))


def _save(s: RunState, d: Decision, now: int) -> None:
    s.updated_ms = now
    s.version += 1
    d.ops.insert(0, rec.SaveRun(s, s.status != getattr(s, "saved_status", None)))


def _arm(s: RunState, d: Decision, kind: str, due_ms: int, token: str) -> None:
    s.timers = {**s.timers, kind: (due_ms, token)}
    if kind in DURABLE_TIMERS:
        d.ops.append(rec.SetTimer(s.run_id, kind, due_ms, token))
    d.effects.append(ArmTimer(s.run_id, kind, due_ms, token))


def _disarm(s: RunState, d: Decision, kind: str | None = None) -> None:
    if kind is None:
        if any(k in DURABLE_TIMERS for k in s.timers):
            d.ops.append(rec.ClearTimer(s.run_id, None))
        s.timers = {}
    elif kind in s.timers:
        s.timers = {k: v for k, v in s.timers.items() if k != kind}
        if kind in DURABLE_TIMERS:
            d.ops.append(rec.ClearTimer(s.run_id, kind))


def not_running(s: RunState, what: str) -> WorkflowNotRunningError:
    return WorkflowNotRunningError(
        f"workflow {s.workflow_id!r} run {s.run_id} already ended ({s.status}); cannot {what}. "
        f"Start a new run with: grctl start {s.workflow_type} --id {s.workflow_id}",
        workflow_id=s.workflow_id,
        run_id=s.run_id,
    )


def _stale(s: RunState, dispatch_id: str) -> StaleDispatchError:
    return StaleDispatchError(
        f"dispatch {dispatch_id} of workflow {s.workflow_id!r} is no longer current "
        "(the step was given to another worker, timed out or the run ended); result dropped",
        workflow_id=s.workflow_id,
        run_id=s.run_id,
    )
