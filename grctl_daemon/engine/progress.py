"""The last progress value of each name a step emitted, kept as ``progress`` history rows.

Progress events (``ctx.emit``) are never committed one by one: the daemon only relays them.
The step sends the last value of each name with its outcome, and they commit in the same unit,
just before the outcome's own rows (so the history reads: what the step reported, then how it
ended). A step whose worker is lost, or that times out, reports nothing: its progress is gone.
"""

from __future__ import annotations

from typing import Any

from grctl.errors import InvalidInputError
from grctl_daemon.engine.decision import Decision
from grctl_daemon.storage import base as rec

MAX_KEPT = 100  # names per step outcome, as the worker enforces (grctl/worker/progress.py)


def checked(progress: Any) -> dict[str, bytes]:
    """The outcome's progress map as the engine takes it: names to packed values."""
    if not isinstance(progress, dict) or len(progress) > MAX_KEPT:
        raise InvalidInputError(f"a step's progress must be a map of at most {MAX_KEPT} names")
    for name in progress:
        if not isinstance(name, str) or not name:
            raise InvalidInputError("progress names must be non-empty strings")
    return progress


def keep_progress(
    d: Decision, step_name: str | None, progress: dict[str, Any] | None, now: int
) -> Decision:
    """``d`` with one ``progress`` row per name ahead of its other history rows (if any)."""
    s = d.state
    if not progress or s is None or d.error is not None:
        return d
    rows = [op for op in d.ops if type(op) is rec.AppendHistory]
    first = rows[0].seq if rows else s.history_seq + 1
    for op in rows:  # built by this decision, not committed yet: renumbered after ours
        op.seq += len(progress)
    kept = [
        rec.AppendHistory(
            s.run_id, first + n, now, "progress", step_name, {"name": name, "value": value}
        )
        for n, (name, value) in enumerate(progress.items())
    ]
    s.history_seq += len(kept)
    at = d.ops.index(rows[0]) if rows else len(d.ops)
    d.ops[at:at] = kept
    return d
