"""Everything the CLI prints: rich tables for people, JSON for scripts. The only printing module."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

_no_color = bool(os.environ.get("NO_COLOR"))
console = Console(no_color=_no_color, soft_wrap=False)
err_console = Console(stderr=True, no_color=_no_color)

STATUS_STYLE = {
    "running": "cyan",
    "waiting": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "terminated": "magenta",
}
MAX_CELL = 60


def to_jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "__dataclass_fields__"):
        return {k: to_jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    if hasattr(value, "value") and type(value).__module__.startswith("grctl"):
        return value.value
    return value


def print_json(value: Any, lines: bool = False) -> None:
    text = json.dumps(to_jsonable(value), ensure_ascii=False, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def short(value: Any, limit: int = MAX_CELL) -> str:
    text = value if isinstance(value, str) else json.dumps(to_jsonable(value), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(dt: datetime | None) -> str:
    if dt is None:
        return ""
    local = dt.astimezone()
    delta = (datetime.now(UTC) - dt).total_seconds()
    if 0 <= delta < 3600:
        rel = f"{int(delta)}s ago" if delta < 60 else f"{int(delta // 60)}m ago"
        return f"{local:%H:%M:%S} ({rel})"
    return f"{local:%Y-%m-%d %H:%M:%S}"


def status_text(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def history_table(events: list[Any]) -> Table:
    table = Table(show_header=True, header_style="bold")
    for col in ("seq", "time", "kind", "step", "data"):
        table.add_column(col, overflow="fold" if col == "data" else "ellipsis")
    for ev in events:
        table.add_row(str(ev.seq), when(ev.time), ev.kind, ev.step_name or "", short(ev.data))
    return table


def daemon_status(data: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    uptime = int(data["uptime_s"])
    table.add_row("pid", str(data["pid"]))
    table.add_row("socket", data["socket"])
    table.add_row(
        "database",
        f"{data['database']} ({data['database_bytes'] / 1024:.0f} KiB, "
        f"synchronous={data['synchronous']})",
    )
    table.add_row("uptime", f"{uptime // 3600}h {uptime % 3600 // 60}m {uptime % 60}s")
    runs = data.get("runs") or {}
    table.add_row(
        "runs", ", ".join(f"{status_text(k)} {v}" for k, v in sorted(runs.items())) or "none"
    )
    workers = data.get("workers") or []
    table.add_row("workers", str(len(workers)) if workers else "none connected")
    for w in workers:
        table.add_row(
            "",
            f"{w['name']}: {', '.join(w['workflow_types'])} "
            f"({w['inflight']}/{w['concurrency']} steps)",
        )
    console.print(table)


def worker_banner(wf: Any) -> str:
    steps = ", ".join(wf.steps) or "-"
    events = ", ".join(wf.events) or "-"
    queries = ", ".join(wf.queries) or "-"
    return (
        f"[bold]{wf.workflow_type}[/]: start {wf.start_def.name}; steps {steps}; "
        f"events {events}; queries {queries}"
    )
