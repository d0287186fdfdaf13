"""``grctl send`` and ``grctl inbox``: events into a run, and the inbox they wait in."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from grctl_cli import render, render_runs
from grctl_cli.options import (
    ActiveWorkflowIdArg,
    AddressOpt,
    HomeOpt,
    JsonOpt,
    RunOpt,
    RunTimeoutOpt,
    SocketOpt,
    TlsCaOpt,
    TokenFileOpt,
    WorkflowIdArg,
    build_input,
    build_payload,
    complete_event_name,
    connect,
    parse_run_timeout,
    run,
)


def send(
    workflow_id: ActiveWorkflowIdArg,
    event_name: Annotated[
        str,
        typer.Argument(
            metavar="EVENT", help="The event's name.", autocompletion=complete_event_name
        ),
    ],
    payload: Annotated[
        str | None,
        typer.Option(
            "--payload",
            metavar="JSON",
            help="The payload, as JSON: an object gives the handler's keyword arguments; any "
            "other value is its one argument, refused unless it takes exactly one.",
        ),
    ] = None,
    payload_file: Annotated[
        str | None,
        typer.Option(
            "--payload-file",
            metavar="PATH",
            help="Read the payload JSON from a file (- for stdin).",
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            metavar="KEY",
            help="An idempotency key: a second send with it to the same run is acknowledged "
            "and not stored again.",
        ),
    ] = None,
    start_type: Annotated[
        str | None,
        typer.Option(
            "--start",
            metavar="TYPE",
            help="Start a run of TYPE first when none of the id is active (in one commit).",
        ),
    ] = None,
    input_: Annotated[
        str | None,
        typer.Option("--input", metavar="JSON", help="With --start: the run's input (JSON)."),
    ] = None,
    run_timeout: RunTimeoutOpt = None,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Append an event to the active run's inbox; returns once it is durable.

    Refused when the run has ended or its workflow declares no handler for EVENT.
    With --start TYPE, a run of TYPE is started first if none of the id is active.

    Example: grctl send order-abc reject --payload '{"reason": "out of stock"}' --key webhook-81
    """
    value = build_payload(payload, payload_file)
    if input_ is not None and start_type is None:
        raise typer.BadParameter(
            "--input is the input of a run that --start TYPE starts; add --start TYPE",
            param_hint="'--input'",
        )
    if run_timeout is not None and start_type is None:
        raise typer.BadParameter(
            "--run-timeout is the deadline of a run that --start TYPE starts; add --start TYPE",
            param_hint="'--run-timeout'",
        )
    workflow_input = build_input(input_, None, [])
    timeout = parse_run_timeout(run_timeout)

    async def go() -> dict[str, Any]:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            if start_type is None:
                handle = client.get_workflow_handle(workflow_id)
                return await handle.send(event_name, value, idempotency_key=key)
            started = await client.send_with_start(
                start_type, workflow_id, event_name, value, workflow_input, key, timeout
            )
            return started.sent or {}

    reply = run(go())
    if json_:
        out = {"workflow_id": workflow_id, "event_name": event_name, "payload": value}
        out["sent"] = True  # acknowledged: durable now, or before (duplicate)
        out |= {k: reply[k] for k in ("run_id", "inbox_seq", "duplicate", "started") if k in reply}
        render.print_json(out)
    elif reply.get("duplicate"):
        render.note(
            f"{event_name} with key {key!r} was sent to {workflow_id} before "
            f"(inbox #{reply.get('inbox_seq')}); not sent again"
        )
    else:
        started = f" (started run {reply.get('run_id')})" if reply.get("started") else ""
        render.note(f"sent {event_name} to {workflow_id}{started}")


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
                events.pages(), json_, render_runs.inbox_printer(), render_runs.inbox_row
            )

    run(go())
