"""Progress events: ``ctx.emit(name, data)`` from a step, ``emit(name, data)`` from a task.

An emit is one one-way frame to the daemon that dispatched the step: no reply, no commit. The
daemon hands it to the run's followers (``handle.stream()``, ``grctl history --follow``),
holding only the latest of each name while the step runs. The step keeps the last value of each name and sends them with its outcome, so
they are committed with it as ``progress`` history rows: nothing is written per emit, and a
step that never emits costs nothing more.

While a step replays operations an earlier attempt recorded, its emits are kept (for the
history) but not sent again: followers saw them the first time, as the logger stays quiet.
"""

from __future__ import annotations

import time
from typing import Any

from grctl.codec import ExtType, not_serialisable
from grctl.errors import InvalidProgressError
from grctl.protocol import wrap_value
from grctl.worker._replay import StepRun, current_step

MAX_NAME_LENGTH = 100
MAX_DATA_BYTES = 64 * 1024  # packed; progress is a status line, not a payload
MAX_NAMES_PER_STEP = 100  # distinct names one step execution may emit (each kept in history)

__all__ = ["MAX_DATA_BYTES", "MAX_NAMES_PER_STEP", "MAX_NAME_LENGTH", "emit"]


async def emit(name: str, data: Any = None) -> None:
    """Send a progress event to everyone following the current run; call it from a task.

    The same as ``ctx.emit`` in the step that runs the task. Called outside a step (a task
    awaited in a unit test), it checks its arguments and does nothing else.

    Raises:
        InvalidProgressError: ``name`` is not a non-empty string of at most 100 characters, or
            ``data`` is not msgpack-serialisable or packs to more than 64 KiB.
    """
    packed = check(name, data)
    step = current_step.get()
    if step is not None:
        await send(step, name, packed)


def check(name: Any, data: Any) -> ExtType:
    """``data`` packed for the wire, once ``name`` and ``data`` passed the checks."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        shown = repr(name) if isinstance(name, str) else type(name).__name__
        raise InvalidProgressError(
            f"progress name {shown[:60]} is not valid; give ctx.emit() a non-empty string of at "
            f"most {MAX_NAME_LENGTH} characters, such as 'download'"
        )
    try:
        packed = wrap_value(data)
    except Exception:
        raise InvalidProgressError(
            not_serialisable(
                data,
                f"the data of progress {name!r}",
                "use strings, numbers, lists, dicts, booleans or None",
            )
        ) from None
    if len(packed.data) > MAX_DATA_BYTES:
        raise InvalidProgressError(
            f"the data of progress {name!r} is {len(packed.data)} bytes packed, over the "
            f"{MAX_DATA_BYTES}-byte limit; emit a short status (a count, a percentage) and keep "
            "large data elsewhere"
        )
    return packed


async def send(step: StepRun, name: str, packed: ExtType) -> None:
    """Keep ``packed`` as the step's last ``name`` and send it to the daemon (unless replaying)."""
    kept = step.progress
    if kept is None:
        kept = step.progress = {}
    elif name not in kept and len(kept) >= MAX_NAMES_PER_STEP:
        raise InvalidProgressError(
            f"step {step.step_name!r} already emitted {MAX_NAMES_PER_STEP} distinct progress "
            f"names; reuse a few names (the last value of each is kept) instead of {name!r}"
        )
    kept[name] = packed
    if step.emitter is not None and not step.replaying:
        await step.emitter(name, packed, time.time_ns() // 1_000_000)
