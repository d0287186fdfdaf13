"""``grctl check`` output: the runs the new code would break (or warns about), and a summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from grctl_cli.render import _table, console, note, print_json, status_text

if TYPE_CHECKING:
    from grctl_cli.check_runs import RunCheck

VERDICT_STYLE = {"breaks": "bold red", "warning": "yellow"}


def report(checked: int, found: list[RunCheck], json_: bool) -> None:
    """The findings on stdout (a table, or one JSON document), the summary line on stderr."""
    breaking = sum(1 for c in found if c.breaks)
    warned = len(found) - breaking
    if json_:
        print_json(
            {
                "checked": checked,
                "breaking": breaking,
                "warnings": warned,
                "runs": [c.to_dict() for c in found],
            }
        )
    elif found:
        table = _table("run_id", "workflow_id", "type", "state", "why")
        table.columns[-1].no_wrap = False  # ids stay whole; the reasons wrap
        table.columns[-1].overflow = "fold"
        for c in found:
            state = status_text(c.status)
            if c.step_name:
                state.append(f" {c.step_name}", style="dim")
            why = Text()
            for n, f in enumerate(c.findings):
                if n:
                    why.append("\n")
                why.append(f"{f.level}: ", style=VERDICT_STYLE[f.level])
                why.append(f.why)
            table.add_row(Text(c.run_id), Text(c.workflow_id), Text(c.workflow_type), state, why)
        console.print(table)
    runs = f"checked {checked} active run{'s' if checked != 1 else ''}"
    verdict = f"{breaking} would break" if breaking else "none would break"
    note(f"{runs}: {verdict}" + (f", {warned} with warnings" if warned else ""))
