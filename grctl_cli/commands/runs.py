"""``grctl start``, ``list``, ``describe``, ``result``, ``query``, ``cancel``, ``terminate``,
``reset``."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Annotated, Any

import typer

from grctl.errors import GrctlError, WorkflowCancelledError, WorkflowFailedError
from grctl.models.run import RunStatus
from grctl_cli import render, render_runs
from grctl_cli.options import (
    AddressOpt,
    HomeOpt,
    JsonOpt,
    RefusedError,
    RunOpt,
    RunTimeoutOpt,
    SocketOpt,
    TlsCaOpt,
    TokenFileOpt,
    WorkflowIdArg,
    build_input,
    complete_query_name,
    complete_workflow_type,
    connect,
    parse_run_timeout,
    run,
)

if TYPE_CHECKING:
    from grctl.client import WorkflowHandle

DEFAULT_LIST_LIMIT = 20

ReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="Why; kept with the run and shown by describe.")
]


def start(
    workflow_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE",
            help="The workflow type, e.g. ProcessOrder.",
            autocompletion=complete_workflow_type,
        ),
    ],
    workflow_id: Annotated[
        str, typer.Option("--id", metavar="ID", help="The workflow_id: your stable key.")
    ],
    input_: Annotated[
        str | None,
        typer.Option(
            "--input",
            metavar="JSON",
            help="The input: a JSON object gives the start handler's keyword arguments; any "
            "other JSON value is its one argument, refused unless it takes exactly one.",
        ),
    ] = None,
    input_file: Annotated[
        str | None,
        typer.Option(
            "--input-file", metavar="PATH", help="Read the input JSON from a file (- for stdin)."
        ),
    ] = None,
    items: Annotated[
        list[str] | None,
        typer.Option(
            "-i",
            metavar="KEY=VALUE",
            help="One input argument; repeat it. VALUE is JSON (qty=2, ok=true) or else text.",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the run to end and print its result.")
    ] = False,
    run_timeout: RunTimeoutOpt = None,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Start a run of a workflow type; prints its workflow_id and run_id.

    Refused when ID already has an active run, or no worker ever registered TYPE.
    With --run-timeout the run fails with RunTimeout when it has not ended in time.

    Example: grctl start ProcessOrder --id order-abc -i order_id=abc --wait
    """
    workflow_input = build_input(input_, input_file, items or [])
    timeout = parse_run_timeout(run_timeout)

    async def go() -> None:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            handle = await client.start_workflow(
                workflow_type, workflow_id, workflow_input, run_timeout=timeout
            )
            ids = {"workflow_id": handle.workflow_id, "run_id": handle.run_id}
            if not wait:
                if json_:
                    render.print_json({**ids, "workflow_type": workflow_type})
                else:
                    render.fields_grid(list(ids.items()))
                    render.note(f"follow it with: grctl history {workflow_id} --follow")
                return
            if not json_:
                render.fields_grid(list(ids.items()))
            info = await handle.describe()
            if info.served is False:
                render.note(render_runs.unserved_text(workflow_type))
            await _report_outcome(handle, json_, as_fields=True)

    _waiting(go(), workflow_id, wait)


def list_runs(
    status: Annotated[
        RunStatus | None, typer.Option("--status", help="Only runs with this status.")
    ] = None,
    workflow_type: Annotated[
        str | None, typer.Option("--type", metavar="TYPE", help="Only runs of this workflow type.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Show at most this many runs.")
    ] = DEFAULT_LIST_LIMIT,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List runs, newest first.

    With --json, each run as describe --json gives it but without store and timers (a
    listing does not read them: use describe). A run that no connected worker serves shows
    "(no worker)" beside its status, and "served": false in JSON.

    Example: grctl list --status failed --type ProcessOrder --limit 5
    """

    async def go() -> None:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            runs = client.list_workflows(status.value if status else None, workflow_type, limit)
            await render.print_pages(
                runs.pages(),
                json_,
                render_runs.runs_printer(),
                render_runs.run_row,
                render_runs.listed_run,
            )

    run(go())


def describe(
    workflow_id: WorkflowIdArg,
    run_id: RunOpt = None,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show a run: status, current step and attempt, worker, store, timers, result or error.

    A failed run shows its error with the traceback.

    Example: grctl describe order-abc
    """

    async def go() -> Any:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            return await client.get_workflow_handle(workflow_id, run_id).describe()

    info = run(go())
    if json_:
        render.print_json(info)
    else:
        render_runs.describe(info)


def result(
    workflow_id: WorkflowIdArg,
    run_id: RunOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for a run still going to end.")
    ] = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print a run's result; exit 1 if it failed, was cancelled, or (without --wait) still runs.

    Example: grctl result order-abc --wait
    """

    async def go() -> None:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            info = await client.get_workflow_handle(workflow_id, run_id).describe()
            handle = client.get_workflow_handle(info.workflow_id, info.run_id)
            if info.status.is_active and not wait:
                raise RefusedError(
                    f"workflow {workflow_id!r} run {info.run_id} is still {info.status.value}; "
                    f"wait for its result with: grctl result {workflow_id} --wait",
                    workflow_id=workflow_id,
                    run_id=info.run_id,
                )
            if info.served is False:
                render.note(render_runs.unserved_text(info.workflow_type))
            await _report_outcome(handle, json_, as_fields=False)

    _waiting(go(), workflow_id, wait)


def _waiting(coro: Any, workflow_id: str, wait: bool) -> None:
    """Run a command that may wait for a run's end; Ctrl-C then says the run goes on (exit 130)."""
    try:
        run(coro)
    except KeyboardInterrupt:
        if not wait:
            raise
        render.note(
            f"stopped waiting; the run goes on in the daemon. Follow it with: grctl result "
            f"{workflow_id} --wait (or grctl history {workflow_id} --follow)"
        )
        raise typer.Exit(130) from None


def query(
    workflow_id: WorkflowIdArg,
    query_name: Annotated[
        str,
        typer.Argument(
            metavar="NAME", help="The query's name.", autocompletion=complete_query_name
        ),
    ],
    run_id: RunOpt = None,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run a query handler on a worker against the run's committed store; changes nothing.

    Example: grctl query order-abc status
    """

    async def go() -> Any:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            return await client.get_workflow_handle(workflow_id, run_id).query(query_name)

    answer = run(go())
    if json_:
        render.print_json({"workflow_id": workflow_id, "query_name": query_name, "value": answer})
    else:
        render.value(answer)


def cancel(
    workflow_id: WorkflowIdArg,
    reason: ReasonOpt = None,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Cancel the active run: its running step finishes, then the run ends cancelled.

    Example: grctl cancel order-abc --reason "customer changed their mind"
    """
    _end_run(workflow_id, "cancel", reason, (home, socket, address, token_file, tls_ca), json_)


def terminate(
    workflow_id: WorkflowIdArg,
    reason: ReasonOpt = None,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Terminate the active run now; its running step is stopped on the worker.

    Example: grctl terminate order-abc --reason "stuck on a bad deploy"
    """
    _end_run(workflow_id, "terminate", reason, (home, socket, address, token_file, tls_ca), json_)


ToStepOpt = Annotated[
    str,
    typer.Option(
        "--to-step",
        metavar="STEP",
        help="The step (or start or event handler) the new run starts at; it must have run.",
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="Show the store and the skipped steps; change nothing."),
]


def reset(
    workflow_id: WorkflowIdArg,
    to_step: ToStepOpt,
    run_id: RunOpt = None,
    dry_run: DryRunOpt = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Start a new run at STEP with the store as it was when STEP last began in the run.

    The step runs again with the arguments it began with; later steps of the old run are skipped.

    --dry-run shows that store and the skipped steps, and changes nothing.

    An active run is terminated by the reset, in the same commit; both histories say so.

    Example: grctl reset order-abc --to-step charge --dry-run
    """

    async def go() -> Any:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            handle = client.get_workflow_handle(workflow_id, run_id)
            return await handle.reset(to_step, dry_run=dry_run)

    info = run(go())
    if json_:
        render.print_json(info)
    else:
        render_runs.reset(info)


def _end_run(
    workflow_id: str,
    verb: str,
    reason: str | None,
    where: tuple[str | None, ...],
    json_: bool,
) -> None:
    async def go() -> Any:
        async with connect(*where) as client:
            handle = client.get_workflow_handle(workflow_id)
            await (handle.cancel(reason) if verb == "cancel" else handle.terminate(reason))
            return await handle.describe()

    info = run(go())
    if json_:
        render.print_json(
            {
                "workflow_id": info.workflow_id,
                "run_id": info.run_id,
                "status": info.status,
                "cancel_requested": info.cancel_requested,
            }
        )
    elif info.status.is_active:
        step = f"its step {info.step_name}" if info.step_name else "the running step"
        render.note(
            f"cancel requested for {workflow_id} run {info.run_id}: {step} finishes first, "
            "then the run ends cancelled"
        )
    else:
        render.note(f"{workflow_id} run {info.run_id} {info.status.value}")


async def _report_outcome(handle: WorkflowHandle, json_: bool, as_fields: bool) -> None:
    """Wait (with a live line) for the run to end; print its result, or raise its failure.

    ``as_fields`` prints status and result as label lines (``start --wait``) rather than the
    bare value (``result``), so ``grctl result ID > out.json`` holds just the value.
    """
    try:
        value = await _wait_with_status(handle)
    except (WorkflowFailedError, WorkflowCancelledError) as exc:
        details = exc.details or {}
        outcome: dict[str, Any] = {"workflow_id": handle.workflow_id, "run_id": handle.run_id}
        if isinstance(exc, WorkflowFailedError):
            status = outcome["status"] = "failed"
            outcome["error"] = details
        else:
            status = outcome["status"] = details.get("status")
            outcome["reason"] = details.get("reason")
        if json_:
            render.print_json(outcome)
        elif as_fields:
            render.fields_grid([("status", render.status_text(str(status)))])
        raise
    if json_:
        render.print_json(
            {
                "workflow_id": handle.workflow_id,
                "run_id": handle.run_id,
                "status": "completed",
                "result": value,
            }
        )
    elif as_fields:
        render.fields_grid(
            [("status", render.status_text("completed")), ("result", render.compact(value))]
        )
    else:
        render.value(value)


async def _wait_with_status(handle: WorkflowHandle) -> Any:
    """``handle.result()`` while a live line tells where the run is (from its history)."""
    import asyncio

    from grctl_cli import render_history

    with render.live_status(render_history.wait_text(handle.workflow_id, None)) as line:

        async def track() -> None:
            with contextlib.suppress(GrctlError):
                async for ev in handle.history(follow=True):
                    line.update(render_history.wait_text(handle.workflow_id, ev))

        tracker = asyncio.create_task(track())
        try:
            return await handle.result()
        finally:
            tracker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tracker
