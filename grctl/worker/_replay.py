"""Recording and replay of a step's non-deterministic operations.

Every task call and every ``ctx.now/random/uuid4/sleep/patched``, child start and
``send_to_parent`` is an *operation* numbered in call order (``op``). The first execution makes
each outcome durable (one ``RecordOutcome`` round trip, committed before the step goes on). A
re-execution of the same step after a crash receives those records in its dispatch and returns
them instead of running again; an operation that differs from its record (another kind, name or
arguments) raises ``NonDeterminismError``. ``ctx.patched`` is the one exception: at another
operation's record it answers False without taking the number (see ``StepRun.patched``).
"""

from __future__ import annotations

import contextvars
import hashlib
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from grctl import codec
from grctl.errors import NonDeterminismError

Recorder = Callable[[dict[str, Any]], Awaitable[None]]
# Sends one progress event (name, packed data, ts_ms) to the daemon: see ``progress.py``.
Emitter = Callable[[str, Any, int], Awaitable[None]]

current_step: contextvars.ContextVar[StepRun | None] = contextvars.ContextVar(
    "grctl_current_step", default=None
)


def args_digest(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A short, stable fingerprint of a call's arguments, to detect divergent replay."""
    try:
        packed = codec.pack([list(args), kwargs], default=repr)
    except Exception:
        packed = repr((args, kwargs)).encode()
    return hashlib.blake2b(packed, digest_size=8).hexdigest()


class StepRun:
    """The replay cursor of one step execution: recorded outcomes in, new records out.

    ``resources`` is the worker's ``grctl.resources.Resources``, for the tasks the step calls.
    """

    resources: Any = None

    # Progress (``ctx.emit``): the worker's sender, and the last packed value of each name the
    # step emitted. Class defaults, so a step that never emits pays nothing for them.
    emitter: Emitter | None = None
    progress: dict[str, Any] | None = None
    # A step run in place after another (``grctl.worker._chain``): returns once the daemon
    # committed the steps before it and handed it over. A task runs only after it.
    handed_over: Callable[[], Awaitable[None]] | None = None

    def __init__(self, step_name: str, records: list[dict[str, Any]], record: Recorder) -> None:
        self.step_name = step_name
        self._by_op: dict[int, list[dict[str, Any]]] = {}
        for rec in records:
            self._by_op.setdefault(int(rec["op"]), []).append(rec)
        self._recorded_ops = max(self._by_op, default=-1) + 1
        self._record = record
        self._next_op = 0

    @property
    def replaying(self) -> bool:
        """True while the step is still re-executing operations recorded by an earlier attempt."""
        return self._next_op < self._recorded_ops

    def begin(self, kind: str, name: str, digest: str = "") -> tuple[int, list[dict[str, Any]]]:
        """Claim the next operation number and return it with its records (checked for drift)."""
        op = self._next_op
        self._next_op += 1
        prior = self._by_op.get(op, [])
        if prior:
            first = prior[0]
            if (
                first["kind"] != kind
                or first.get("name", "") != name
                or first.get("digest", "") != digest
            ):
                raise NonDeterminismError(
                    f"step {self.step_name!r} diverged from its recorded history at operation "
                    f"#{op}: first execution did {_label(first)}, this replay does "
                    f"{_label({'kind': kind, 'name': name})}"
                    f"{' with other arguments' if first['kind'] == kind and first.get('name', '') == name else ''}; "
                    "workflow code must make the same calls in the same order on every execution"
                )
        return op, prior

    async def patched(self, change_id: str) -> bool:
        """``ctx.patched``: True (recorded) unless this operation was recorded by older code.

        A ``patched`` record of this change is replayed. Any other record at this operation
        number means the step was recorded by code that did not ask here: False, and the
        operation is not consumed, so the old code's records stay aligned with their calls.
        Past the recorded operations the step runs new code: True is recorded and returned.
        """
        op = self._next_op
        prior = self._by_op.get(op)
        if prior:
            first = prior[0]
            if first["kind"] == "patched" and first.get("name", "") == change_id:
                self._next_op += 1
                return bool(first.get("value", True))
            return False
        self._next_op += 1
        await self.record({"op": op, "kind": "patched", "name": change_id, "value": True})
        return True

    async def record(self, rec: dict[str, Any]) -> None:
        await self._record(rec)
        self._by_op.setdefault(int(rec["op"]), []).append(rec)

    def check_finished(self) -> None:
        """A replay that returns before reaching every recorded operation has diverged too."""
        if self._next_op < self._recorded_ops:
            missing = self._by_op[self._next_op][0]
            raise NonDeterminismError(
                f"step {self.step_name!r} returned before operation #{self._next_op} "
                f"({_label(missing)}) that its first execution made; workflow code must make "
                "the same calls in the same order on every execution"
            )


def _label(rec: dict[str, Any]) -> str:
    name = rec.get("name")
    return f"{rec['kind']} {name!r}" if name else f"ctx.{rec['kind']}()"


def error_record(exc: BaseException) -> dict[str, Any]:
    """What is kept of an exception so replay can raise the same class with the same message."""
    try:
        args = list(exc.args)
        codec.pack(args)
    except Exception:
        args = [str(exc)]
    return {
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc),
        "args": args,
    }


class RecordedTaskError(Exception):
    """Raised on replay for a recorded failure whose class cannot be rebuilt."""


def rebuild_error(data: dict[str, Any]) -> BaseException:
    """The recorded exception, rebuilt as its own class when it can be imported."""
    cls: Any = None
    try:
        cls = getattr(importlib.import_module(data["module"]), data["type"])
    except Exception:
        cls = None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(*data.get("args", [data.get("message", "")]))
        except Exception:
            exc = cls.__new__(cls)
            exc.args = (data.get("message", ""),)
            return exc
    fallback = type(data["type"], (RecordedTaskError,), {})
    return fallback(data.get("message", ""))
