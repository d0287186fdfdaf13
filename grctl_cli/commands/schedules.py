"""``grctl schedule …``: durable cron schedules that start runs (create, list, describe, …)."""

from __future__ import annotations

from typing import Annotated

import typer

from grctl_cli import render
from grctl_cli.options import (
    AddressOpt,
    HomeOpt,
    JsonOpt,
    SocketOpt,
    TlsCaOpt,
    TokenFileOpt,
    build_input,
    connect,
    run,
)

app = typer.Typer(
    help="Durable cron schedules that start runs.\n\n"
    "Example: grctl schedule create nightly --type Report --cron '0 3 * * *'",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name.")]


@app.command("create")
def create(
    name: NameArg,
    workflow_type: Annotated[
        str, typer.Option("--type", metavar="TYPE", help="The workflow type each fire starts.")
    ],
    cron: Annotated[
        str,
        typer.Option(
            "--cron",
            metavar="EXPR",
            help="Five fields (minute hour day month weekday), or six with seconds first.",
        ),
    ],
    input_: Annotated[
        str | None,
        typer.Option("--input", metavar="JSON", help="The input of every run, as JSON."),
    ] = None,
    overlap: Annotated[
        str,
        typer.Option(
            "--overlap",
            metavar="skip|allow",
            help="While the previous run is active: skip the fire (and count it) or start anyway.",
        ),
    ] = "skip",
    timezone: Annotated[
        str,
        typer.Option("--timezone", metavar="TZ", help="IANA zone the cron is read in."),
    ] = "UTC",
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Create a schedule: each fire starts a run of TYPE with workflow_id NAME-<fire time, UTC>.

    A fire missed while the daemon was down runs once when it starts again.

    Example: grctl schedule create nightly --type Report --cron '0 3 * * *' --timezone Europe/Paris
    """
    if overlap not in ("skip", "allow"):
        raise typer.BadParameter("use skip or allow", param_hint="'--overlap'")
    value = build_input(input_, None, [])

    async def go():
        async with connect(home, socket, address, token_file, tls_ca) as client:
            return await client.create_schedule(name, workflow_type, cron, value, overlap, timezone)

    info = run(go())
    if json_:
        render.print_json(info)
    else:
        render.note(f"created schedule {name}")
        from grctl_cli.render_schedules import schedule_details

        schedule_details(info)


@app.command("list")
def list_schedules(
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the schedules with their next fire time (local zone; UTC in --json).

    Example: grctl schedule list
    """

    async def go():
        async with connect(home, socket, address, token_file, tls_ca) as client:
            return await client.list_schedules()

    schedules = run(go())
    if json_:
        render.print_json(schedules)
    else:
        from grctl_cli.render_schedules import schedule_table

        schedule_table(schedules)


@app.command("describe")
def describe(
    name: NameArg,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show one schedule: cron, next and last fire, last run and its status, skips.

    Example: grctl schedule describe nightly
    """

    async def go():
        async with connect(home, socket, address, token_file, tls_ca) as client:
            return await client.describe_schedule(name)

    info = run(go())
    if json_:
        render.print_json(info)
    else:
        from grctl_cli.render_schedules import schedule_details

        schedule_details(info)


def _change(verb: str, example: str):
    def command(
        name: NameArg,
        home: HomeOpt = None,
        socket: SocketOpt = None,
        address: AddressOpt = None,
        token_file: TokenFileOpt = None,
        tls_ca: TlsCaOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        async def go():
            async with connect(home, socket, address, token_file, tls_ca) as client:
                return await getattr(client, f"{verb}_schedule")(name)

        out = run(go())
        if verb == "delete":
            out = {"name": name, "deleted": True}
        if json_:
            render.print_json(out)
        elif verb == "trigger":
            from grctl_cli.render_schedules import fire_outcome

            fire_outcome(out)
        else:
            done = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[verb]
            render.note(f"{done} schedule {name}")

    command.__doc__ = example
    command.__name__ = verb
    return command


app.command("pause")(
    _change(
        "pause",
        "Pause a schedule: its timer does nothing until resumed.\n\n"
        "Example: grctl schedule pause nightly",
    )
)
app.command("resume")(
    _change(
        "resume",
        "Resume a schedule from its next fire time after now (missed fires are not made up)."
        "\n\nExample: grctl schedule resume nightly",
    )
)
app.command("trigger")(
    _change(
        "trigger",
        "Fire a schedule now, once (the overlap rule applies; the next fire time stays).\n\n"
        "Example: grctl schedule trigger nightly",
    )
)
app.command("delete")(
    _change(
        "delete",
        "Delete a schedule; the runs it started are left alone.\n\n"
        "Example: grctl schedule delete nightly",
    )
)
