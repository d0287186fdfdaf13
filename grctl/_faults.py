"""Fault injection for the crash campaign: SIGKILL this process at a named point.

``GRCTL_CRASH_AT=point`` arms one point in the process that has it in its environment (the
daemon or a worker); ``GRCTL_CRASH_AFTER=n`` (default 1) kills at the n-th time the point is
reached. Off by default, and free when off: every call site reads

    if faults.ARMED:
        faults.hit("task_done")

so a process without the variable pays one global lookup and a false branch.
"""

from __future__ import annotations

import os
import signal

DAEMON_POINTS: dict[str, str] = {
    "before_commit": "the writer has applied a batch but not committed it",
    "after_commit": "a batch is durable but nothing has been told of it",
    "after_dispatch": "a step dispatch was committed and written to a worker",
    "after_record": "a task record is durable but the worker has no reply yet",
    "timer_fire": "a due timer is being fired, before its decision is committed",
    "daemon_mid_frame": "half of a step dispatch frame is written to the worker",
}
WORKER_POINTS: dict[str, str] = {
    "task_done": "a task's side effect happened but its record was not sent",
    "task_recorded": "a task record was acknowledged, the step goes on",
    "step_done": "a step returned but its result was not sent",
    "worker_mid_frame": "half of a record or result frame is written to the daemon",
}
POINTS = {**DAEMON_POINTS, **WORKER_POINTS}
# Points that fail instead of killing: ``GRCTL_FAIL_AT=commit`` makes the n-th transaction
# (``GRCTL_FAIL_AFTER``, default 1) fail with an I/O error, as a dying disk would.
FAIL_POINTS: dict[str, str] = {
    "commit": "a transaction of the group commit fails with a disk I/O error",
}

POINT = os.environ.get("GRCTL_CRASH_AT", "")
ARMED = bool(POINT)
_AFTER = int(os.environ.get("GRCTL_CRASH_AFTER", "1") or 1)
_hits = 0

if ARMED and POINT not in POINTS:
    raise SystemExit(
        f"GRCTL_CRASH_AT={POINT!r} names no fault point; known points: {', '.join(POINTS)}"
    )

FAIL_POINT = os.environ.get("GRCTL_FAIL_AT", "")
FAIL_ARMED = bool(FAIL_POINT)
_FAIL_AFTER = int(os.environ.get("GRCTL_FAIL_AFTER", "1") or 1)
_fail_hits = 0

if FAIL_ARMED and FAIL_POINT not in FAIL_POINTS:
    raise SystemExit(
        f"GRCTL_FAIL_AT={FAIL_POINT!r} names no fail point; known: {', '.join(FAIL_POINTS)}"
    )


def fail_due(name: str) -> bool:
    """Count a pass through fail point ``name``; True from the ``GRCTL_FAIL_AFTER``-th pass on."""
    global _fail_hits
    if name != FAIL_POINT:
        return False
    _fail_hits += 1
    return _fail_hits >= _FAIL_AFTER


def due(name: str) -> bool:
    """Count a pass through ``name``; True when this pass is the one that must crash."""
    global _hits
    if name != POINT:
        return False
    _hits += 1
    return _hits == _AFTER


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def hit(name: str) -> None:
    """SIGKILL this process if ``name`` is the armed point and its turn has come."""
    if due(name):
        die()


def cut(write: object, frame: bytes, name: str) -> bool:
    """Mid-frame faults: write half of ``frame`` and die when due; False means write as usual."""
    if not due(name):
        return False
    write(frame[: max(1, len(frame) // 2)])  # type: ignore[operator]
    die()
    return True  # not reached
