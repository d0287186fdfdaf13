"""A worker's workflow definitions, checked whole before anything is registered.

A malformed one would otherwise be kept and break later starts, sends or retries of its type
with internal errors; the worker gets one clear refusal instead.
"""

from __future__ import annotations

from typing import Any

from grctl.models.directive import RetryPolicy
from grctl.signature import binding_error

_MAX_MS = 2**53  # durations the daemon adds to now() and stores as SQLite integers


def definition_problem(d: Any) -> str | None:
    """Why a worker's workflow definition (``Workflow.definition()``) is unusable, or None."""
    if not isinstance(d, dict):
        return "a definition is not a map"
    wt = d.get("workflow_type")
    if not isinstance(wt, str) or not wt:
        return "'workflow_type' must be a non-empty string"
    start, steps, events = d.get("start"), d.get("steps"), d.get("events")
    queries = d.get("queries")
    if not isinstance(start, dict) or not isinstance(start.get("name"), str):
        return f"{wt}: 'start' must be a map with a 'name'"
    if not isinstance(steps, list) or not isinstance(events, list):
        return f"{wt}: 'steps' and 'events' must be lists"
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        return f"{wt}: 'queries' must be a list of names"
    limit = d.get("max_concurrent_runs")
    if limit is not None and (not _is_int(limit) or not 1 <= limit <= _MAX_MS):
        return f"{wt}: 'max_concurrent_runs' must be a whole number of at least 1, or absent"
    handlers = [("start", start.get("params"))]
    for s in steps:
        if not isinstance(s, dict) or not isinstance(s.get("name"), str):
            return f"{wt}: each step must be a map with a 'name'"
        timeout = s.get("timeout_ms")
        if not _is_int(timeout) or not 0 <= timeout <= _MAX_MS:
            return f"{wt}: step {s['name']!r} needs a 'timeout_ms' between 0 and {_MAX_MS}"
        problem = _retry_problem(s.get("retry_policy"))
        if problem:
            return f"{wt}: retry policy of step {s['name']!r}: {problem}"
    for e in events:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            return f"{wt}: each event must be a map with a 'name'"
        handlers.append((f"event {e['name']!r}", e.get("params")))
    for what, params in handlers:
        try:
            binding_error(params, None)  # builds the handler's signature from the rows
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            return f"{wt}: parameters of {what} are malformed ({type(exc).__name__}: {exc})"
    return None


def _retry_problem(rp: Any) -> str | None:
    if rp is None:
        return None
    if not isinstance(rp, dict):
        return "not a map"
    for name in ("max_attempts", "initial_delay_ms", "max_delay_ms"):
        value = rp.get(name)
        if value is not None and (not _is_int(value) or not 0 <= value <= _MAX_MS):
            return f"{name!r} must be an integer between 0 and {_MAX_MS}"
    for name in ("backoff_multiplier", "jitter"):
        value = rp.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6
        ):
            return f"{name!r} must be a number"
    for name in ("retryable_errors", "non_retryable_errors"):
        value = rp.get(name)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            return f"{name!r} must be a list of error class names"
    try:
        RetryPolicy.from_wire(rp)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
