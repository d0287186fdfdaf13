"""The runs and inbox views: ``grctl list``, ``describe``, ``reset`` and ``inbox``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.text import Text

from grctl_cli.render import (
    MAX_CELL,
    PagedTable,
    _fit,
    _grid,
    _table,
    ago,
    compact,
    console,
    cut,
    stamp,
    status_text,
    time_left,
    to_jsonable,
    when,
)


def runs_printer() -> PagedTable:
    """``grctl list``: one run a row, newest first (feed it ``run_row``s)."""
    return PagedTable(
        ("workflow_id", "type", "status", "step", "created", "run_id"), 3, "no runs match"
    )


def run_row(r: Any) -> tuple[Text, ...]:
    step = f"{r.step_name} #{r.attempt}" if r.step_name else ""
    status = status_text(r.status)
    if r.served is False:
        status.append(" (no worker)", style="yellow")
    return (
        Text(r.workflow_id),
        Text(r.workflow_type),
        status,
        Text(step),
        Text(ago(r.created_at)),
        Text(r.run_id),
    )


def slot_wait_text(info: Any) -> str:
    """``waiting for a slot: 3 of 3 runs of T are executing a step; 12 ahead``."""
    w = info.waiting_for_slot
    return (
        f"waiting for a slot: {w['executing']} of {w['limit']} runs of {info.workflow_type} "
        f"are executing a step; {w['ahead']} ahead"
    )


def unserved_text(workflow_type: str) -> str:
    return (
        f"no worker serves {workflow_type}: the run waits until one connects "
        "(start one with: grctl worker MODULE)"
    )


def listed_run(info: Any) -> dict[str, Any]:
    """A run as ``list --json`` gives it: ``describe --json`` without store and timers, which a
    listing does not read (keeping it cheap); ``describe`` has them."""
    out = to_jsonable(info)
    del out["store"], out["timers"], out["run_deadline_at"], out["waiting_for_child"]
    return out


def describe(info: Any) -> None:
    """``grctl describe``: everything about one run, the error's traceback included."""
    grid = _grid()
    grid.add_row("workflow_id", Text(info.workflow_id))
    grid.add_row("run_id", Text(info.run_id))
    grid.add_row("type", Text(info.workflow_type))
    status = status_text(info.status)
    if info.cancel_requested and info.status in ("running", "waiting"):
        status.append(" (cancel requested: ends after this step)", style="magenta")
    grid.add_row("status", status)
    if info.step_name and info.status == "waiting":  # only a wait_for_child names its target
        child = (info.waiting_for_child or {}).get("workflow_id")
        whom = f"child {child!r}" if child else "a child"
        grid.add_row("step", Text(f"waiting for {whom}, then {info.step_name}", style="dim"))
    elif info.step_name:
        grid.add_row("step", Text(f"{info.step_name} (attempt {info.attempt})"))
    elif info.status == "waiting":
        grid.add_row("step", Text("waiting for an event", style="dim"))
    if info.worker:
        grid.add_row("worker", Text(info.worker))
    if info.waiting_for_slot:
        grid.add_row("waiting", Text(slot_wait_text(info), style="yellow"))
    elif info.served is False:
        grid.add_row("worker", Text(unserved_text(info.workflow_type), style="yellow"))
    grid.add_row("created", Text(when(info.created_at)))
    grid.add_row("updated", Text(when(info.updated_at)))
    if info.ended_at:
        grid.add_row("ended", Text(when(info.ended_at)))
    if info.parent_workflow_id:
        grid.add_row("parent", Text(f"{info.parent_workflow_id} (run {info.parent_run_id})"))
    if info.input is not None:
        grid.add_row("input", Text(cut(compact(info.input), 200)))
    if info.run_deadline_at is not None:
        deadline = info.run_deadline_at
        grid.add_row("deadline", Text(f"{stamp(deadline)} ({time_left(deadline)}): run timeout"))
    for timer in info.timers:
        if timer["kind"] == "run":
            continue  # the deadline row above
        due = datetime.fromtimestamp(timer["due_ms"] / 1000, tz=UTC)
        grid.add_row("timer", Text(f"{timer['kind']}: due {stamp(due)} ({time_left(due)})"))
    if info.status == "completed":
        grid.add_row("result", Text(cut(compact(info.result), 200)))
    error = info.error or {}
    if error:
        grid.add_row("error", Text(f"{error.get('type', 'Error')}: {error.get('message', '')}"))
    if info.reason:
        grid.add_row("reason", Text(info.reason))
    parts: list[Any] = [grid]
    if info.store:
        store = _table("store key", "value")
        for key, item in sorted(info.store.items()):
            store.add_row(Text(key), Text(cut(compact(item), 2 * MAX_CELL)))
        parts += [Text(""), _fit(store, flex=1)]
    if error.get("traceback"):
        parts += [Text(""), Text("traceback", style="bold"), Text(error["traceback"].rstrip())]
    from rich.console import Group

    console.print(Group(*parts))


def reset(info: Any) -> None:
    """``grctl reset``: the new run (or, dry, what a reset would do), its store, what is skipped."""
    grid = _grid()
    grid.add_row("workflow_id", Text(info.workflow_id))
    grid.add_row("from run", Text(f"{info.from_run_id} ({info.from_status})"))
    if info.dry_run:
        grid.add_row("new run", Text("none: dry run, nothing changed", style="dim"))
    else:
        grid.add_row("new run", Text(info.run_id))
    grid.add_row("starts at", Text(info.to_step))
    if info.args is not None:
        grid.add_row("arguments", Text(cut(compact(info.args), 200)))
    if info.terminates:
        verb = "would be" if info.dry_run else "was"
        grid.add_row("old run", Text(f"{verb} terminated (it was {info.from_status})"))
    parts: list[Any] = [grid]
    store = _table("store key", "value")
    for key, item in sorted(info.store.items()):
        store.add_row(Text(key), Text(cut(compact(item), 2 * MAX_CELL)))
    parts += [Text(""), _fit(store, flex=1) if info.store else Text("store: empty", style="dim")]
    if info.skipped_count:
        steps = ", ".join(f"{s['step']}" for s in info.skipped)
        more = info.skipped_count - len(info.skipped)
        verb = "would be skipped" if info.dry_run else "skipped"
        text = f"{verb} ({info.skipped_count} step starts of the old run): {steps}"
        parts += [Text(""), Text(text + (f" and {more} more" if more > 0 else ""))]
    from rich.console import Group

    console.print(Group(*parts))


# -- events -----------------------------------------------------------------------------------


def inbox_printer() -> PagedTable:
    """``grctl inbox``: arrival order, event, payload, arrival time, pending/dispatched."""
    return PagedTable(("#", "event", "payload", "arrived", "state"), 2, "the inbox is empty")


def inbox_row(ev: Any) -> tuple[Text, ...]:
    state = Text(ev.state, style="yellow" if ev.state == "pending" else "green")
    if ev.state == "dispatched" and ev.step_name:
        state.append(f" → {ev.step_name}")
    return (
        Text(str(ev.seq)),
        Text(ev.event_name),
        Text(cut(compact(ev.payload))),
        Text(ago(ev.arrived_at)),
        state,
    )
