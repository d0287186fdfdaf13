"""The ``grctl`` typer app: every command registered here, errors converted once."""

from __future__ import annotations

import typer

from grctl_cli.commands import daemon, runs, worker

app = typer.Typer(
    name="grctl",
    help="Ground Control: durable workflows for Python.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
app.add_typer(daemon.app, name="daemon")
app.command("worker")(worker.worker)
app.command("start")(runs.start)
app.command("send")(runs.send)
app.command("history")(runs.history)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
