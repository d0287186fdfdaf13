"""Everything the CLI prints: rich tables for people, JSON for scripts (with ``render_history``,
``render_daemon``, ``render_schedules`` and ``render_graph``, the only printing modules).

stdout carries data (tables, values, JSON); stderr carries status lines, spinners and errors, so
``grctl list --json | jq`` works. Colour follows ``NO_COLOR`` and the terminal: piped output is
plain text. Times are local (and relative where that helps) in tables, ISO-8601 UTC in JSON.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    # Imported where used, so that ``--help`` and commands that print one line stay quick.
    from rich.live import Live
    from rich.table import Table

from grctl.errors import GrctlError, WorkflowFailedError

NO_COLOR = bool(os.environ.get("NO_COLOR"))
PIPED_WIDTH = 200  # piped tables are not squeezed to 80 columns; they are cut per cell instead
MAX_CELL = 60  # a payload, store value or history summary longer than this ends in "…"


def _console(stream: Any, stderr: bool) -> Console:
    width = None if stream.isatty() else int(os.environ.get("COLUMNS") or PIPED_WIDTH)
    return Console(
        stderr=stderr,
        width=width,
        color_system=None if NO_COLOR else "auto",
        highlight=False,
        soft_wrap=False,
    )


console = _console(sys.stdout, stderr=False)
err_console = _console(sys.stderr, stderr=True)

STATUS_STYLE = {
    "running": "cyan",
    "waiting": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "terminated": "magenta",
}


# -- JSON -------------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Client models as plain JSON: dataclasses as objects, times as ISO-8601 UTC."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def print_json(value: Any) -> None:
    """One JSON document on stdout (indented on a terminal, one line in a pipe)."""
    indent = 2 if console.is_terminal else None
    _write(json.dumps(to_jsonable(value), ensure_ascii=False, indent=indent, default=str))


def print_json_line(value: Any) -> None:
    """One line of JSON Lines on stdout, flushed at once (``--follow``)."""
    _write(json.dumps(to_jsonable(value), ensure_ascii=False, default=str))


class JsonArray:
    """One JSON array written an item at a time, so a long listing starts printing at once.

    The output is the same document ``print_json`` would print for the whole list.
    """

    def __init__(self) -> None:
        self._indent = 2 if console.is_terminal else None
        self._count = 0

    def items(self, values: list[Any]) -> None:
        for value in values:
            text = json.dumps(
                to_jsonable(value), ensure_ascii=False, indent=self._indent, default=str
            )
            if self._indent:
                text = textwrap.indent(text, " " * self._indent)
            sys.stdout.write(("[\n" if self._count == 0 else ",\n") + text)
            self._count += 1
        sys.stdout.flush()

    def close(self) -> None:
        _write("[]" if self._count == 0 else "\n]")


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# -- small formatters -------------------------------------------------------------------------


def compact(value: Any) -> str:
    """A value on one line: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value.replace("\n", "⏎ ")
    return json.dumps(to_jsonable(value), ensure_ascii=False, default=str)


def cut(text: str, limit: int = MAX_CELL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def span(seconds: float) -> str:
    """A duration for people: 42s, 4m 59s, 3h 4m, 2d 3h."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def ago(dt: datetime) -> str:
    return f"{span((datetime.now(UTC) - dt).total_seconds())} ago"


def time_left(dt: datetime) -> str:
    left = (dt - datetime.now(UTC)).total_seconds()
    return f"in {span(left)}" if left >= 0 else f"overdue by {span(left)}"


def stamp(dt: datetime) -> str:
    """Local time of day, with the date in front unless it is today."""
    local = dt.astimezone()
    day = "" if local.date() == datetime.now().date() else f"{local:%Y-%m-%d} "
    return f"{day}{local:%H:%M:%S}"


def when(dt: datetime | None) -> str:
    """Local time and how long ago: ``07:35:07 (3s ago)``."""
    return "" if dt is None else f"{stamp(dt)} ({ago(dt)})"


def clock(dt: datetime) -> str:
    return dt.astimezone().strftime("%H:%M:%S.%f")[:-3]


def status_text(status: str) -> Text:
    return Text(str(status), style=STATUS_STYLE.get(str(status), ""))


def _grid() -> Table:
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True, min_width=11)
    grid.add_column(overflow="fold")
    return grid


def _table(*columns: str, wrap: bool = False) -> Table:
    """A table with a header rule and no borders; cells are cut with "…" unless ``wrap``."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for name in columns:
        table.add_column(name, no_wrap=not wrap, overflow="fold" if wrap else "ellipsis")
    return table


def _fit(table: Table, flex: int) -> Table:
    """Give column ``flex`` what the others leave of the width, so it alone is cut with "…".

    Left alone, rich shrinks every column of a too-wide table, and ids and times get cut.
    """
    gap = 2 + (1 if table.box else 0)  # cell padding on both sides, plus the box's divider
    used = gap * (len(table.columns) - 1)
    for i, column in enumerate(table.columns):
        if i != flex:
            cells = [Text(str(column.header)), *column.cells]
            used += column.width or max(c.cell_len for c in cells if isinstance(c, Text))
    table.columns[flex].max_width = max(console.width - used, 12)
    return table


# -- messages ---------------------------------------------------------------------------------


def error(exc: GrctlError | str) -> None:
    """An expected failure: one line on stderr, never a traceback."""
    message = str(exc)
    if isinstance(exc, WorkflowFailedError) and exc.workflow_id:
        message += f"; see its traceback with: grctl describe {exc.workflow_id}"
    err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def note(message: str) -> None:
    """A status line on stderr (started, sent, stopped…)."""
    err_console.print(Text(message), soft_wrap=True)


def value(data: Any) -> None:
    """A result or query value on stdout, always as JSON: ``"text"`` (quoted), ``null``, ``2``,
    ``{...}``; so ``grctl result ID > out.json`` is valid JSON whatever the value."""
    if console.is_terminal:
        from rich.json import JSON

        console.print(JSON.from_data(to_jsonable(data), ensure_ascii=False))
    else:
        _write(json.dumps(to_jsonable(data), ensure_ascii=False, indent=2, default=str))


def fields_grid(rows: list[tuple[str, Any]]) -> None:
    """Label/value lines on stdout (what ``start`` reports)."""
    grid = _grid()
    for label, item in rows:
        grid.add_row(label, item if isinstance(item, Text) else Text(str(item)))
    console.print(grid)


# -- live status line -------------------------------------------------------------------------


class _Elapsed:
    """Spinner text that shows how long we have been at it; re-rendered at each refresh."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.started = time.monotonic()

    def __rich__(self) -> Text:
        return Text.assemble(self.text, (f"  {span(time.monotonic() - self.started)}", "dim"))


class StatusLine:
    """A live spinner line; ``update(text)`` changes what it says. Silent when not a terminal."""

    def __init__(self, live: Live | None, label: _Elapsed) -> None:
        self._live = live
        self._label = label

    def update(self, text: str) -> None:
        self._label.text = text
        if self._live is not None:
            self._live.refresh()


@contextmanager
def live_status(text: str) -> Iterator[StatusLine]:
    """Show a spinner while the block runs; it goes away after.

    It draws on stdout when that is a terminal (so rows printed on ``console`` land above it),
    else on stderr when that is one; in a pipe nothing is drawn and nothing leaks into the data.
    """
    label = _Elapsed(text)
    target = console if console.is_terminal else err_console if err_console.is_terminal else None
    if target is None:
        yield StatusLine(None, label)
        return
    from rich.live import Live
    from rich.spinner import Spinner

    live = Live(
        Spinner("dots", text=label),
        console=target,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
        refresh_per_second=8,
    )
    with live:
        yield StatusLine(live, label)


# -- runs -------------------------------------------------------------------------------------


class PagedTable:
    """A table printed a page at a time as a listing arrives: the first page sets the column
    widths (column ``flex`` takes what the others leave), the later pages follow them."""

    def __init__(self, columns: tuple[str, ...], flex: int, empty: str) -> None:
        self._columns = columns
        self._flex = flex
        self._empty = empty
        self._widths: list[int] | None = None

    def rows(self, rows: list[tuple[Text, ...]]) -> None:
        if not rows:
            return
        table = _table(*self._columns)
        for row in rows:
            table.add_row(*row)
        if self._widths is None:
            _fit(table, self._flex)
            self._widths = [
                max(Text(str(c.header)).cell_len, *(t.cell_len for t in c.cells))  # type: ignore[union-attr]
                for c in table.columns
            ]
            self._widths[self._flex] = min(
                self._widths[self._flex], table.columns[self._flex].max_width or 10**6
            )
        else:
            table.show_header = False
            for column, width in zip(table.columns, self._widths, strict=True):
                column.width = width
        console.print(table)

    def close(self) -> None:
        if self._widths is None:
            note(self._empty)


async def print_pages(
    pages: AsyncIterator[list[Any]],
    json_: bool,
    table: PagedTable,
    row: Callable[[Any], tuple[Text, ...]],
    as_json: Callable[[Any], Any] | None = None,
) -> None:
    """A paged listing printed as its pages arrive: a table, or with ``json_`` one JSON array
    (of ``as_json(item)`` when given)."""
    out = JsonArray() if json_ else None
    try:
        async for page in pages:
            if out is not None:
                out.items([as_json(item) for item in page] if as_json else page)
            else:
                table.rows([row(item) for item in page])
    finally:
        if out is not None:
            out.close()
        else:
            table.close()


def prune_summary(done: dict[str, Any], json_: bool) -> None:
    """``grctl prune``: the runs deleted (or, with --dry-run, that would be) and their counts."""
    if json_:
        print_json(done)
        return
    removed = done["removed"]
    verb = "would delete" if done["dry_run"] else "deleted"
    if not removed:
        note(f"no ended runs match; nothing {'would be ' if done['dry_run'] else ''}deleted")
        return
    table = _table("workflow_id", "type", "status", "ended", "run_id")
    for r in done["runs"]:
        ended = datetime.fromtimestamp(r["ended_ms"] / 1000, UTC)
        table.add_row(
            Text(r["workflow_id"]),
            Text(r["workflow_type"]),
            status_text(r["status"]),
            Text(when(ended)),
            Text(r["run_id"]),
        )
    console.print(_fit(table, 0))
    if removed > len(done["runs"]):
        console.print(Text(f"… and {removed - len(done['runs'])} more"))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(done["by_status"].items()))
    note(f"{verb} {removed} run(s) ({counts})")
