"""ProgressEvent: one ``ctx.emit`` as a follower receives it (``handle.stream()``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from grctl.models.run import ms_to_datetime


@dataclass(frozen=True)
class ProgressEvent:
    """A progress event a running step emitted; live only, never stored one by one.

    ``dropped`` counts the events this follower missed just before this one because it read
    slower than the step emitted (the latest of each name is never the one missed). The last
    ``data`` of each ``name`` a step emitted is kept in the history as a ``progress`` row.
    """

    workflow_id: str
    run_id: str
    name: str
    data: Any
    step_name: str | None
    time: datetime
    dropped: int = 0
    kind: str = "progress"

    @classmethod
    def from_wire(cls, row: dict[str, Any]) -> ProgressEvent:
        data = row.get("data") or {}
        return cls(
            workflow_id=row["workflow_id"],
            run_id=row["run_id"],
            name=data.get("name", ""),
            data=data.get("value"),
            step_name=row.get("step_name"),
            time=ms_to_datetime(row.get("ts_ms") or 0),  # type: ignore[arg-type]
            dropped=int(row.get("dropped") or 0),
        )
