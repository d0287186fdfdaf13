"""What the CLI prints of a run's history: the rows, their one-line summaries, the live line.

Part of the printing layer (``render`` holds the console and the shared formatters).
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from grctl_cli.render import MAX_CELL, STATUS_STYLE, _fit, clock, compact, console, cut, span, when

# -- history ----------------------------------------------------------------------------------

_HISTORY_COLUMNS = (("seq", 4, "right"), ("time", 12, "left"), ("kind", 19, "left"))
_STEP_WIDTH = 16


def summary(kind: str, data: dict[str, Any]) -> str:
    """A history event's data on one readable line: ``attempt=1 worker=host:123``."""
    d = dict(data)
    if kind == "workflow_started":
        text = f"input={compact(d.pop('input', None))}"
        if d.get("parent_workflow_id"):
            text += f" parent={d['parent_workflow_id']}"
        return text
    if kind == "step_started":
        text = f"attempt={d.get('attempt')} worker={d.get('worker')}"
        if d.get("chained"):  # run in place after the step before, on the same worker
            text += " chained"
        return text + (f" replaying={d['replaying']}" if d.get("replaying") else "")
    if kind in ("event_received", "event_dispatched"):
        text = f"{d.get('event_name')} #{d.get('inbox_seq')}"
        if kind == "event_received":
            text += f" payload={compact(d.get('payload'))}"
        return text
    if kind == "step_completed":
        nxt = d.get("directive") or ""
        if d.get("next_step"):
            nxt = f"→ {d['next_step']}"
        text = f"{nxt} attempt={d.get('attempt')}"
        if d.get("store_keys"):
            text += f" store={','.join(d['store_keys'])}"
        return text.strip()
    if kind in ("step_failed", "step_timed_out"):
        err = d.get("error") or {}
        text = f"attempt={d.get('attempt')} {err.get('type')}: {err.get('message')}"
        if d.get("will_retry"):
            return text + f" (retry in {d.get('retry_in_ms')}ms)"
        return text + " (no retry)"
    if kind == "waiting_for_event":
        if d.get("timeout_ms") is None:
            return "no time limit"
        return f"timeout={span(d['timeout_ms'] / 1000)} → {d.get('timeout_step_name')}"
    if kind == "workflow_completed":
        return f"result={compact(d.get('result'))}"
    if kind == "workflow_failed":
        err = d.get("error") or {}
        return f"{err.get('type')}: {err.get('message')}"
    if kind == "progress":
        return f"{d.get('name')}={compact(d.get('value'))}"
    if kind == "reset":
        return f"→ run {d.get('new_run_id')} at {d.get('to_step')}"
    if kind == "workflow_reset":
        text = f"from run {d.get('from_run_id')} at {d.get('to_step')}"
        if d.get("args") is not None:
            text += f" args={compact(d['args'])}"
        return text + f" store={','.join(sorted(d.get('store') or {})) or '-'}"
    if kind.startswith("task_"):
        err = d.pop("error", None)
        text = f"{d.pop('name', '?')} op={d.pop('op', '?')} attempt={d.pop('attempt', '?')}"
        if isinstance(err, dict):
            text += f" {err.get('type')}: {err.get('message')}"
        return text
    return " ".join(f"{k}={compact(v)}" for k, v in d.items() if v not in (None, "", [], {}))


class HistoryPrinter:
    """History rows with fixed column widths, so a followed history lines up as it grows."""

    def __init__(self) -> None:
        self._header_done = False

    def _row_table(self, header: bool) -> Table:
        table = Table(
            box=None, show_header=header, header_style="bold", pad_edge=False, padding=(0, 1)
        )
        for name, width, justify in _HISTORY_COLUMNS:
            table.add_column(name, width=width, no_wrap=True, justify=justify)
        table.add_column("step", width=_STEP_WIDTH, no_wrap=True, overflow="ellipsis")
        table.add_column("data", no_wrap=True, overflow="ellipsis")
        return table

    @property
    def empty(self) -> bool:
        return not self._header_done

    def rows(self, events: list[Any]) -> None:
        table = self._row_table(header=not self._header_done)
        self._header_done = True
        for ev in events:
            live = getattr(ev, "seq", None) is None  # a ProgressEvent: live, not stored
            table.add_row(
                Text("·" if live else str(ev.seq), style=PROGRESS_STYLE if live else ""),
                Text(clock(ev.time), style="dim"),
                Text(ev.kind, style=_kind_style(ev.kind)),
                Text(ev.step_name or ""),
                Text(
                    cut(progress_line(ev) if live else summary(ev.kind, ev.data), 2 * MAX_CELL),
                    style=PROGRESS_STYLE if live else "",
                ),
            )
        if events:
            console.print(_fit(table, flex=len(table.columns) - 1))


PROGRESS_STYLE = "magenta"


def progress_line(ev: Any) -> str:
    """A live progress event on one line: ``download=0.5``, and what this follower missed."""
    text = f"{ev.name}={compact(ev.data)}"
    return text + (f" ({ev.dropped} earlier progress events dropped)" if ev.dropped else "")


def _kind_style(kind: str) -> str:
    if kind == "progress":
        return PROGRESS_STYLE
    if kind in ("step_failed", "step_timed_out", "task_attempt_failed", "task_failed"):
        return "red"
    if kind.startswith("workflow_"):
        return STATUS_STYLE.get(kind.removeprefix("workflow_"), "bold")
    if kind.startswith("event_") or kind == "waiting_for_event":
        return "yellow"
    return ""


def history_heading(events: list[Any]) -> None:
    """The line above a history table: which run, and when it started."""
    if events:
        first = events[0]
        console.print(
            Text(f"{first.workflow_id} run {first.run_id}, started {when(first.time)}", "bold")
        )


def _child_id(ev: Any) -> Any:
    """The child a ``waiting_for_child`` row names (the table is built for every kind of row)."""
    return ev.data.get("child_workflow_id") if isinstance(ev.data, dict) else None


def follow_text(ev: Any, count: int) -> str:
    """What the live line says while following: where the run is now."""
    if getattr(ev, "seq", 0) is None:
        where = f"{ev.step_name}: {progress_line(ev)}"
        return f"following {ev.workflow_id}: {where} · {count} events · Ctrl-C to stop"
    where = {
        "step_started": f"running {ev.step_name}",
        "waiting_for_event": "waiting for an event",
        "waiting_for_child": f"waiting for child {_child_id(ev)}",
        "step_failed": f"{ev.step_name} failed; retrying",
        "step_timed_out": f"{ev.step_name} timed out; retrying",
    }.get(ev.kind, f"{ev.kind} {ev.step_name or ''}".strip())
    return f"following {ev.workflow_id}: {where} · {count} events · Ctrl-C to stop"


def wait_text(workflow_id: str, ev: Any | None) -> str:
    """What the live line says while waiting for a result."""
    if ev is None:
        return f"waiting for {workflow_id}"
    where = {
        "step_started": f"running step {ev.step_name} (attempt {ev.data.get('attempt')})",
        "waiting_for_event": "waiting for an event (send one with: grctl send "
        f"{workflow_id} EVENT)",
        "waiting_for_child": f"waiting for child {_child_id(ev)}",
        "step_failed": f"step {ev.step_name} failed; a retry follows",
        "step_timed_out": f"step {ev.step_name} timed out; a retry follows",
    }.get(ev.kind, f"{ev.kind} {ev.step_name or ''}".strip())
    return f"{workflow_id}: {where}"
