"""A parent that waits in the database for its child's end (``ctx.next.wait_for_child``).

Theory of operation
-------------------
A step returns ``wait_for_child`` naming a child of its run and a target step. The runtime
gives the decider the child's state as it stands once every read is done (a child lives in its
parent's partition, so one daemon owns both and decides on both in turn):

* The child has already ended: the target step is scheduled at once, with the child's outcome
  ``{workflow_id, run_id, status, result, error}`` as its argument (``step_args``).
* It has not: the run goes ``waiting`` with ``handler_kind`` ``CHILD_WAIT``, ``step_name`` the
  target and ``step_args`` the child's ids. These are the run row's own columns, so the wait
  survives restarts and moves with its partition, with no schema change and no worker holding
  anything. The child's end (``ChildEnded``) is committed in the same unit as the end itself
  and schedules the target with the outcome.

While a run waits for a child, events stay in its inbox (a later ``wait_for_event`` takes
them); cancel and terminate end it as they end any wait. With a timeout the wait timer runs
``timeout_step_name`` as for an event wait, and the child's end after that changes nothing.
"""

from __future__ import annotations

from typing import Any

from grctl import codec
from grctl.models.run import RunStatus
from grctl_daemon.engine.decision import WAIT_TIMER, Decision, _arm, _disarm, _history, _save
from grctl_daemon.engine.scheduling import _enqueue, _fail, _schedule
from grctl_daemon.engine.state import RunState

CHILD_WAIT = "child"  # handler_kind of a run waiting for a child (the target in step_name)


def child_outcome(child: RunState) -> dict[str, Any]:
    """What the parent hears of an ended child (as a completion event or a target's argument)."""
    return {
        "workflow_id": child.workflow_id,
        "run_id": child.run_id,
        "status": child.status,
        "result": None if child.result is None else codec.unpack(child.result),
        "error": child.error,
    }


def waited_child(state: RunState) -> str | None:
    """The run_id of the child this run waits for, or None when it waits for none."""
    if state.handler_kind != CHILD_WAIT or state.status != RunStatus.WAITING:
        return None
    return codec.unpack(state.step_args or b"\xc0")["run_id"]


def waited_child_ids(state: RunState) -> dict[str, str] | None:
    """``{workflow_id, run_id}`` of the child this run waits for (describe), None otherwise."""
    if state.handler_kind != CHILD_WAIT or state.status != RunStatus.WAITING:
        return None
    ids = codec.unpack(state.step_args or b"\xc0") or {}
    return {"workflow_id": ids.get("workflow_id"), "run_id": ids.get("run_id")}


def wait_for_child(
    s: RunState,
    d: Decision,
    steps: Any,
    directive: dict[str, Any],
    child: RunState | None,
    now: int,
) -> None:
    """The step's ``wait_for_child`` directive, on the state copy of ``step_completed``."""
    target = directive.get("step_name")
    timeout_ms, timeout_step = directive.get("timeout_ms"), directive.get("timeout_step_name")
    child_id = directive.get("child_run_id")
    named = {"step": target}
    if timeout_ms is not None:
        named["timeout_step_name"] = timeout_step
    for arg, name in named.items():
        if name not in steps:
            _fail(
                s,
                d,
                "WorkflowDefinitionError",
                f"step {s.step_name!r} waits for a child with {arg}={name!r}, which workflow "
                f"{s.workflow_type!r} does not register as a step",
                None,
                now,
            )
            return
    if child is None or child.run_id != child_id or child.parent_run_id != s.run_id:
        _fail(
            s,
            d,
            "WorkflowDefinitionError",
            f"step {s.step_name!r} waits for run {child_id!r} "
            f"({directive.get('child_workflow_id')!r}), which is not a child this run started "
            "(or it was deleted); pass the handle ctx.start() returned",
            None,
            now,
        )
        return
    if not child.is_active:
        take_child(s, d, target, child, now)
        return
    s.status = RunStatus.WAITING
    s.step_name = target
    s.handler_kind = CHILD_WAIT
    s.step_args = codec.pack({"workflow_id": child.workflow_id, "run_id": child.run_id})
    s.dispatch_id = None
    s.worker = None
    s.step_seq += 1
    s.wait_timeout_step = timeout_step if timeout_ms is not None else None
    data: dict[str, Any] = {
        "child_workflow_id": child.workflow_id,
        "child_run_id": child.run_id,
        "step_name": target,
    }
    if timeout_ms is not None:
        _arm(s, d, WAIT_TIMER, now + timeout_ms, str(s.step_seq))
        data |= {"timeout_ms": timeout_ms, "timeout_step_name": timeout_step}
    _history(s, d, "waiting_for_child", now, data)


def take_child(s: RunState, d: Decision, target: str, child: RunState, now: int) -> None:
    """The child has ended: ``target`` is scheduled with its outcome as the argument."""
    outcome = codec.pack(child_outcome(child))
    _disarm(s, d, WAIT_TIMER)
    data = {"child_workflow_id": child.workflow_id, "child_run_id": child.run_id}
    # The outcome too, so that a reset to the target step gives it the same argument.
    _history(s, d, "child_ended", now, data | {"status": child.status, "outcome": outcome}, target)
    _schedule(s, d, target, "step", outcome)


def child_ended(parent: RunState, child: RunState, event_name: str | None, now: int) -> Decision:
    """The child the parent waits for has ended: its target step runs with the outcome.

    A ``completion_event`` the child was also given joins the inbox in the same save, for a
    later ``wait_for_event``.
    """
    s = parent.copy()
    d = Decision(s)
    if event_name is not None:
        _enqueue(s, d, event_name, codec.pack(child_outcome(child)), now)
    assert s.step_name is not None  # a child wait always names its target
    take_child(s, d, s.step_name, child, now)
    _save(s, d, now)
    return d
