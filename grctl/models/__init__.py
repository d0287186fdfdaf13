"""Data the SDK, the client and the wire share: directives, errors, runs and history."""

from grctl.models.directive import Directive, ErrorDetails, RetryPolicy
from grctl.models.run import HistoryEvent, InboxEvent, ResetInfo, RunInfo, RunStatus

__all__ = [
    "Directive",
    "ErrorDetails",
    "HistoryEvent",
    "InboxEvent",
    "ResetInfo",
    "RetryPolicy",
    "RunInfo",
    "RunStatus",
]
