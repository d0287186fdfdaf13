"""The ``grctl`` typer app: every command registered here, expected errors converted once.

The one error boundary is ``main``: a ``GrctlError`` (refused or failed operation, daemon not
running) becomes one line on stderr and exit 1; typer turns bad usage into exit 2. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from grctl.errors import DaemonUnavailableError, GrctlError
from grctl_cli import lazy_help, render
from grctl_cli.commands import check, daemon, events, graph, history, prune, runs, schedules, worker

lazy_help.install()  # help screens without rich.markdown/rich.traceback (~35 ms)

RUNS = "Runs"
EVENTS = "Events and history"
PROCESSES = "Processes"

app = typer.Typer(
    name="grctl",
    help="Ground Control: durable workflows for Python.\n\n"
    "Start the daemon, run a worker, then start and inspect runs.\n\n"
    "Example: grctl start ProcessOrder --id order-abc -i order_id=abc --wait",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version  # slow: only when asked

        try:
            render.note(f"grctl {version('grctl')}")
        except PackageNotFoundError:
            render.note("grctl (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Ground Control: durable workflows for Python."""


app.command("start", rich_help_panel=RUNS)(runs.start)
app.command("list", rich_help_panel=RUNS)(runs.list_runs)
app.command("describe", rich_help_panel=RUNS)(runs.describe)
app.command("result", rich_help_panel=RUNS)(runs.result)
app.command("query", rich_help_panel=RUNS)(runs.query)
app.command("cancel", rich_help_panel=RUNS)(runs.cancel)
app.command("terminate", rich_help_panel=RUNS)(runs.terminate)
app.command("prune", rich_help_panel=RUNS)(prune.prune)
app.command("reset", rich_help_panel=RUNS)(runs.reset)
app.command("send", rich_help_panel=EVENTS)(events.send)
app.command("inbox", rich_help_panel=EVENTS)(events.inbox)
app.command("history", rich_help_panel=EVENTS)(history.history)
app.command("worker", rich_help_panel=PROCESSES)(worker.worker)
app.command("graph", rich_help_panel=PROCESSES)(graph.graph)
app.command("check", rich_help_panel=PROCESSES)(check.check)
app.add_typer(schedules.app, name="schedule", rich_help_panel=RUNS)
app.add_typer(daemon.app, name="daemon", rich_help_panel=PROCESSES)


def main() -> None:
    """The ``grctl`` entry point and the CLI's one error boundary."""
    try:
        app()
    except GrctlError as exc:
        if isinstance(exc, DaemonUnavailableError) and isinstance(exc.__context__, PermissionError):
            # The socket exists but is not ours: a daemon's home is 0700 and its socket 0600.
            exc = DaemonUnavailableError(
                "permission denied on the daemon's socket: that daemon belongs to another "
                "user; use a daemon of your own (grctl daemon start, or --home/GRCTL_HOME)"
            )
        render.error(exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
