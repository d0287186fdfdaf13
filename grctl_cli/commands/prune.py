"""``grctl prune``: delete ended runs older than a duration, through the daemon."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated

import typer

from grctl.duration import parse_duration
from grctl_cli import render
from grctl_cli.options import (
    AddressOpt,
    HomeOpt,
    JsonOpt,
    SocketOpt,
    TlsCaOpt,
    TokenFileOpt,
    complete_workflow_type,
    connect,
    run,
)


class EndedStatus(StrEnum):
    """The statuses prune takes: an active run is never deleted."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Delete runs that ended longer ago than this: 90s, 15m, 12h, 30d (0: all ended).",
        ),
    ],
    status: Annotated[
        EndedStatus | None,
        typer.Option("--status", help="Only ended runs with this status.", show_default=False),
    ] = None,
    workflow_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            metavar="TYPE",
            help="Only runs of this workflow type.",
            autocompletion=complete_workflow_type,
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be deleted; delete nothing.")
    ] = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Delete ended runs (with their history, inbox and store) that ended before a cut-off.

    Active runs are never deleted. The daemon deletes in small batches beside running work;
    with --retention it also does this by itself. A deleted run's workflow_id can be started
    again.

    Example: grctl prune --older-than 7d --status completed --dry-run
    """
    age = _duration(older_than)

    async def go() -> None:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            done = await client.prune(age, status.value if status else None, workflow_type, dry_run)
        render.prune_summary(done, json_)

    run(go())
