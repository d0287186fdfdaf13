"""Context: what every handler gets as ``ctx`` — the store, ``ctx.next``, deterministic values.

Nothing here talks to the daemon directly: durable operations go through the step's
``StepEnv`` (the worker), so the same Context runs a first execution and a replay.
"""

from __future__ import annotations

import functools
import logging
import random as _random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from grctl import _clock
from grctl.codec import ExtType, not_serialisable, open_value
from grctl.duration import run_timeout_ms
from grctl.errors import StoreValueError, WorkflowDefinitionError
from grctl.models.child import child_error
from grctl.models.directive import Directive, ErrorDetails
from grctl.protocol import MAX_FRAME_BYTES, wrap_value
from grctl.worker import progress as _progress
from grctl.worker._replay import StepRun, rebuild_error

T = TypeVar("T")

_MISSING = object()
_type = type


class StepEnv(Protocol):
    """What a running step needs from its worker: durable records and calls to the daemon."""

    async def record(self, rec: dict[str, Any]) -> None: ...

    async def start_child(
        self,
        rec: dict[str, Any],
        workflow_type: str,
        workflow_id: str,
        workflow_input: Any,
        completion_event: str | None,
        run_timeout_ms: int | None = None,
    ) -> dict[str, Any]: ...

    async def send_to_parent(self, rec: dict[str, Any], event_name: str, payload: Any) -> None: ...

    async def wait_result(self, workflow_id: str, run_id: str | None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RunInfo:
    """Metadata of the current run: ``id`` (the run_id ULID), ``wf_id`` and ``wf_type``."""

    id: str
    wf_id: str
    wf_type: str
    parent_wf_id: str | None = None
    parent_run_id: str | None = None


def _check_serialisable(value: Any, what: str) -> ExtType:
    try:
        packed = wrap_value(value)
    except Exception:
        raise StoreValueError(
            not_serialisable(value, what, "use strings, numbers, lists, dicts, booleans or None")
        ) from None
    if len(packed.data) > MAX_FRAME_BYTES:
        raise StoreValueError(
            f"{what} is {len(packed.data)} bytes packed, over the {MAX_FRAME_BYTES}-byte frame "
            "limit; keep large data outside the workflow and store a reference to it"
        )
    return packed


class Store:
    """The run's key-value state: reads see the committed store plus this step's buffered writes.

    Writes are buffered in memory and committed with the step's directive, atomically with its
    history; a step that crashes leaves no trace of them.
    """

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self._snapshot = snapshot
        self._writes: dict[str, Any] = {}
        self._packed: dict[str, ExtType] = {}

    def put(self, key: str, value: Any) -> None:
        """Buffer a write; raises StoreValueError (naming the key) if msgpack cannot serialise it."""
        if not isinstance(key, str):
            raise TypeError(f"store keys are strings, got {type(key).__name__}")
        self._packed[key] = _check_serialisable(value, f"store value for key {key!r}")
        self._writes[key] = value

    async def get(self, key: str, type: type[T] | None = None) -> Any:  # noqa: A002
        """Read a value: ``None`` if unset; with ``type`` given, KeyError if unset and a type check."""
        value = self._writes.get(key, _MISSING)
        if value is _MISSING:
            value = self._snapshot.get(key, _MISSING)
        if value is _MISSING:
            if type is not None:
                raise KeyError(f"store key {key!r} is not set")
            return None
        if type is not None and value is not None:
            if type is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if isinstance(type, _type) and not isinstance(value, type):
                raise TypeError(
                    f"store key {key!r} holds a {_type(value).__name__}, not a {type.__name__}"
                )
        return value

    def keys(self) -> list[str]:
        return sorted(set(self._snapshot) | set(self._writes))

    @property
    def pending_writes(self) -> dict[str, ExtType]:
        return dict(self._packed)

    @property
    def after(self) -> dict[str, Any]:
        """The store as the step leaves it: what the next step sees, each value as it was
        written (read back from its packed bytes, as the daemon would send it)."""
        if not self._packed:
            return self._snapshot
        return {**self._snapshot, **{k: open_value(v) for k, v in self._packed.items()}}


class NextBuilder:
    """``ctx.next``: builds the Directive a handler returns, checked when it is built."""

    def __init__(self, workflow: Any, handler_name: str) -> None:
        self._workflow = workflow
        self._handler = handler_name

    def _step_name(self, target: Any, what: str) -> str:
        name = self._workflow.step_name_of(target)
        if name is None:
            shown = getattr(target, "__name__", target)
            raise WorkflowDefinitionError(
                f"workflow {self._workflow.workflow_type!r}, handler {self._handler!r}: {what} "
                f"{shown!r} is not a registered step (steps: "
                f"{', '.join(sorted(self._workflow.steps)) or 'none'}); decorate it with "
                "@workflow.step()"
            )
        return name

    def step(self, fn: Callable[..., Awaitable[Any]] | str) -> Directive:
        """Run another step next."""
        name = self._step_name(fn, "ctx.next.step() target")
        if name in self._workflow.child_params and self._workflow.child_params[name][1]:
            raise WorkflowDefinitionError(
                f"workflow {self._workflow.workflow_type!r}, handler {self._handler!r}: step "
                f"{name!r} requires a ChildResult, which only ctx.next.wait_for_child(handle, "
                f"step={name}) gives it; give the parameter a default (= None) to reach it "
                "with ctx.next.step() too"
            )
        return Directive("step", step_name=name)

    def wait_for_child(
        self,
        handle: WorkflowHandle,
        step: Callable[..., Awaitable[Any]] | str,
        timeout: timedelta | None = None,
        timeout_step_name: str | None = None,
    ) -> Directive:
        """Pause until the child ``handle`` names has ended, then run ``step`` with its outcome.

        The run waits in the daemon's database, not in a worker, so the step timeout does not
        bound the wait (``await handle.result()`` inside a step is bounded by it). ``step``
        declares a parameter annotated ``ChildResult`` that receives how the child ended. A
        child that ended before this directive commits is not missed: ``step`` runs at once.
        Events that arrive meanwhile stay in the inbox for a later ``wait_for_event()``.
        With ``timeout``, ``timeout_step_name`` runs instead when the child has not ended in
        time (the child goes on).
        """
        where = f"workflow {self._workflow.workflow_type!r}, handler {self._handler!r}"
        if not isinstance(handle, WorkflowHandle):
            raise WorkflowDefinitionError(
                f"{where}: wait_for_child() takes the handle that ctx.start() returned, got "
                f"{type(handle).__name__}"
            )
        name = self._step_name(step, "wait_for_child() step")
        if name not in self._workflow.child_params:
            raise WorkflowDefinitionError(
                f"{where}: wait_for_child() step {name!r} must declare a parameter for the "
                f"child's outcome, as in 'async def {name}(ctx: Context, child: ChildResult)'"
            )
        if timeout is not None and timeout_step_name is None:
            raise WorkflowDefinitionError(
                f"{where}: wait_for_child(timeout=...) needs timeout_step_name= to say which "
                "step runs"
            )
        if timeout is not None and (not isinstance(timeout, timedelta) or timeout < timedelta(0)):
            raise WorkflowDefinitionError(
                f"{where}: wait_for_child timeout must be a non-negative timedelta"
            )
        if timeout_step_name is not None:
            self._step_name(timeout_step_name, "timeout_step_name")
        return Directive(
            "wait_for_child",
            step_name=name,
            timeout=timeout,
            timeout_step_name=timeout_step_name,
            child_workflow_id=handle.workflow_id,
            child_run_id=handle.run_id,
        )

    def wait_for_event(
        self, timeout: timedelta | None = None, timeout_step_name: str | None = None
    ) -> Directive:
        """Pause until an event is in the inbox; with ``timeout``, run ``timeout_step_name`` after it."""
        if timeout is not None and timeout_step_name is None:
            raise WorkflowDefinitionError(
                f"workflow {self._workflow.workflow_type!r}, handler {self._handler!r}: "
                "wait_for_event(timeout=...) needs timeout_step_name= to say which step runs"
            )
        if timeout is not None and (not isinstance(timeout, timedelta) or timeout < timedelta(0)):
            raise WorkflowDefinitionError(
                f"workflow {self._workflow.workflow_type!r}, handler {self._handler!r}: "
                "wait_for_event timeout must be a non-negative timedelta"
            )
        if timeout_step_name is not None:
            self._step_name(timeout_step_name, "timeout_step_name")
        return Directive("wait_for_event", timeout=timeout, timeout_step_name=timeout_step_name)

    def complete(self, result: Any = None) -> Directive:
        """End the run ``completed`` with this result (msgpack-serialisable)."""
        _check_serialisable(result, "the workflow result")
        return Directive("complete", result=result)

    def fail(self, error: ErrorDetails | BaseException | str) -> Directive:
        """End the run ``failed`` with structured error details."""
        if isinstance(error, BaseException):
            error = ErrorDetails.from_exception(error)
        elif isinstance(error, str):
            error = ErrorDetails(type="WorkflowError", message=error)
        elif not isinstance(error, ErrorDetails):
            raise TypeError("ctx.next.fail() takes ErrorDetails, an exception or a message")
        return Directive("fail", error=error)


class ReplayAwareLogger(logging.LoggerAdapter):
    """A logger whose calls are dropped while the step replays recorded operations."""

    def __init__(self, logger: logging.Logger, step: StepRun, run: RunInfo) -> None:
        super().__init__(logger, {"workflow_id": run.wf_id, "run_id": run.id})
        self._step = step

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        return not self._step.replaying and self.logger.isEnabledFor(level)

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            super().log(level, msg, *args, **kwargs)


class WorkflowHandle:
    """A child workflow started from a step: ``await handle.result()`` (recorded) or its ids."""

    def __init__(self, ctx: Context, workflow_id: str, run_id: str, workflow_type: str) -> None:
        self._ctx = ctx
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.workflow_type = workflow_type

    def __repr__(self) -> str:
        return f"WorkflowHandle(workflow_id={self.workflow_id!r}, run_id={self.run_id!r})"

    async def result(self) -> Any:
        """Wait for the child's end; its result, recorded, or WorkflowFailedError re-raised."""
        return await self._ctx._child_result(self.workflow_id, self.run_id)


class Context:
    """Passed as the first argument to every handler: store, next, logger, run and ``now()``…"""

    def __init__(
        self,
        workflow: Any,
        run: RunInfo,
        handler_name: str,
        store: dict[str, Any],
        step: StepRun,
        env: StepEnv,
    ) -> None:
        self.run = run
        self.store = Store(store)
        self.next = NextBuilder(workflow, handler_name)
        self._step = step
        self._env = env

    @functools.cached_property
    def logger(self) -> ReplayAwareLogger:
        """A logger that stays quiet while the step replays recorded operations."""
        return ReplayAwareLogger(
            logging.getLogger(f"grctl.workflow.{self.run.wf_type}"), self._step, self.run
        )

    async def _value(self, kind: str, make: Callable[[], Any]) -> Any:
        op, prior = self._step.begin(kind, "")
        if prior:
            return prior[0]["value"]
        value = make()
        await self._step.record({"op": op, "kind": kind, "value": value})
        return value

    async def now(self) -> datetime:
        """The current UTC time, recorded on first call and replayed after."""
        ms = await self._value("now", _clock.now_us)
        return datetime.fromtimestamp(ms / 1_000_000, tz=UTC)

    async def random(self) -> float:
        """A float in [0.0, 1.0), recorded on first call and replayed after."""
        return await self._value("random", _random.random)

    async def uuid4(self) -> uuid.UUID:
        """A random UUID v4, recorded on first call and replayed after."""
        return uuid.UUID(await self._value("uuid4", lambda: str(uuid.uuid4())))

    async def patched(self, change_id: str) -> bool:
        """Whether this step runs code added by change ``change_id``; recorded like ``now()``.

        True when the step reaches this call for the first time (new code), False when it
        replays operations recorded by code that did not make this call: guard code added to a
        step that live runs may be in the middle of, so their replays stay aligned::

            if await ctx.patched("add-fraud-check"):
                await fraud_check(order_id)

        Once ``grctl check`` reports no active run recorded before the change, the guard (and
        the old branch) can go, keeping the guarded code. Change ids are any string, unique
        within the step.
        """
        if not isinstance(change_id, str) or not change_id:
            raise WorkflowDefinitionError(
                f"ctx.patched() takes a non-empty string change id, got {change_id!r}"
            )
        return await self._step.patched(change_id)

    async def sleep(self, duration: timedelta | float) -> None:
        """Sleep inside the step; on re-execution it returns at once (the sleep is recorded).

        The wake-up time is recorded before sleeping; the daemon moves the step's deadline by
        the sleep, so it does not count against the step timeout.
        """
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        op, prior = self._step.begin("sleep", "")
        if prior:
            return
        wake_ms = int(_clock.now_ms() + seconds * 1000)
        await self._step.record({"op": op, "kind": "sleep", "value": wake_ms})
        await _clock.sleep_until(wake_ms, self._step)

    async def start(
        self,
        workflow_type: str,
        workflow_id: str,
        workflow_input: Any = None,
        completion_event: str | None = None,
        run_timeout: timedelta | None = None,
    ) -> WorkflowHandle:
        """Start a child workflow (recorded: a replay does not start it twice).

        With ``completion_event``, the daemon appends that event to this run's inbox when the
        child ends, with the payload ``{workflow_id, run_id, status, result, error}`` — in the
        same transaction as the child's end. Otherwise await ``handle.result()`` in a step
        (bounded by the step timeout), return ``ctx.next.wait_for_child(handle, step=...)``
        (not bounded by it), or let the child call ``ctx.send_to_parent()``. With ``run_timeout`` the child fails with
        ``RunTimeout`` if it has not ended that long after its start (as a top-level run).
        """
        op, prior = self._step.begin("child_start", workflow_type, workflow_id)
        if prior:
            rec = prior[0]
            if rec.get("status") == "error":
                raise rebuild_error(rec["error"])
            return WorkflowHandle(self, workflow_id, rec["value"]["run_id"], workflow_type)
        _check_serialisable(workflow_input, "the child workflow input")
        timeout_ms = run_timeout_ms(run_timeout, workflow_id)
        rec = {"op": op, "kind": "child_start", "name": workflow_type, "digest": workflow_id}
        # Passed only when set, so an environment written before run timeouts still works.
        extra = {} if timeout_ms is None else {"run_timeout_ms": timeout_ms}
        reply = await self._env.start_child(
            rec, workflow_type, workflow_id, workflow_input, completion_event, **extra
        )
        return WorkflowHandle(self, workflow_id, reply["run_id"], workflow_type)

    async def _child_result(self, workflow_id: str, run_id: str) -> Any:
        op, prior = self._step.begin("child_result", workflow_id, run_id)
        if not prior:
            # Still for a test clock: the child's own timers may need a skip to end it.
            outcome = await _clock.wait_on_engine(
                self._env.wait_result(workflow_id, run_id), self._step
            )
            prior = [
                {
                    "op": op,
                    "kind": "child_result",
                    "name": workflow_id,
                    "digest": run_id,
                    "value": outcome,
                }
            ]
            await self._step.record(prior[0])
        outcome = prior[0]["value"]
        if outcome["status"] == "completed":
            return outcome.get("result")
        raise child_error({**outcome, "workflow_id": workflow_id, "run_id": run_id})

    async def emit(self, name: str, data: Any = None) -> None:
        """Send a progress event to everyone following the run; nothing is committed.

        Followers (``handle.stream()``, ``grctl history --follow``) get it as it happens; the
        last ``data`` of each ``name`` is kept in the history when the step's outcome commits.
        A slow follower never slows the step (it misses older events instead). Tasks call
        ``grctl.worker.emit`` the same way. Raises InvalidProgressError for a bad name or data.
        """
        await _progress.send(self._step, name, _progress.check(name, data))

    async def send_to_parent(self, event_name: str, payload: Any = None) -> None:
        """Append an event to the parent run's inbox (recorded: not repeated on replay)."""
        op, prior = self._step.begin("send_to_parent", event_name)
        if prior:
            return
        if self.run.parent_wf_id is None:
            raise WorkflowDefinitionError(
                f"workflow {self.run.wf_type!r} run {self.run.wf_id!r} has no parent; "
                "send_to_parent() is only for child workflows"
            )
        _check_serialisable(payload, f"the payload of event {event_name!r}")
        rec = {"op": op, "kind": "send_to_parent", "name": event_name}
        await self._env.send_to_parent(rec, event_name, payload)


__all__ = ["Context", "NextBuilder", "ReplayAwareLogger", "RunInfo", "Store", "WorkflowHandle"]
