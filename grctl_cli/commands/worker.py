"""``grctl worker MODULE…``: run the workflows of these modules."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from grctl.errors import DaemonUnavailableError, WorkflowDefinitionError
from grctl.worker import Worker
from grctl.worker._loader import load_workflows
from grctl.worker.worker import DEFAULT_CONCURRENCY
from grctl_cli import render
from grctl_cli.options import HomeOpt, SocketOpt, fail, resolve_socket


def worker(
    modules: Annotated[
        list[str], typer.Argument(help="Import paths of workflow modules, e.g. myapp.flows.")
    ],
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Steps in flight at most.")
    ] = DEFAULT_CONCURRENCY,
    reload: Annotated[
        bool, typer.Option("--reload", help="Restart when the source changes.")
    ] = False,
    home: HomeOpt = None,
    socket: SocketOpt = None,
) -> None:
    """Run a worker for the workflows defined in MODULE (and more modules).

    Example: grctl worker myapp.flows --concurrency 20
    """
    try:
        workflows = load_workflows(modules)
    except WorkflowDefinitionError as exc:
        fail(str(exc))
    for wf in workflows:
        render.err_console.print(render.worker_banner(wf), highlight=False)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    w = Worker(workflows, socket_path=resolve_socket(home, socket), concurrency=concurrency)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(w.stop()))
        await w.run()

    try:
        asyncio.run(main())
    except DaemonUnavailableError as exc:
        fail(str(exc))
