"""The moves the transitions are made of: schedule a step, wait, deliver an event, end the run.

Each changes a state copy in place and adds to a Decision owned by a transition in
``transitions``. ``_schedule``, ``_wait``, ``_deliver``, ``_end`` and ``_fail`` leave the save to
that transition; ``_failed``, a failed step's outcome (a retry back-off, or the run fails),
shared by a step that raised or timed out and by one whose worker was lost too often, saves.
"""

from __future__ import annotations

from typing import Any

from grctl.models.run import RunStatus
from grctl_daemon.engine.decision import (
    RETRY_TIMER,
    STEP_TIMER,
    WAIT_TIMER,
    Decision,
    Dispatch,
    RunEnded,
    StopStep,
    _arm,
    _disarm,
    _history,
    _save,
)
from grctl_daemon.engine.state import EMPTY, MAX_EVENT_KEYS, InboxItem, RunState, TypeDef
from grctl_daemon.storage import base as rec


def _schedule(
    s: RunState, d: Decision, step_name: str, handler_kind: str, args: bytes | None
) -> None:
    s.status = RunStatus.RUNNING
    s.step_name = step_name
    s.handler_kind = handler_kind
    s.step_args = args
    s.step_seq += 1
    s.attempt = 0
    s.failures = 0
    s.dispatch_id = None
    s.worker = None
    s.wait_timeout_step = None
    s.worker_losses = 0
    if s.records:
        s.records = EMPTY
    d.effects.append(Dispatch(s.run_id))


def _end(
    s: RunState,
    d: Decision,
    status: RunStatus,
    now: int,
    *,
    result: bytes | None = None,
    error: dict[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    s.status = status
    s.result = result
    s.error = error
    s.reason = reason
    s.ended_ms = now
    s.step_name = None
    s.handler_kind = None
    s.step_args = None
    s.dispatch_id = None
    s.worker = None
    s.wait_timeout_step = None
    if s.records:  # a step that recorded nothing has no rows to delete (a statement saved)
        d.ops.append(rec.ClearRecords(s.run_id))
    s.records = EMPTY
    _disarm(s, d)
    data: dict[str, Any] = {}
    if status == RunStatus.COMPLETED:
        data["result"] = result
    if error is not None:
        data["error"] = error
    if reason:
        data["reason"] = reason
    _history(s, d, f"workflow_{status.value}", now, data)
    d.effects.append(RunEnded(s.run_id))


def _wait(
    s: RunState,
    d: Decision,
    tdef: TypeDef,
    timeout_ms: int | None,
    timeout_step: str | None,
    now: int,
) -> None:
    if s.inbox:
        _deliver(s, d, tdef, now)
        return
    s.status = RunStatus.WAITING
    s.step_name = None
    s.handler_kind = None
    s.step_args = None
    s.dispatch_id = None
    s.worker = None
    s.step_seq += 1
    s.wait_timeout_step = timeout_step if timeout_ms is not None else None
    data: dict[str, Any] = {}
    if timeout_ms is not None:
        _arm(s, d, WAIT_TIMER, now + timeout_ms, str(s.step_seq))
        data = {"timeout_ms": timeout_ms, "timeout_step_name": timeout_step}
    _history(s, d, "waiting_for_event", now, data)


def _enqueue(
    s: RunState,
    d: Decision,
    event_name: str,
    payload: bytes | None,
    now: int,
    idempotency_key: str | None = None,
) -> None:
    s.inbox_seq += 1
    d.ops.append(rec.AddInbox(s.run_id, s.inbox_seq, event_name, payload, now, idempotency_key))
    s.inbox = s.inbox.append(InboxItem(s.inbox_seq, event_name, payload))
    data = {"event_name": event_name, "inbox_seq": s.inbox_seq, "payload": payload}
    if idempotency_key is not None:
        data["idempotency_key"] = idempotency_key
        keys = {**s.event_keys, idempotency_key: s.inbox_seq}
        while len(keys) > MAX_EVENT_KEYS:
            del keys[next(iter(keys))]
        s.event_keys = keys
    _history(s, d, "event_received", now, data)


def _deliver(s: RunState, d: Decision, tdef: TypeDef, now: int) -> None:
    item, s.inbox = s.inbox.popleft()
    _disarm(s, d, WAIT_TIMER)
    d.ops.append(rec.MarkInbox(s.run_id, item.seq, "dispatched", item.event_name))
    _history(
        s,
        d,
        "event_dispatched",
        now,
        {"event_name": item.event_name, "inbox_seq": item.seq},
        item.event_name,
    )
    _schedule(s, d, item.event_name, "event", item.payload)


def _fail(
    s: RunState,
    d: Decision,
    error_type: str,
    message: str,
    traceback: str | None,
    now: int,
    details: dict[str, Any] | None = None,
) -> None:
    _end(
        s,
        d,
        RunStatus.FAILED,
        now,
        error={"type": error_type, "message": message, "traceback": traceback, "details": details},
    )


def _failed(
    s: RunState,
    d: Decision,
    tdef: TypeDef,
    dispatch_id: str,
    error: dict[str, Any],
    now: int,
    timed_out: bool = False,
) -> None:
    s.failures += 1
    s.worker_losses = 0
    _disarm(s, d, STEP_TIMER)
    if timed_out:
        d.effects.append(StopStep(dispatch_id, "step timed out"))
    policy = tdef.retry_policy(s.handler_kind, s.step_name)
    cause = str(error.get("type", "Error"))
    retry = (
        not error.get("non_retryable")
        and policy is not None
        and policy.should_retry(cause, s.failures)
        and not s.cancel_requested
    )
    data = {
        "attempt": s.attempt,
        "error": {k: error.get(k) for k in ("type", "message", "traceback")},
        "will_retry": retry,
    }
    if retry:
        assert policy is not None
        delay = policy.delay_ms(s.failures)
        data["retry_in_ms"] = delay
    _history(s, d, "step_timed_out" if timed_out else "step_failed", now, data, s.step_name)
    s.dispatch_id = None
    s.worker = None
    if s.records:  # a step that recorded nothing has no rows to delete (a statement saved)
        d.ops.append(rec.ClearRecords(s.run_id))
    s.records = EMPTY
    if s.cancel_requested:
        _end(s, d, RunStatus.CANCELLED, now, reason="cancel requested")
    elif retry:
        _arm(s, d, RETRY_TIMER, now + data["retry_in_ms"], str(s.step_seq))
    else:
        outcome = "StepTimeout" if timed_out else "StepFailed"
        if cause == "WorkerLost":
            outcome = cause
        verb = "timed out" if timed_out else f"raised {cause}: {error.get('message', '')}"
        _fail(
            s,
            d,
            outcome,
            f"step {s.step_name!r} {verb} (attempt {s.attempt}, "
            f"{s.failures} failure{'s' if s.failures != 1 else ''})",
            error.get("traceback"),
            now,
            {"step_name": s.step_name, "cause": cause, "attempts": s.attempt},
        )
    _save(s, d, now)
