"""Schedule models the client returns: ScheduleInfo and FireOutcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from grctl.models.run import ms_to_datetime


@dataclass(frozen=True)
class ScheduleInfo:
    """A durable cron schedule: what it starts, when it fires next, what it did last.

    ``next_fire_at`` is None while the schedule is paused. ``skips`` counts the fires skipped
    because the previous run was still active (``overlap="skip"``); ``last_skip_at`` is the last
    of them. ``last_status`` (from ``describe_schedule`` only) is the status of the last run.
    """

    name: str
    workflow_type: str
    cron: str
    timezone: str
    overlap: str
    paused: bool
    next_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime
    input: Any = None
    last_fire_at: datetime | None = None
    last_workflow_id: str | None = None
    last_run_id: str | None = None
    last_status: str | None = None
    skips: int = 0
    last_skip_at: datetime | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ScheduleInfo:
        return cls(
            name=data["name"],
            workflow_type=data["workflow_type"],
            cron=data["cron"],
            timezone=data["timezone"],
            overlap=data["overlap"],
            paused=bool(data["paused"]),
            next_fire_at=ms_to_datetime(data.get("next_fire_ms")),
            created_at=ms_to_datetime(data["created_ms"]),
            updated_at=ms_to_datetime(data["updated_ms"]),
            input=data.get("input"),
            last_fire_at=ms_to_datetime(data.get("last_fire_ms")),
            last_workflow_id=data.get("last_workflow_id"),
            last_run_id=data.get("last_run_id"),
            last_status=data.get("last_status"),
            skips=data.get("skips", 0),
            last_skip_at=ms_to_datetime(data.get("last_skip_ms")),
        )


@dataclass(frozen=True)
class FireOutcome:
    """What one fire of a schedule did: started ``workflow_id``/``run_id``, or was skipped.

    A skip (``overlap="skip"`` while ``active_run_id`` is still active) starts nothing.
    """

    name: str
    fire_at: datetime
    workflow_id: str
    skipped: bool
    run_id: str | None = None
    active_run_id: str | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> FireOutcome:
        return cls(
            name=data["name"],
            fire_at=ms_to_datetime(data["fire_ms"]),
            workflow_id=data["workflow_id"],
            skipped=bool(data["skipped"]),
            run_id=data.get("run_id"),
            active_run_id=data.get("active_run_id"),
        )
