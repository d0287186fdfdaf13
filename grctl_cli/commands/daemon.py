"""``grctl daemon start|stop|status``: the daemon as a background process of this home."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Annotated, Any

import typer

from grctl.client import Client
from grctl.errors import DaemonUnavailableError
from grctl.home import home_dir
from grctl_cli import render
from grctl_cli.options import (
    HomeOpt,
    JsonOpt,
    RefusedError,
    SocketOpt,
    connect,
    resolve_socket,
    run,
)

app = typer.Typer(
    help="Start, stop and inspect the grctl daemon.\n\nExample: grctl daemon start",
    no_args_is_help=True,
)

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.05


async def _status(home: str | None, socket: str | None) -> dict[str, Any] | None:
    """The daemon's status, or None when no daemon answers."""
    try:
        client = await Client.connect(resolve_socket(home, socket))
    except DaemonUnavailableError:
        return None
    try:
        return await client.daemon_status()
    finally:
        await client.close()


@app.command()
def start(
    home: HomeOpt = None,
    socket: SocketOpt = None,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Run in this terminal instead of the background.")
    ] = False,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="The database: a path or sqlite:///PATH (default: HOME/grctl.db; env GRCTL_DB).",
        ),
    ] = None,
    synchronous: Annotated[
        str,
        typer.Option("--synchronous", help="SQLite durability: FULL (safest) or NORMAL (faster)."),
    ] = "FULL",
    max_worker_losses: Annotated[
        int | None,
        typer.Option(
            "--max-worker-losses",
            min=1,
            metavar="N",
            help="Fail a step with WorkerLost when its worker is lost N times in a row "
            "[default: 3].",
        ),
    ] = None,
    run_cache: Annotated[
        int | None,
        typer.Option(
            "--run-cache",
            min=1,
            metavar="N",
            help="Runs kept in memory besides those in use; the rest are read back when "
            "needed [default: 4096].",
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Start the daemon in the background; returns once it accepts connections.

    One daemon per home: a second one is refused.

    Example: grctl daemon start --home ~/.grctl
    """
    if synchronous.upper() not in ("FULL", "NORMAL"):
        raise typer.BadParameter("choose FULL or NORMAL", param_hint="'--synchronous'")
    status = run(_status(home, socket))
    if status is not None:
        raise RefusedError(
            f"a grctl daemon is already running (pid {status['pid']}, socket {status['socket']}); "
            "stop it with: grctl daemon stop"
        )
    cmd = [sys.executable, "-m", "grctl_daemon", "--synchronous", synchronous.upper()]
    if max_worker_losses is not None:
        cmd += ["--max-worker-losses", str(max_worker_losses)]
    if run_cache is not None:
        cmd += ["--run-cache", str(run_cache)]
    if db:
        cmd += ["--db", db]
    if home:
        cmd += ["--home", home]
    if socket:
        cmd += ["--socket", socket]
    if foreground:
        os.execv(sys.executable, cmd)
    h = home_dir(home)
    h.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(h / "daemon.out", "ab") as out:
        proc = subprocess.Popen(
            [*cmd, "--quiet"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (h / "daemon.out").read_text(errors="replace").strip().splitlines()[-1:]
            raise RefusedError(
                f"the daemon exited at start ({'; '.join(tail) or 'no output'}); "
                f"see {h / 'daemon.log'}"
            )
        status = run(_status(home, socket))
        if status is not None:
            if json_:
                render.print_json({"pid": status["pid"], "socket": status["socket"]})
            else:
                render.note(
                    f"grctl daemon started (pid {status['pid']}, socket {status['socket']})"
                )
            return
        time.sleep(POLL_S)
    raise RefusedError(
        f"the daemon did not accept connections within {START_TIMEOUT_S:g}s; see {h / 'daemon.log'}"
    )


@app.command()
def stop(home: HomeOpt = None, socket: SocketOpt = None) -> None:
    """Stop the daemon gracefully: in-flight commits finish first. Exit 0 if none was running.

    Example: grctl daemon stop
    """
    status = run(_status(home, socket))
    if status is None:
        render.note("grctl daemon is not running")
        return

    async def shutdown() -> None:
        async with connect(home, socket) as client:
            await client.shutdown_daemon()

    run(shutdown())
    pid = status["pid"]
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(pid):
            render.note(f"grctl daemon stopped (pid {pid})")
            return
        time.sleep(POLL_S)
    raise RefusedError(
        f"the daemon (pid {pid}) did not stop within {STOP_TIMEOUT_S:g}s; kill it with: kill {pid}"
    )


@app.command()
def status(home: HomeOpt = None, socket: SocketOpt = None, json_: JsonOpt = False) -> None:
    """Show the daemon's socket, database and size, uptime, workers and runs by status.

    Example: grctl daemon status --json
    """

    async def go() -> dict[str, Any]:
        async with connect(home, socket) as client:
            return await client.daemon_status()

    data = run(go())
    if json_:
        render.print_json(data)
    else:
        render.daemon_status(data)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs; an exited child its parent has not reaped yet counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
