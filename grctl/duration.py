"""Durations as people type them: ``90s``, ``15m``, ``1h30m``, ``30d``, ``0`` (none)."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> timedelta:
    """``text`` as a timedelta: numbers each with a unit (ms, s, m, h, d, w), or a bare ``0``.

    Raises ValueError with the accepted forms when ``text`` is none of them.
    """
    value = text.strip().lower()
    if value in ("0", "0s"):
        return timedelta(0)
    pos, total_ms = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        total_ms += float(match.group(1)) * _UNITS_MS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit (ms, s, m, h, d, w), "
            "such as 90s, 15m, 1h30m or 30d, or 0 for none"
        )
    return timedelta(milliseconds=total_ms)


def duration_ms(text: str) -> int:
    """``parse_duration`` in whole milliseconds, as the wire and the database count time."""
    return int(parse_duration(text) / timedelta(milliseconds=1))


def run_timeout_ms(run_timeout: timedelta | None, workflow_id: str) -> int | None:
    """A start's ``run_timeout`` as the wire carries it (ms), or InvalidInputError saying what
    to pass; the daemon checks the upper bound (10 years)."""
    if run_timeout is None:
        return None
    if not isinstance(run_timeout, timedelta) or run_timeout <= timedelta(0):
        from grctl.errors import InvalidInputError

        raise InvalidInputError(
            f"run_timeout must be a positive datetime.timedelta, got {run_timeout!r}; "
            "pass e.g. run_timeout=timedelta(hours=1)",
            workflow_id=workflow_id,
        )
    # A sub-millisecond remainder rounds up, so a tiny positive timeout stays positive.
    return -(-run_timeout // timedelta(milliseconds=1))
