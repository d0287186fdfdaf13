"""The one entry point of the engine: ``decide(state, message, now) -> Decision``.

Every decision the daemon makes about a run is taken here, from the run's state, one message
and the time: whether a start is a duplicate, whether an event, a payload or an input fits the
handlers the worker registered, whether a store stays small enough to travel, whether a step
is ready for a worker, whether a timer is void or must wait for the disk, what a child's end
tells its parent, when a lost worker fails its step. Refusals are returned (``Decision.error``),
never raised; an exception out of here is a bug.

The runtime around it does the I/O: it finds the state (memory or database), builds the
message with the facts it needs (the type definition, the storage's health), and commits the
Decision's ops before it performs its effects. ``transitions`` holds the state machine itself;
this module is its front door and the checks in front of it.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from grctl import codec
from grctl import protocol as p
from grctl.errors import (
    GrctlError,
    InvalidInputError,
    StorageUnavailableError,
    UnknownEventError,
    WorkflowAlreadyRunningError,
    WorkflowTypeNotRegisteredError,
)
from grctl.signature import binding_error
from grctl_daemon.engine import children as ch
from grctl_daemon.engine import reset as rs
from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.messages import (  # noqa: F401  (re-exported: the decider's inputs)
    DEFAULT_MAX_WORKER_LOSSES,
    Cancel,
    ChildEnded,
    DispatchTo,
    Message,
    Recorded,
    Reset,
    ResetStarted,
    Send,
    SendWithStart,
    Start,
    StepReturned,
    StorageFault,
    Terminate,
    TimerFired,
    WorkerLost,
)
from grctl_daemon.engine.progress import keep_progress
from grctl_daemon.engine.state import RunState, TypeDef, partition_of
from grctl_daemon.engine.transitions import Decision
from grctl_daemon.storage import base as rec

MAX_ID_LENGTH = 256
MAX_KEY_LENGTH = 256  # an event's idempotency key
MAX_RUN_TIMEOUT_MS = 10 * 365 * 86_400_000  # ten years: a longer deadline is a mistake
# A run's whole store travels in each dispatch, so it must leave room in one frame.
MAX_STORE_BYTES = p.MAX_FRAME_BYTES - 1024 * 1024
STORAGE_HOLD_MS = 500  # how often a step timer put off by a storage fault looks again


def decide(state: RunState | None, msg: Message, now: int) -> Decision:
    """The Decision for ``msg`` on ``state`` at ``now`` (ms): pure, deterministic, never raises."""
    try:
        return _HANDLERS[type(msg)](state, msg, now)
    except GrctlError as exc:
        return Decision(state, error=exc)


# -- requests -----------------------------------------------------------------------------------


def _start(active: RunState | None, m: Start, now: int) -> Decision:
    _check_id(m.workflow_id, "workflow_id")
    tdef = _tdef(m.tdef, m.workflow_type, m.known_types)
    if active is not None and active.is_active:
        raise WorkflowAlreadyRunningError(
            f"workflow {m.workflow_id!r} is already running (run {active.run_id}, type "
            f"{active.workflow_type}); wait for it with: grctl result {m.workflow_id} --wait",
            workflow_id=m.workflow_id,
            run_id=active.run_id,
        )
    problem = binding_error(tdef.start_params, _open(m.input))
    if problem:
        raise InvalidInputError(
            f"input for workflow {m.workflow_type!r} does not match its start handler "
            f"{tdef.start_name!r}: {problem}",
            workflow_id=m.workflow_id,
        )
    _check_run_timeout(m.run_timeout_ms, m.workflow_id)
    parent = m.parent
    if parent is not None and m.completion_event is not None:
        params = m.parent_tdef.events.get(m.completion_event) if m.parent_tdef else None
        sample = {"workflow_id": "", "run_id": "", "status": "", "result": None, "error": None}
        if params is None or binding_error(params, sample):
            raise InvalidInputError(
                f"completion_event {m.completion_event!r} must name an event handler of "
                f"{parent.workflow_type!r} that accepts workflow_id, run_id, status, result "
                "and error (or **kwargs)",
                workflow_id=parent.workflow_id,
                run_id=parent.run_id,
            )
    if parent is None:
        _check_writable(m.fault)  # a child is started by a step: it waits out the disk
    return tr.start_run(
        tdef,
        m.workflow_id,
        m.run_id,
        m.input,
        now,
        parent.workflow_id if parent else None,
        parent.run_id if parent else None,
        m.completion_event,
        parent.partition
        if parent
        else (partition_of(m.workflow_id) if m.partition is None else m.partition),
        m.run_timeout_ms,
    )


def _check_run_timeout(ms: object, workflow_id: str) -> None:
    if ms is None:
        return
    if type(ms) is not int or not 0 < ms <= MAX_RUN_TIMEOUT_MS:
        raise InvalidInputError(
            f"run_timeout must be a positive duration of at most 10 years (3650d), got "
            f"{ms!r} ms; pass e.g. run_timeout=timedelta(hours=1) or --run-timeout 1h",
            workflow_id=workflow_id,
        )


def _send(state: RunState | None, m: Send, now: int) -> Decision:
    key = m.idempotency_key
    if key is not None:
        _check_key(key)
        s = _run(state)
        seq = m.known_seq if m.known_seq is not None else s.event_keys.get(key)
        if seq is not None:  # acknowledged again, even once the run has ended
            reply = {"inbox_seq": seq, "workflow_id": s.workflow_id, "run_id": s.run_id}
            return Decision(s, reply=reply | {"duplicate": True})
    # The disk first: a run whose end is decided but not yet durable (its step was handed out
    # early, say) must not be said to have ended while that end may still be lost.
    _check_writable(m.fault)
    s = _active(state, f"send {m.event_name!r}")
    tdef = _tdef(m.tdef, s.workflow_type)
    d = _event(s, tdef, m.event_name, m.payload, now, key)
    if key is not None and d.error is None:
        d.reply["duplicate"] = False
    return d


def _send_with_start(active: RunState | None, m: SendWithStart, now: int) -> Decision:
    """A send to the active run, else a start and the send as one unit (both or neither)."""
    if active is not None and active.is_active:
        d = _send(active, m.send, now)
        if d.error is None:
            d.reply = {**d.reply, "started": False}
        return d
    if m.send.idempotency_key is not None:
        _check_key(m.send.idempotency_key)
    started = _start(active, m.start, now)
    if started.error is not None:
        return started
    sent = _send(started.state, m.send, now)
    if sent.error is not None:
        return Decision(active, error=sent.error)
    # One new row holds both: the run is inserted as it stands after the event.
    s = sent.state
    ops = [rec.InsertRun(s)]
    ops += [op for op in started.ops if type(op) is not rec.InsertRun]
    ops += [op for op in sent.ops if type(op) is not rec.SaveRun]
    reply = {**sent.reply, "started": True}
    return Decision(s, ops=ops, effects=started.effects + sent.effects, reply=reply)


def _event(
    s: RunState,
    tdef: TypeDef,
    event_name: str,
    payload: bytes | None,
    now: int,
    idempotency_key: str | None = None,
):
    if event_name not in tdef.events:
        known = ", ".join(sorted(tdef.events)) or "none"
        raise UnknownEventError(
            f"workflow type {s.workflow_type!r} has no handler for event {event_name!r} "
            f"(events: {known})",
            workflow_id=s.workflow_id,
            run_id=s.run_id,
        )
    size = len(payload or b"") + s.store_bytes
    if size > MAX_STORE_BYTES:
        # The payload travels with the store in the handler's dispatch: it must fit too.
        raise InvalidInputError(
            f"payload of event {event_name!r} is {len(payload or b'')} bytes; with the run's "
            f"store that is {size} bytes, over the {MAX_STORE_BYTES}-byte limit of one "
            "dispatch; send a reference to large data instead",
            workflow_id=s.workflow_id,
            run_id=s.run_id,
        )
    problem = binding_error(tdef.events[event_name], _open(payload))
    if problem:
        raise InvalidInputError(
            f"payload of event {event_name!r} does not match its handler: {problem}",
            workflow_id=s.workflow_id,
            run_id=s.run_id,
        )
    return tr.event_sent(s, tdef, event_name, payload, now, idempotency_key)


def _cancel(state: RunState | None, m: Cancel, now: int) -> Decision:
    s = _active(state, "cancel it")
    _check_writable(m.fault)
    return tr.cancel(s, m.reason, now)


def _terminate(state: RunState | None, m: Terminate, now: int) -> Decision:
    s = _active(state, "terminate it")
    _check_writable(m.fault)
    return tr.terminate(s, m.reason, now)


def _dispatch_to(state: RunState | None, m: DispatchTo, now: int) -> Decision:
    return tr.dispatched(_run(state), m.tdef, m.worker, now, m.chained)


# -- facts --------------------------------------------------------------------------------------


def _recorded(state: RunState | None, m: Recorded, now: int) -> Decision:
    s = _run(state)
    summary = record_summary(m.record)
    if m.note:
        summary |= m.note
    return tr.recorded(s, m.dispatch_id, m.record or b"", summary, now)


def record_summary(blob: bytes | None) -> dict[str, Any]:
    """What the history keeps of a step record; refuses a record that is not a map with an 'op'."""
    data = _open(blob)
    if not isinstance(data, dict) or not isinstance(data.get("op"), int):
        raise InvalidInputError("a step record must be a map with an integer 'op'")
    summary = {k: data[k] for k in ("op", "kind", "name", "status", "attempt") if k in data}
    if "error" in data:
        summary["error"] = data["error"]
    if data.get("kind") == "sleep" and isinstance(data.get("value"), int):
        summary["wake_ms"] = data["value"]
    return summary


def _step_returned(state: RunState | None, m: StepReturned, now: int) -> Decision:
    s = _run(state)
    d = _step_outcome(s, m, now)
    if m.progress is None:
        return d
    return keep_progress(d, s.step_name, m.progress, now)  # what the step emitted (ctx.emit)


def _step_outcome(s: RunState, m: StepReturned, now: int) -> Decision:
    if m.error is not None or m.directive is None:
        return tr.step_failed(s, m.tdef, m.dispatch_id, m.error or {"type": "Error"}, now)
    size = sum(len(k) + len(v or b"") for k, v in {**s.store, **m.writes}.items())
    if size > MAX_STORE_BYTES:
        # Every dispatch carries the whole store: past this it could not travel.
        error = {
            "type": "StoreValueError",
            "message": f"step {s.step_name!r} would grow the store of workflow "
            f"{s.workflow_id!r} to {size} bytes, over the {MAX_STORE_BYTES}-byte "
            "limit; keep large data outside the workflow and store references to it",
            "non_retryable": True,
        }
        return tr.step_failed(s, m.tdef, m.dispatch_id, error, now)
    return tr.step_completed(s, m.tdef, m.dispatch_id, m.directive, m.writes, now, m.child)


def _timer_fired(state: RunState | None, m: TimerFired, now: int) -> Decision:
    s = _run(state)
    if m.kind == tr.RUN_TIMER and s.timers.get(m.kind, (0, None))[1] == m.token:
        # A run's deadline needs no type definition (no worker may be connected), only a disk.
        if m.fault is not None:
            return _rearm(s, m.kind, now + STORAGE_HOLD_MS, m.token)
        return tr.run_timed_out(s, now)
    if s.timers.get(m.kind, (0, None))[1] != m.token or m.tdef is None:
        return Decision(s)  # void: the run ended, or the step or wait it was for is over
    if m.kind == tr.STEP_TIMER:
        # Time the daemon could not write is not the step's: its worker was waiting on us.
        # While the storage is faulty a step timer is put off; once it is writable again, a
        # step in flight gets its whole timeout counted from then.
        if m.fault is not None:
            return _rearm(s, m.kind, now + STORAGE_HOLD_MS, m.token)
        if m.fault_cleared_ms is not None:
            until = m.fault_cleared_ms + m.tdef.timeout_ms(s.handler_kind, s.step_name)
            if now < until:
                return _rearm(s, m.kind, until, m.token)
    return tr.timer_fired(s, m.tdef, m.kind, m.token, now)


def _rearm(s: RunState, kind: str, due_ms: int, token: str) -> Decision:
    return Decision(s, effects=[tr.ArmTimer(s.run_id, kind, due_ms, token)])


def _worker_lost(state: RunState | None, m: WorkerLost, now: int) -> Decision:
    return tr.worker_lost(_run(state), m.tdef, m.dispatch_id, m.max_losses, now)


def _child_ended(parent: RunState | None, m: ChildEnded, now: int) -> Decision:
    """The parent hears of its child's end, in the same unit: through ``completion_event``, and
    by the end of a ``wait_for_child`` on it (``children``)."""
    c = m.child
    if parent is None or not parent.is_active or m.tdef is None:
        return Decision(parent)
    event = c.completion_event if c.completion_event in m.tdef.events else None
    if ch.waited_child(parent) == c.run_id:
        return ch.child_ended(parent, c, event, now)
    if event is None:
        return Decision(parent)
    payload = {
        "workflow_id": c.workflow_id,
        "run_id": c.run_id,
        "status": c.status,
        "result": _open(c.result),
        "error": c.error,
    }
    blob = codec.pack(payload)
    return tr.event_sent(parent, m.tdef, c.completion_event, blob, now)


def _reset(state: RunState | None, m: Reset, now: int) -> Decision:
    """Refused when the step is unknown or never began in the run, or its store was not kept."""
    s = _run(state)
    tdef = _tdef(m.tdef, s.workflow_type)
    plan = m.plan
    rs.check_plan(s, tdef, plan)
    if m.dry_run:
        return Decision(s, reply=rs.preview(s, plan) | {"run_id": None, "dry_run": True})
    _check_writable(m.fault)
    d = rs.reset_old(s, plan, m.new_run_id, now)
    d.reply["dry_run"] = False
    return d


def _reset_started(old: RunState | None, m: ResetStarted, now: int) -> Decision:
    return rs.reset_start(_run(old), m.plan, m.new_run_id, now)


_HANDLERS: dict[type, Any] = {
    Start: _start,
    Send: _send,
    SendWithStart: _send_with_start,
    Cancel: _cancel,
    Terminate: _terminate,
    DispatchTo: _dispatch_to,
    Recorded: _recorded,
    StepReturned: _step_returned,
    TimerFired: _timer_fired,
    WorkerLost: _worker_lost,
    ChildEnded: _child_ended,
    Reset: _reset,
    ResetStarted: _reset_started,
}


# -- checks -------------------------------------------------------------------------------------


def _run(state: RunState | None) -> RunState:
    if state is None:  # the runtime finds the run before it asks; a None here is our bug
        raise AssertionError("decide() needs the run's state for this message")
    return state


def _active(state: RunState | None, what: str) -> RunState:
    """The run, if it has not ended; else the refusal that it cannot ``what``."""
    s = _run(state)
    if not s.is_active:
        raise tr.not_running(s, what)
    return s


def _tdef(tdef: TypeDef | None, workflow_type: str, known: Collection[str] = ()) -> TypeDef:
    if tdef is None:
        names = ", ".join(sorted(known)) or "none yet"
        raise WorkflowTypeNotRegisteredError(
            f"workflow type {workflow_type!r} is not registered (known: {names}); start a "
            "worker that defines it: grctl worker MODULE"
        )
    return tdef


def _check_id(value: Any, what: str) -> None:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_ID_LENGTH
        or any(ord(c) < 32 for c in value)
    ):
        raise InvalidInputError(
            f"{what} must be 1–{MAX_ID_LENGTH} printable characters, got {str(value)[:40]!r}"
        )


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInputError(
            f"idempotency_key must be a string of 1–{MAX_KEY_LENGTH} characters, got "
            f"{str(key)[:40]!r}{' (too long)' if isinstance(key, str) and key else ''}"
        )


def _check_writable(fault: StorageFault | None) -> None:
    """Refuse new client work while the storage cannot write (steps in flight wait it out)."""
    if fault is None:
        return
    since = datetime.fromtimestamp(fault.since_ms / 1000).strftime("%H:%M:%S")
    raise StorageUnavailableError(
        f"the daemon cannot write its database {fault.database} ({fault.error}, since "
        f"{since}), so it takes no new starts, events, cancels or terminates; nothing "
        f"committed is lost. {fault.hint}: the daemon resumes by itself "
        "(grctl daemon status shows it), then retry",
        details={"database": fault.database, "error": fault.error, "since_ms": fault.since_ms},
    )


def _open(blob: bytes | None) -> Any:
    if blob is None:
        return None
    try:
        return codec.unpack(blob)
    except Exception as exc:  # the peer packed it: its fault, not a daemon bug
        raise InvalidInputError(
            f"a value sent to the daemon is not valid msgpack ({type(exc).__name__}); "
            "pack user values with grctl.protocol.wrap_value"
        ) from None
