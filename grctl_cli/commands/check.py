"""``grctl check MODULE…``: which active runs the workflow code in MODULE would break, and why.

Changes nothing. The module is loaded by the worker's loader (with its checks); the runs are
read a page at a time from the daemon (``list``, then ``inspect`` for each active run of a
type the module defines, or of a ``--type`` it no longer defines), and judged by
``grctl_cli.check_runs``. Exit 1 if any run would break.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from grctl_cli.options import (
    AddressOpt,
    HomeOpt,
    JsonOpt,
    SocketOpt,
    TlsCaOpt,
    TokenFileOpt,
    complete_module,
    complete_workflow_type,
    connect,
    run,
)

if TYPE_CHECKING:
    from grctl.client import Client
    from grctl.workflow import Workflow
    from grctl_cli.check_runs import RunCheck

ACTIVE = ("running", "waiting")
INSPECT_AT_ONCE = 16  # runs of a page inspected concurrently


def check(
    modules: Annotated[
        list[str],
        typer.Argument(
            metavar="MODULE…",
            help="Import paths of the new workflow modules, e.g. myapp.flows.",
            autocompletion=complete_module,
        ),
    ],
    removed_types: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            metavar="TYPE",
            help="Also check the runs of this workflow type, which MODULE no longer defines "
            "(its active runs would break). Repeatable.",
            autocompletion=complete_workflow_type,
        ),
    ] = None,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the active runs that the workflow code in MODULE would break if deployed now.

    Each active run of a type MODULE defines is compared with the new definitions: the step it
    is at or runs next, the event it handles, waits for or has in its inbox, the step its wait
    times out into, and the operations its in-flight step recorded (tasks, ctx.now()…) against
    those the new step makes (read from its source). Run it before the new workers start: it
    compares with the events and queries the running workers registered. Changes nothing;
    exits 1 if any run would break, 0 otherwise (warnings alone, such as a removed query,
    exit 0).

    Example: grctl check myapp.flows
    """
    from grctl.worker._loader import load_workflows  # imports the module: only when run
    from grctl_cli import render_check

    workflows = {wf.workflow_type: wf for wf in load_workflows(modules)}
    types: dict[str, Workflow | None] = dict(workflows)
    for name in removed_types or ():
        if name in workflows:
            raise typer.BadParameter(
                f"workflow type {name!r} is defined in {', '.join(modules)}; --type is for a "
                "type the new code no longer defines (its runs are checked without it)",
                param_hint="--type",
            )
        types[name] = None

    async def go() -> tuple[int, list[RunCheck]]:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            return await _check_all(client, types)

    checked, found = run(go())
    render_check.report(checked, found, json_)
    if any(c.breaks for c in found):
        raise typer.Exit(1)


async def _check_all(client: Client, types: dict[str, Workflow | None]) -> tuple[int, list[Any]]:
    """Every active run of ``types``, a page at a time; the number checked and the findings."""
    import asyncio  # not at import: ``grctl --help`` must not pay for it

    from grctl_cli.check_runs import MAX_RECORDS, judge

    checked = 0
    found: list[RunCheck] = []
    seen: set[str] = set()  # a run that went from running to waiting between the two listings
    gate = asyncio.Semaphore(INSPECT_AT_ONCE)

    async def one(workflow_id: str, run_id: str, wf: Workflow | None) -> RunCheck:
        async with gate:
            handle = client.get_workflow_handle(workflow_id, run_id)
            data = await handle.inspect()
            records = list(data["records"])
            while data["next"] is not None and len(records) <= MAX_RECORDS:
                data = {**data, **(await handle.inspect(after_op=data["next"]))}
                records += data["records"]
            return judge(data, records, wf)

    for workflow_type, wf in types.items():
        for status in ACTIVE:
            listing = client.list_workflows(status, workflow_type, limit=None)
            async for page in listing.pages():
                fresh = [info for info in page if info.run_id not in seen]
                seen.update(info.run_id for info in fresh)
                checks = await asyncio.gather(
                    *(one(info.workflow_id, info.run_id, wf) for info in fresh)
                )
                checked += len(checks)
                found += [c for c in checks if c.findings]
    return checked, found
