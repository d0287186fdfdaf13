"""What the CLI prints of schedules: the ``schedule list`` table, ``describe``, fire outcomes.

Part of the printing layer (``render`` holds the consoles and the shared formatters). Times in
tables are in the local zone; ``--json`` has them in ISO-8601 UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text

from grctl_cli.render import _grid, _table, compact, console, note, stamp, status_text, time_left


def _next(dt: datetime | None, paused: bool) -> Text:
    if paused or dt is None:
        return Text("paused", style="yellow")
    return Text(f"{stamp(dt)} ({time_left(dt)})")


def schedule_table(schedules: list[Any]) -> None:
    """``grctl schedule list``: one row per schedule, the next fire time in the local zone."""
    if not schedules:
        note("no schedules; create one with: grctl schedule create NAME --type T --cron EXPR")
        return
    table = _table("name", "type", "cron", "zone", "next fire (local)", "overlap", "last run")
    for s in schedules:
        table.add_row(
            s.name,
            s.workflow_type,
            s.cron,
            s.timezone,
            _next(s.next_fire_at, s.paused),
            s.overlap,
            s.last_workflow_id or "",
        )
    console.print(table)


def schedule_details(s: Any) -> None:
    """``grctl schedule describe``: every field of one schedule, times in the local zone."""
    grid = _grid()
    rows: list[tuple[str, Any]] = [
        ("name", s.name),
        ("type", s.workflow_type),
        ("cron", f"{s.cron}  ({s.timezone})"),
        ("next fire", _next(s.next_fire_at, s.paused)),
        ("overlap", s.overlap),
        ("input", compact(s.input)),
        ("last fire", stamp(s.last_fire_at) if s.last_fire_at else "never"),
        ("last run", s.last_workflow_id or ""),
        ("last status", status_text(s.last_status) if s.last_status else ""),
        ("skips", f"{s.skips}" + (f" (last {stamp(s.last_skip_at)})" if s.last_skip_at else "")),
        ("created", stamp(s.created_at)),
    ]
    for label, item in rows:
        grid.add_row(label, item if isinstance(item, Text) else Text(str(item)))
    console.print(grid)


def fire_outcome(o: Any) -> None:
    """``grctl schedule trigger``: the run started, or why none was."""
    if o.skipped:
        note(f"skipped: the previous run of {o.name} ({o.active_run_id}) is still active")
    else:
        console.print(Text(f"{o.workflow_id}  {o.run_id}"))
