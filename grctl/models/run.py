"""Run and history models the client returns: RunStatus, RunInfo, HistoryEvent, InboxEvent,
ResetInfo."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """Where a run is in its life. ``running`` and ``waiting`` are the active ones."""

    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"

    @property
    def is_active(self) -> bool:
        return self in (RunStatus.RUNNING, RunStatus.WAITING)


ACTIVE_STATUSES = (RunStatus.RUNNING.value, RunStatus.WAITING.value)


def ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(frozen=True)
class RunInfo:
    """What ``describe`` and ``list`` tell about one run."""

    workflow_id: str
    run_id: str
    workflow_type: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    step_name: str | None = None
    attempt: int = 0
    worker: str | None = None
    input: Any = None
    result: Any = None
    error: dict[str, Any] | None = None
    store: dict[str, Any] = field(default_factory=dict)
    timers: list[dict[str, Any]] = field(default_factory=list)
    parent_workflow_id: str | None = None
    parent_run_id: str | None = None
    cancel_requested: bool = False
    reason: str | None = None
    # Set while the run waits for a slot of its type (max_concurrent_runs): the type's limit,
    # how many of its runs execute a step now, how many runs wait ahead of this one.
    waiting_for_slot: dict[str, int] | None = None
    # For an active run, whether a connected worker serves its type (False: it cannot move until
    # one connects); None for a run that has ended, or from a daemon that does not say.
    served: bool | None = None
    # When the run fails with RunTimeout unless it ends first (start's ``run_timeout``);
    # None without one, and once the run has ended. Only ``describe`` reads it.
    run_deadline_at: datetime | None = None
    # While the run waits for a child (``ctx.next.wait_for_child``): the child's
    # ``{workflow_id, run_id}``; ``step_name`` is the step its end wakes. Only ``describe``.
    waiting_for_child: dict[str, str] | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RunInfo:
        return cls(
            workflow_id=data["workflow_id"],
            run_id=data["run_id"],
            workflow_type=data["workflow_type"],
            status=RunStatus(data["status"]),
            created_at=ms_to_datetime(data["created_ms"]),
            updated_at=ms_to_datetime(data["updated_ms"]),
            ended_at=ms_to_datetime(data.get("ended_ms")),
            step_name=data.get("step_name"),
            attempt=data.get("attempt", 0),
            worker=data.get("worker"),
            input=data.get("input"),
            result=data.get("result"),
            error=data.get("error"),
            store=data.get("store") or {},
            timers=data.get("timers") or [],
            parent_workflow_id=data.get("parent_workflow_id"),
            parent_run_id=data.get("parent_run_id"),
            cancel_requested=bool(data.get("cancel_requested")),
            reason=data.get("reason"),
            waiting_for_slot=data.get("waiting_for_slot"),
            served=data.get("served"),
            run_deadline_at=ms_to_datetime(data.get("run_deadline_ms")),
            waiting_for_child=data.get("waiting_for_child"),
        )


@dataclass(frozen=True)
class HistoryEvent:
    """One recorded fact of a run, in sequence order."""

    workflow_id: str
    run_id: str
    seq: int
    time: datetime
    kind: str
    step_name: str | None
    data: dict[str, Any]

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> HistoryEvent:
        return cls(
            workflow_id=data["workflow_id"],
            run_id=data["run_id"],
            seq=data["seq"],
            time=ms_to_datetime(data["ts_ms"]),
            kind=data["kind"],
            step_name=data.get("step_name"),
            data=data.get("data") or {},
        )


@dataclass(frozen=True)
class ResetInfo:
    """A reset done (``run_id`` names the new run) or, with ``dry_run``, what it would do."""

    workflow_id: str
    run_id: str | None  # the new run; None for a dry run
    from_run_id: str
    from_status: str  # the old run's status before the reset
    to_step: str
    args: Any  # the step's arguments as it last began (the input of a start handler…)
    store: dict[str, Any]  # the store as it was committed when the step last began
    skipped: list[dict[str, Any]]  # steps of the old run started after that point
    skipped_count: int
    terminates: bool  # the old run was active: the reset ends it terminated
    dry_run: bool

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ResetInfo:
        return cls(
            workflow_id=data["workflow_id"],
            run_id=data.get("run_id"),
            from_run_id=data["from_run_id"],
            from_status=data["from_status"],
            to_step=data["to_step"],
            args=data.get("args"),
            store=data.get("store") or {},
            skipped=list(data.get("skipped") or []),
            skipped_count=int(data.get("skipped_count") or 0),
            terminates=bool(data.get("terminates")),
            dry_run=bool(data.get("dry_run")),
        )


@dataclass(frozen=True)
class InboxEvent:
    """One event in a run's inbox; ``state`` is pending or dispatched (with the step it went to)."""

    seq: int
    event_name: str
    payload: Any
    arrived_at: datetime
    state: str
    step_name: str | None = None
    idempotency_key: str | None = None  # the sender's, when it gave one

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> InboxEvent:
        return cls(
            seq=data["seq"],
            event_name=data["event_name"],
            payload=data.get("payload"),
            arrived_at=ms_to_datetime(data["arrived_ms"]),
            state=data["state"],
            step_name=data.get("step_name"),
            idempotency_key=data.get("idempotency_key"),
        )
