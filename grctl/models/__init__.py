"""Data the SDK, the client and the wire share: directives, errors, runs and history."""

from grctl.models.directive import Directive, ErrorDetails, RetryPolicy
from grctl.models.run import HistoryEvent, InboxEvent, ResetInfo, RunInfo, RunStatus
from grctl.models.schedule import FireOutcome, ScheduleInfo

__all__ = [
    "Directive",
    "ErrorDetails",
    "FireOutcome",
    "HistoryEvent",
    "InboxEvent",
    "ResetInfo",
    "RetryPolicy",
    "RunInfo",
    "RunStatus",
    "ScheduleInfo",
]
