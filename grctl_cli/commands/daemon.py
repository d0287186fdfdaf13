"""``grctl daemon start|stop|status``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Annotated

import typer

from grctl._home import home_dir
from grctl.client import Client
from grctl.errors import DaemonUnavailableError
from grctl_cli import render
from grctl_cli.options import HomeOpt, JsonOpt, SocketOpt, fail, resolve_socket, run

app = typer.Typer(help="Start, stop and inspect the grctl daemon.", no_args_is_help=True)

START_TIMEOUT_S = 15.0


async def _status(home: str | None, socket: str | None) -> dict | None:
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
    foreground: Annotated[bool, typer.Option("--foreground", help="Run in this terminal.")] = False,
    synchronous: Annotated[
        str, typer.Option("--synchronous", help="SQLite durability: FULL (default) or NORMAL.")
    ] = "FULL",
) -> None:
    """Start the daemon in the background; returns once it accepts connections.

    Example: grctl daemon start
    """
    status = run(_status(home, socket))
    if status is not None:
        fail(
            f"a grctl daemon is already running (pid {status['pid']}, socket {status['socket']}); "
            "stop it with: grctl daemon stop"
        )
    cmd = [sys.executable, "-m", "grctl_daemon", "--synchronous", synchronous.upper()]
    if home:
        cmd += ["--home", home]
    if socket:
        cmd += ["--socket", socket]
    if foreground:
        os.execv(sys.executable, cmd)
    h = home_dir(home)
    h.mkdir(parents=True, exist_ok=True, mode=0o700)
    out = open(h / "daemon.out", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        cmd + ["--quiet"], stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (h / "daemon.out").read_text(errors="replace").strip().splitlines()[-1:]
            fail(
                f"the daemon exited at start ({'; '.join(tail) or 'no output'}); see {h / 'daemon.log'}"
            )
        status = run(_status(home, socket))
        if status is not None:
            render.err_console.print(
                f"grctl daemon started (pid {status['pid']}, socket {status['socket']})",
                highlight=False,
            )
            return
        time.sleep(0.05)
    fail(
        f"the daemon did not accept connections within {START_TIMEOUT_S:g}s; see {h / 'daemon.log'}"
    )


@app.command()
def stop(home: HomeOpt = None, socket: SocketOpt = None) -> None:
    """Stop the daemon gracefully: in-flight commits finish first.

    Example: grctl daemon stop
    """
    status = run(_status(home, socket))
    if status is None:
        render.err_console.print("grctl daemon is not running")
        return

    async def shutdown() -> None:
        client = await Client.connect(resolve_socket(home, socket))
        try:
            await client.shutdown_daemon()
        finally:
            await client.close()

    run(shutdown())
    pid = status["pid"]
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            render.err_console.print(f"grctl daemon stopped (pid {pid})", highlight=False)
            return
        time.sleep(0.05)
    fail(
        f"the daemon (pid {pid}) did not stop within {START_TIMEOUT_S:g}s; kill it with: kill {pid}"
    )


@app.command()
def status(home: HomeOpt = None, socket: SocketOpt = None, json_: JsonOpt = False) -> None:
    """Show the daemon's socket, database, uptime, workers and runs by status.

    Example: grctl daemon status --json
    """
    data = run(_status(home, socket))
    if data is None:
        fail("the grctl daemon is not running; start it with: grctl daemon start")
    if json_:
        render.print_json(data)
        return
    render.daemon_status(data)
