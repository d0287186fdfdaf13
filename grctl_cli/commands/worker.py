"""``grctl worker MODULE…``: run the workflows of these modules, optionally reloading on edits."""

from __future__ import annotations

import gc
import importlib.util
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from grctl.errors import ModuleLoadError
from grctl_cli import DEFAULT_GC_THRESHOLD, render, render_daemon
from grctl_cli.options import (
    AddressOpt,
    HomeOpt,
    SocketOpt,
    TlsCaOpt,
    TokenFileOpt,
    complete_module,
    run,
)

# The same values as grctl.worker.worker's defaults (a test checks they agree), written out here
# so that registering the command does not import the worker and the protocol.
DEFAULT_CONCURRENCY = 100
DEFAULT_SHUTDOWN_GRACE_S = 10.0


def worker(
    modules: Annotated[
        list[str],
        typer.Argument(
            metavar="MODULE",
            help="Import paths of workflow modules, e.g. myapp.flows.",
            autocompletion=complete_module,
        ),
    ],
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Run at most this many steps at once.")
    ] = DEFAULT_CONCURRENCY,
    reload: Annotated[
        bool,
        typer.Option("--reload", help="Restart the worker when a .py file of its modules changes."),
    ] = False,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            min=0,
            help="On Ctrl-C/SIGTERM, let running steps finish for up to this many seconds "
            "(a second signal stops at once).",
        ),
    ] = DEFAULT_SHUTDOWN_GRACE_S,
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Run a worker for every workflow defined in the given modules, until Ctrl-C.

    The current directory is on the import path. At start the worker prints the workflow types,
    steps, events and queries it serves. With --address it reaches a daemon over TCP.

    Example: grctl worker myapp.flows --concurrency 20 --reload
    """
    where = {
        "--home": home,
        "--socket": socket,
        "--address": address,
        "--token-file": token_file,
        "--tls-ca": tls_ca,
    }
    if reload:
        _supervise(modules, concurrency, where)
        return
    import asyncio
    import logging

    from grctl.worker import Worker
    from grctl.worker._loader import load_workflows

    workflows = load_workflows(modules)
    gc.set_threshold(*DEFAULT_GC_THRESHOLD)  # a long-lived process: the usual collection pace
    try:
        w = Worker(
            workflows,
            socket_path=socket,
            home=home,
            address=address,
            token_file=token_file,
            tls_ca=tls_ca,
            concurrency=concurrency,
            shutdown_grace_s=grace,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(w.stop()))
        serving = asyncio.create_task(w.run())
        registered = asyncio.create_task(w.registered.wait())
        await asyncio.wait({serving, registered}, return_when=asyncio.FIRST_COMPLETED)
        if registered.done():
            render_daemon.worker_banner(w.name, str(w.endpoint), concurrency, workflows)
        else:
            registered.cancel()
        await serving

    run(serve())


def _supervise(modules: list[str], concurrency: int, where: dict[str, str | None]) -> None:
    """Run the worker as a child under watchfiles and restart it when a source file changes.

    The child is a plain ``grctl worker`` (no ``--reload``), so a module that fails to import
    after an edit only stops the child: the next edit starts it again.
    """
    from watchfiles import PythonFilter, run_process

    dirs = _source_dirs(modules)
    # -P: no cwd in front of sys.path at start-up, so the child imports grctl (and the workflow
    # modules, which load_workflows finds via the cwd appended then) exactly as a plain worker.
    cmd = [
        sys.executable,
        "-P",
        "-m",
        "grctl_cli",
        "worker",
        *modules,
        "--concurrency",
        str(concurrency),
    ]
    for flag, value in where.items():
        if value:
            cmd += [flag, value]
    render.note(
        f"watching {', '.join(map(str, dirs))}; the worker restarts when a .py file changes"
    )

    def changed(changes: set[tuple[Any, str]]) -> None:
        names = sorted({os.path.relpath(path) for _, path in changes})
        render.note(f"changed: {', '.join(names)}; restarting the worker")

    run_process(
        *dirs,
        target=shlex.join(cmd),
        target_type="command",
        watch_filter=PythonFilter(),
        callback=changed,
    )


def _source_dirs(modules: list[str]) -> list[Path]:
    """The directories holding each module's source: a package's folder, or a module's parent."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    dirs: list[Path] = []
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # a package on the way is missing
            spec = None
        except Exception as exc:  # a package on the way raised while importing
            raise ModuleLoadError(
                f"workflow module {name!r} failed to import: {type(exc).__name__}: {exc}"
            ) from None
        if spec is None or spec.origin is None:
            raise ModuleLoadError(
                f"workflow module {name!r} not found (looked on sys.path, which starts with "
                f"{cwd}); give an import path such as 'myapp.flows', not a file path"
            )
        found = (
            [Path(p) for p in spec.submodule_search_locations]
            if spec.submodule_search_locations
            else [Path(spec.origin).parent]
        )
        dirs += [d.resolve() for d in found if d.resolve() not in dirs]
    return dirs
