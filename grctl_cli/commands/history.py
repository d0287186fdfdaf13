"""``grctl history``: a run's recorded events as a table, or followed live until it ends."""

from __future__ import annotations

from typing import Annotated

import typer

from grctl_cli import render
from grctl_cli.options import (
    AddressOpt,
    HomeOpt,
    RunOpt,
    SocketOpt,
    TlsCaOpt,
    TokenFileOpt,
    WorkflowIdArg,
    connect,
    run,
)


def history(
    workflow_id: WorkflowIdArg,
    run_id: RunOpt = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep printing new events, and progress lines as steps emit them, until the "
            "run ends.",
        ),
    ] = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: Annotated[
        bool,
        typer.Option("--json", help="Print JSON: one document, or JSON Lines with --follow."),
    ] = False,
) -> None:
    """Show a run's history, one event a row: sequence, time, kind, step and a summary.

    With --follow, progress events (ctx.emit) show as they come, as "progress" rows with no
    sequence (JSON Lines: kind "progress"); the last of each name a step emitted stays in the
    history as a numbered "progress" row.

    Example: grctl history order-abc --follow
    """

    from grctl_cli import render_history  # rich.table: only for this command

    async def go() -> None:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            handle = client.get_workflow_handle(workflow_id, run_id)
            if not follow:
                if json_:
                    out = render.JsonArray()
                    async for page in handle.history().pages():
                        out.items(page)
                    out.close()
                    return
                printer = render_history.HistoryPrinter()
                async for page in handle.history().pages():
                    if printer.empty:
                        render_history.history_heading(page)
                    printer.rows(page)
                return
            if json_:
                async for ev in handle.history(follow=True, progress=True):
                    render.print_json_line(ev)
                return
            printer = render_history.HistoryPrinter()
            count = 0
            with render.live_status(f"following {workflow_id}") as line:
                async for ev in handle.history(follow=True, progress=True):
                    if count == 0:
                        render_history.history_heading([ev])
                    count += 1
                    printer.rows([ev])
                    line.update(render_history.follow_text(ev, count))

    run(go())
