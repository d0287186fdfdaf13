"""``grctl send`` and ``grctl inbox``: events into a run, and the inbox they wait in."""

from __future__ import annotations

from typing import Annotated

import typer

from grctl_cli import render
from grctl_cli.options import (
    AddressOpt,
    HomeOpt,
    JsonOpt,
    RunOpt,
    SocketOpt,
    TlsCaOpt,
    TokenFileOpt,
    WorkflowIdArg,
    build_payload,
    connect,
    run,
)


def send(
    workflow_id: WorkflowIdArg,
    event_name: Annotated[str, typer.Argument(metavar="EVENT", help="The event's name.")],
    payload: Annotated[
        str | None, typer.Option("--payload", metavar="JSON", help="The payload, as JSON.")
    ] = None,
    payload_file: Annotated[
        str | None,
        typer.Option(
            "--payload-file",
            metavar="PATH",
            help="Read the payload JSON from a file (- for stdin).",
        ),
    ] = None,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Append an event to the active run's inbox; returns once it is durable.

    Refused when the run has ended or its workflow declares no handler for EVENT.

    Example: grctl send order-abc approve --payload '{"qty": 2}'
    """
    value = build_payload(payload, payload_file)

    async def go() -> None:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            await client.get_workflow_handle(workflow_id).send(event_name, value)

    run(go())
    if json_:
        render.print_json(
            {"workflow_id": workflow_id, "event_name": event_name, "payload": value, "sent": True}
        )
    else:
        render.note(f"sent {event_name} to {workflow_id}")


def inbox(
    workflow_id: WorkflowIdArg,
    run_id: RunOpt = None,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show the run's inbox in arrival order: event, payload, arrival, pending or dispatched.

    Example: grctl inbox order-abc
    """

    async def go() -> None:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            events = client.get_workflow_handle(workflow_id, run_id).inbox()
            await render.print_pages(
                events.pages(), json_, render.inbox_printer(), render.inbox_row
            )

    run(go())
