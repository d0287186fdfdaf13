"""The pure state machine of a run: (state, fact, now) → Decision. No I/O, no clocks, no raising.

Theory of operation
-------------------
A run is ``running`` (a step is scheduled: queued for a worker, dispatched, or in a retry
back-off) or ``waiting`` (for an event), then ends ``completed``, ``failed``, ``cancelled`` or
``terminated``. Invariants:

* At most one step of a run is in flight; ``dispatch_id`` is its fencing token, made of durable
  values (``run_id.step_seq.attempt``: the dispatch's commit saves the attempt, so a token is
  never handed out twice, across restarts too). A fact that names another token (a late
  result, a stale timer) changes nothing and is refused.
* A worker lost while it held the step counts in ``worker_losses``; the ``max_losses``-th loss
  in a row is a step failure of type ``WorkerLost``, and the step's retry policy applies.
* Every save bumps the run's ``version`` and names the one it was decided on, so the backend
  refuses a save decided on a state that was never committed.
* ``step_seq`` numbers step executions; records (task outcomes, ``ctx.now()``…) belong to the
  current execution, survive worker loss (so replay skips them) and are cleared when the step
  ends or is retried (a retry is a fresh execution).
* Store writes, history and the next transition of a step are in one Decision, which the
  storage commits as one unit: a crash leaves all of it or none of it.
* The inbox is FIFO: the pending event with the lowest ``seq`` goes to the next
  ``wait_for_event``; an event is marked dispatched in the same unit that schedules its handler.
* Timers are tokens too: a wait timer carries the ``step_seq`` of its wait, a step timer the
  ``dispatch_id``; when the token no longer matches the timer is void.

Every function returns a ``Decision``: the new state, the records to commit and the effects to
perform after the commit. A refusal is a Decision with ``error`` set.

This module holds the transitions, one per fact or request, and is the engine's one public
entry for them: ``decision`` holds the Decision and effect types, the timer kinds and the
shared bookkeeping helpers, ``scheduling`` the moves the transitions are made of (schedule a
step, wait, deliver an event, fail a step, end the run); their public names are re-exported
here.
"""

from __future__ import annotations

from typing import Any

from grctl.models.run import RunStatus
from grctl_daemon.engine.children import CHILD_WAIT, wait_for_child
from grctl_daemon.engine.decision import (
    DURABLE_TIMERS,
    RETRY_TIMER,
    RUN_TIMER,
    STEP_TIMER,
    WAIT_TIMER,
    ArmTimer,
    Decision,
    Dispatch,
    Effect,
    EndChain,
    RunEnded,
    StopStep,
    _arm,
    _disarm,
    _history,
    _refuse,
    _save,
    _stale,
    not_running,
)
from grctl_daemon.engine.scheduling import (
    _deliver,
    _end,
    _enqueue,
    _fail,
    _failed,
    _schedule,
    _wait,
)
from grctl_daemon.engine.state import EMPTY, RunState, TypeDef
from grctl_daemon.storage import base as rec

__all__ = [
    "DURABLE_TIMERS",
    "RETRY_TIMER",
    "RUN_TIMER",
    "STEP_TIMER",
    "WAIT_TIMER",
    "ArmTimer",
    "Decision",
    "Dispatch",
    "Effect",
    "RunEnded",
    "StopStep",
    "EndChain",
    "cancel",
    "dispatched",
    "event_sent",
    "not_running",
    "ready",
    "recorded",
    "run_timed_out",
    "start_run",
    "step_completed",
    "step_failed",
    "terminate",
    "timer_fired",
    "worker_lost",
]


# -- facts ------------------------------------------------------------------------------------


def start_run(
    tdef: TypeDef,
    workflow_id: str,
    run_id: str,
    input_blob: bytes | None,
    now: int,
    parent_workflow_id: str | None = None,
    parent_run_id: str | None = None,
    completion_event: str | None = None,
    partition: int = 0,
    run_timeout_ms: int | None = None,
) -> Decision:
    """A new run: its row, ``workflow_started`` and the start handler scheduled.

    With ``run_timeout_ms`` the run's deadline is a durable ``run`` timer (token: the run_id);
    ``_end`` clears it with the run's other timers, so a run that ends in time leaves none.
    """
    s = RunState(
        run_id=run_id,
        workflow_id=workflow_id,
        workflow_type=tdef.workflow_type,
        status=RunStatus.RUNNING,
        created_ms=now,
        updated_ms=now,
        input=input_blob,
        parent_workflow_id=parent_workflow_id,
        parent_run_id=parent_run_id,
        completion_event=completion_event,
        partition=partition,
        version=1,
    )
    d = Decision(s)
    data: dict[str, Any] = {"input": input_blob, "parent_workflow_id": parent_workflow_id}
    if run_timeout_ms is not None:
        data["run_timeout_ms"] = run_timeout_ms
        data["deadline_ms"] = now + run_timeout_ms
    _history(s, d, "workflow_started", now, data)
    if run_timeout_ms is not None:
        _arm(s, d, RUN_TIMER, now + run_timeout_ms, run_id)
    _schedule(s, d, tdef.start_name, "start", input_blob)
    d.ops.insert(0, rec.InsertRun(s))
    d.reply = {"workflow_id": workflow_id, "run_id": run_id}
    return d


def ready(state: RunState) -> bool:
    """Whether the run has a step to hand to a worker now (none in flight, no back-off)."""
    return (
        state.status == RunStatus.RUNNING
        and state.dispatch_id is None
        and RETRY_TIMER not in state.timers
    )


def dispatched(
    state: RunState, tdef: TypeDef, worker: str, now: int, chained: bool = False
) -> Decision:
    """The scheduled step goes to ``worker`` as a new attempt with a fresh fencing token.

    ``chained``: the worker ran it in place after the step before (the history says so).
    """
    if not ready(state):
        return Decision(state)
    s = state.copy()
    d = Decision(s)
    s.attempt += 1
    s.dispatch_id = f"{s.run_id}.{s.step_seq}.{s.attempt}"
    s.worker = worker
    timeout_ms = tdef.timeout_ms(s.handler_kind, s.step_name)
    data = {"attempt": s.attempt, "worker": worker, "replaying": len(s.records)}
    if chained:
        data["chained"] = True
    _history(s, d, "step_started", now, data, s.step_name)
    _arm(s, d, STEP_TIMER, now + timeout_ms, s.dispatch_id)
    _save(s, d, now)
    d.reply = timeout_ms
    return d


def recorded(
    state: RunState, dispatch_id: str, blob: bytes, summary: dict[str, Any], now: int
) -> Decision:
    """A task outcome or deterministic value of the current step, durable before it is used."""
    if state.dispatch_id != dispatch_id:
        return _refuse(state, _stale(state, dispatch_id))
    s = state.copy()
    d = Decision(s)
    d.ops.append(rec.AddRecord(s.run_id, s.step_seq, len(s.records), blob))
    s.records = s.records.append(blob)
    kind = summary.get("kind", "record")
    if kind == "task":
        kind = {"ok": "task_completed", "failed": "task_attempt_failed"}.get(
            summary.get("status", ""), "task_failed"
        )
    _history(s, d, kind, now, summary, s.step_name)
    step_timer = s.timers.get(STEP_TIMER)
    wake_ms = summary.get("wake_ms")
    if kind == "sleep" and step_timer is not None and isinstance(wake_ms, int) and wake_ms > now:
        # ctx.sleep does not count against the step timeout: the deadline moves by the sleep.
        _arm(s, d, STEP_TIMER, step_timer[0] + wake_ms - now, step_timer[1])
    _save(s, d, now)
    return d


def step_completed(
    state: RunState,
    tdef: TypeDef,
    dispatch_id: str,
    directive: dict[str, Any],
    writes: dict[str, bytes],
    now: int,
    child: RunState | None = None,
) -> Decision:
    """The step returned a directive: its store writes, history and transition commit together.

    ``child`` is the state of the child a ``wait_for_child`` directive names (``children``).
    """
    if state.dispatch_id != dispatch_id:
        return _refuse(state, _stale(state, dispatch_id))
    s = state.copy()
    d = Decision(s)
    if writes:
        s.store = {**s.store, **writes}
        d.ops.append(rec.PutStore(s.run_id, writes))
    if s.records:  # a step that recorded nothing has no rows to delete (a statement saved)
        d.ops.append(rec.ClearRecords(s.run_id))
    s.records = EMPTY
    s.worker_losses = 0
    _disarm(s, d, STEP_TIMER)
    kind = directive.get("kind")
    _history(
        s,
        d,
        "step_completed",
        now,
        {
            "attempt": s.attempt,
            "directive": kind,
            "next_step": directive.get("step_name"),
            "store_keys": sorted(writes),
            # The values too, so that a reset can rebuild the store as it was at any step.
            "writes": writes,
        },
        s.step_name,
    )
    if s.cancel_requested:
        _end(s, d, RunStatus.CANCELLED, now, reason="cancel requested")
    elif kind == "step":
        target = directive.get("step_name")
        if target not in tdef.steps:
            _fail(
                s,
                d,
                "WorkflowDefinitionError",
                f"step {s.step_name!r} transitioned to {target!r}, which workflow "
                f"{s.workflow_type!r} does not register as a step",
                None,
                now,
            )
        else:
            _schedule(s, d, target, "step", None)
    elif kind == "wait_for_event":
        timeout_ms, target = directive.get("timeout_ms"), directive.get("timeout_step_name")
        if timeout_ms is not None and target not in tdef.steps:
            _fail(
                s,
                d,
                "WorkflowDefinitionError",
                f"step {s.step_name!r} waits with timeout_step_name={target!r}, which workflow "
                f"{s.workflow_type!r} does not register as a step",
                None,
                now,
            )
        else:
            _wait(s, d, tdef, timeout_ms, target, now)
    elif kind == "wait_for_child":
        wait_for_child(s, d, tdef.steps, directive, child, now)
    elif kind == "complete":
        _end(s, d, RunStatus.COMPLETED, now, result=directive.get("result"))
    elif kind == "fail":
        _end(
            s,
            d,
            RunStatus.FAILED,
            now,
            error=directive.get("error") or {"type": "WorkflowError", "message": ""},
        )
    else:
        _fail(s, d, "ProtocolError", f"unknown directive {kind!r}", None, now)
    _save(s, d, now)
    return d


def step_failed(
    state: RunState,
    tdef: TypeDef,
    dispatch_id: str,
    error: dict[str, Any],
    now: int,
    timed_out: bool = False,
) -> Decision:
    """The step raised (or timed out): retry per the step's policy, else the run fails."""
    if state.dispatch_id != dispatch_id:
        return _refuse(state, _stale(state, dispatch_id))
    s = state.copy()
    d = Decision(s)
    _failed(s, d, tdef, dispatch_id, error, now, timed_out)
    return d


def timer_fired(state: RunState, tdef: TypeDef, kind: str, token: str, now: int) -> Decision:
    """A due timer: a step timeout, the end of a retry back-off, or an event wait that expired."""
    if state.timers.get(kind, (None, None))[1] != token or not state.is_active:
        return Decision(state)  # void: the wait was ended by an event, the step moved on…
    if kind == RUN_TIMER:
        return run_timed_out(state, now)
    if kind == STEP_TIMER and state.timers[kind][0] > now:
        return Decision(state)  # void: a ctx.sleep moved this step's deadline later
    if kind == STEP_TIMER:
        return step_failed(
            state,
            tdef,
            token,
            {"type": "StepTimeout", "message": "step timed out"},
            now,
            timed_out=True,
        )
    s = state.copy()
    d = Decision(s)
    _disarm(s, d, kind)
    if kind == RETRY_TIMER:
        d.effects.append(Dispatch(s.run_id))
    elif kind == WAIT_TIMER and s.status == RunStatus.WAITING and s.wait_timeout_step:
        _history(s, d, "wait_timed_out", now, {"timeout_step_name": s.wait_timeout_step})
        _schedule(s, d, s.wait_timeout_step, "step", None)
    _save(s, d, now)
    return d


def run_timed_out(state: RunState, now: int) -> Decision:
    """The run's deadline passed: it fails with ``RunTimeout`` whatever it was doing.

    A step in flight is stopped on its worker (as on terminate); a wait or a sleep simply ends
    with the run; children keep running, as when their parent is terminated or cancelled.
    """
    if not state.is_active:
        return Decision(state)
    s = state.copy()
    d = Decision(s)
    step = s.step_name
    if s.dispatch_id is not None:
        d.effects.append(StopStep(s.dispatch_id, "run timed out"))
    due = state.timers.get(RUN_TIMER, (now, ""))[0]
    timeout_ms = due - s.created_ms
    _fail(
        s,
        d,
        "RunTimeout",
        f"run timed out after {format_ms(timeout_ms)}",
        None,
        now,
        {"run_timeout_ms": timeout_ms, "step_name": step, "status": str(state.status)},
    )
    _save(s, d, now)
    return d


def format_ms(ms: int) -> str:
    """``ms`` as people write a duration: ``1h``, ``1h30m``, ``2s``, ``250ms``."""
    if ms <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    if ms or not parts:
        parts.append(f"{ms}ms")
    return "".join(parts)


def event_sent(
    state: RunState,
    tdef: TypeDef,
    event_name: str,
    payload: bytes | None,
    now: int,
    idempotency_key: str | None = None,
) -> Decision:
    """An event joins the inbox; a waiting run takes it at once."""
    if not state.is_active:
        return _refuse(state, not_running(state, f"send event {event_name!r}"))
    s = state.copy()
    d = Decision(s)
    _enqueue(s, d, event_name, payload, now, idempotency_key)
    if s.status == RunStatus.WAITING and s.handler_kind != CHILD_WAIT:
        _deliver(s, d, tdef, now)
    _save(s, d, now)
    d.reply = {"inbox_seq": s.inbox_seq, "workflow_id": s.workflow_id, "run_id": s.run_id}
    return d


def cancel(state: RunState, reason: str | None, now: int) -> Decision:
    """End the run ``cancelled``, after its running step (if any) finishes."""
    if not state.is_active:
        return _refuse(state, not_running(state, "cancel it"))
    s = state.copy()
    d = Decision(s)
    if s.dispatch_id is None:
        _end(s, d, RunStatus.CANCELLED, now, reason=reason)
    else:
        s.cancel_requested = True
        _history(s, d, "cancel_requested", now, {"reason": reason}, s.step_name)
        d.effects.append(EndChain(s.dispatch_id))  # no step runs in place after this one
    _save(s, d, now)
    d.reply = {"status": s.status, "cancel_requested": s.cancel_requested}
    return d


def terminate(state: RunState, reason: str | None, now: int) -> Decision:
    """End the run ``terminated`` now and stop its step on the worker."""
    if not state.is_active:
        return _refuse(state, not_running(state, "terminate it"))
    s = state.copy()
    d = Decision(s)
    if s.dispatch_id is not None:
        d.effects.append(StopStep(s.dispatch_id, "run terminated"))
    _end(s, d, RunStatus.TERMINATED, now, reason=reason)
    _save(s, d, now)
    d.reply = {"status": s.status}
    return d


def worker_lost(
    state: RunState, tdef: TypeDef, dispatch_id: str, max_losses: int, now: int
) -> Decision:
    """The worker holding the step vanished: dispatch it again at once, as a new attempt.

    A step that takes its worker down every time (a segfault, an OOM kill) would loop forever:
    the ``max_losses``-th loss in a row fails the step with ``WorkerLost`` instead, and the
    step's retry policy decides what follows.
    """
    if state.dispatch_id != dispatch_id or not state.is_active:
        return Decision(state)
    s = state.copy()
    d = Decision(s)
    s.worker_losses += 1
    _history(
        s,
        d,
        "worker_lost",
        now,
        {"attempt": s.attempt, "worker": s.worker, "losses": s.worker_losses},
        s.step_name,
    )
    if s.worker_losses >= max_losses and not s.cancel_requested:
        error = {
            "type": "WorkerLost",
            "message": f"the worker running step {s.step_name!r} was lost {s.worker_losses} "
            "times in a row (it crashed, was killed or stopped answering)",
        }
        _failed(s, d, tdef, dispatch_id, error, now)
        return d
    s.dispatch_id = None
    s.worker = None
    _disarm(s, d, STEP_TIMER)
    if s.cancel_requested:
        _end(s, d, RunStatus.CANCELLED, now, reason="cancel requested")
    else:
        d.effects.append(Dispatch(s.run_id))
    _save(s, d, now)
    return d
