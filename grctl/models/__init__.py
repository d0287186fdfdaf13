"""Data the SDK, the client and the wire share: directives, errors, runs and history.

The names are loaded on first use (PEP 562), so importing one submodule (the CLI needs only
``grctl.models.run``'s ``RunStatus`` to build its options) does not import the others.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grctl.models.child import ChildResult
    from grctl.models.directive import Directive, ErrorDetails, RetryPolicy
    from grctl.models.progress import ProgressEvent
    from grctl.models.run import HistoryEvent, InboxEvent, ResetInfo, RunInfo, RunStatus
    from grctl.models.schedule import FireOutcome, ScheduleInfo

_LAZY = {
    "ChildResult": "grctl.models.child",
    "Directive": "grctl.models.directive",
    "ErrorDetails": "grctl.models.directive",
    "RetryPolicy": "grctl.models.directive",
    "HistoryEvent": "grctl.models.run",
    "InboxEvent": "grctl.models.run",
    "ProgressEvent": "grctl.models.progress",
    "ResetInfo": "grctl.models.run",
    "RunInfo": "grctl.models.run",
    "RunStatus": "grctl.models.run",
    "FireOutcome": "grctl.models.schedule",
    "ScheduleInfo": "grctl.models.schedule",
}

__all__ = [
    "ChildResult",
    "Directive",
    "ErrorDetails",
    "FireOutcome",
    "HistoryEvent",
    "InboxEvent",
    "ProgressEvent",
    "ResetInfo",
    "RetryPolicy",
    "RunInfo",
    "RunStatus",
    "ScheduleInfo",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'grctl.models' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
