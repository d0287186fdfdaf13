"""``grctl start``, ``send``, ``history``, ``result``: runs and their events."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from grctl.client import Client
from grctl_cli import render
from grctl_cli.options import HomeOpt, JsonOpt, SocketOpt, parse_json, run, with_client


def start(
    workflow_type: Annotated[str, typer.Argument(help="The workflow type, e.g. ProcessOrder.")],
    workflow_id: Annotated[str, typer.Option("--id", help="The workflow_id (your stable key).")],
    input_: Annotated[str | None, typer.Option("--input", help="Input as a JSON object.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the result.")] = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Start a run of a workflow type.

    Example: grctl start ProcessOrder --id order-abc --input '{"order_id": "abc"}'
    """
    workflow_input: Any = parse_json(input_, "--input") if input_ is not None else None

    async def go(client: Client) -> dict[str, Any]:
        handle = await client.start_workflow(workflow_type, workflow_id, workflow_input)
        out: dict[str, Any] = {"workflow_id": handle.workflow_id, "run_id": handle.run_id}
        if wait:
            out["result"] = await handle.result()
        return out

    out = run(with_client(home, socket, go))
    if json_:
        render.print_json(out)
    else:
        render.console.print(f"started {out['workflow_id']} run {out['run_id']}", highlight=False)
        if wait:
            render.console.print(render.short(out["result"], 10_000), highlight=False)


def send(
    workflow_id: Annotated[str, typer.Argument(help="The workflow_id.")],
    event_name: Annotated[str, typer.Argument(help="The event name.")],
    payload: Annotated[str | None, typer.Option("--payload", help="Payload as JSON.")] = None,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Send an event to a run's inbox.

    Example: grctl send order-abc approve
    """
    value = parse_json(payload, "--payload") if payload is not None else None

    async def go(client: Client) -> None:
        await client.get_workflow_handle(workflow_id).send(event_name, value)

    run(with_client(home, socket, go))
    if json_:
        render.print_json({"workflow_id": workflow_id, "event_name": event_name, "sent": True})
    else:
        render.console.print(f"sent {event_name} to {workflow_id}", highlight=False)


def history(
    workflow_id: Annotated[str, typer.Argument(help="The workflow_id.")],
    run_id: Annotated[
        str | None, typer.Option("--run", help="A given run (default: latest).")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Tail until the run ends.")
    ] = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show a run's history.

    Example: grctl history order-abc --follow
    """

    async def go(client: Client) -> list[Any]:
        events = []
        async for ev in client.get_workflow_handle(workflow_id, run_id).history(follow=follow):
            if follow and json_:
                render.print_json(ev)
            elif follow:
                render.console.print(render.history_table([ev]))
            events.append(ev)
        return events

    events = run(with_client(home, socket, go))
    if follow:
        return
    if json_:
        render.print_json(events)
    else:
        render.console.print(render.history_table(events))
