"""``grctl daemon start|stop|status``: the daemon as a background process of this home."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Annotated, Any

import typer

from grctl.duration import parse_duration
from grctl.errors import DaemonUnavailableError
from grctl_cli import render, render_daemon
from grctl_cli.options import (
    AddressOpt,
    HomeOpt,
    JsonOpt,
    RefusedError,
    SocketOpt,
    TlsCaOpt,
    TokenFileOpt,
    connect,
    run,
)

app = typer.Typer(
    help="Start, stop and inspect the grctl daemon.\n\nExample: grctl daemon start",
    no_args_is_help=True,
)

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.05


async def _status(*where: str | None) -> dict[str, Any] | None:
    """The daemon's status, or None when no daemon answers (``where``: as ``connect`` takes)."""
    try:
        async with connect(*where) as client:
            return await client.daemon_status()
    except DaemonUnavailableError:
        return None


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
    lease_timeout: Annotated[
        float | None,
        typer.Option(
            "--lease-timeout",
            min=0.1,
            metavar="SECONDS",
            help="PostgreSQL: how long a daemon's lease lasts unrenewed; the other daemons on "
            "the same database take its runs over that long after it dies [default: 5].",
        ),
    ] = None,
    retention: Annotated[
        str | None,
        typer.Option(
            "--retention",
            metavar="DURATION",
            help="Delete ended runs (history, inbox, store) that ended longer ago than this: "
            "90s, 12h, 30d; 0 keeps every run (env GRCTL_RETENTION) [default: 30d].",
            show_default=False,
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="Also serve TCP at this address (needs --token-file; env GRCTL_LISTEN).",
            show_default=False,
        ),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            metavar="PATH",
            help="File holding the token TCP clients must present (env GRCTL_TOKEN_FILE).",
            show_default=False,
        ),
    ] = None,
    tls_cert: Annotated[
        str | None,
        typer.Option(
            "--tls-cert",
            metavar="PATH",
            help="Certificate chain (PEM): TCP speaks TLS (with --tls-key; env GRCTL_TLS_CERT).",
            show_default=False,
        ),
    ] = None,
    tls_key: Annotated[
        str | None,
        typer.Option(
            "--tls-key",
            metavar="PATH",
            help="Private key (PEM) of --tls-cert (env GRCTL_TLS_KEY).",
            show_default=False,
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            metavar="HOST:PORT",
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (needs the "
            "grctl[metrics] extra; env GRCTL_METRICS).",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Start the daemon in the background; returns once it accepts connections.

    One daemon per home: a second one is refused. With --listen it also serves TCP, to
    connections that present the token of --token-file (TLS with --tls-cert and --tls-key).
    With --metrics it serves Prometheus metrics at http://HOST:PORT/metrics.

    Example: grctl daemon start --listen 0.0.0.0:7777 --token-file ~/.grctl-token
    """
    if synchronous.upper() not in ("FULL", "NORMAL"):
        raise typer.BadParameter("choose FULL or NORMAL", param_hint="'--synchronous'")
    from grctl.home import home_dir, socket_path  # socket/stat: only for this command

    # The daemon of this machine's home, whatever GRCTL_ADDRESS names.
    local = str(socket_path(socket, home))
    status = run(_status(home, local))
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
    if lease_timeout is not None:
        cmd += ["--lease-timeout", str(lease_timeout)]
    if retention is not None:
        try:
            parse_duration(retention)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--retention'") from None
        cmd += ["--retention", retention]
    if db:
        cmd += ["--db", db]
    if home:
        cmd += ["--home", home]
    if socket:
        cmd += ["--socket", socket]
    for flag, value in (
        ("--listen", listen),
        ("--token-file", token_file),
        ("--tls-cert", tls_cert),
        ("--tls-key", tls_key),
        ("--metrics", metrics),
    ):
        if value:
            cmd += [flag, value]
    if foreground:
        os.execv(sys.executable, cmd)
    h = home_dir(home)
    h.mkdir(parents=True, exist_ok=True, mode=0o700)
    # 0600 like the rest of the home (the umask would give 0644): the output may hold secrets.
    fd = os.open(h / "daemon.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)  # an older daemon.out made with the umask's mode
    with os.fdopen(fd, "ab") as out:
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
        status = run(_status(home, local))
        if status is not None:
            served = {k: status.get(k) for k in ("pid", "socket", "listen")}
            if json_:
                render.print_json(served)
            else:
                render.note(f"grctl daemon started ({render_daemon.served_text(served)})")
            return
        time.sleep(POLL_S)
    raise RefusedError(
        f"the daemon did not accept connections within {START_TIMEOUT_S:g}s; see {h / 'daemon.log'}"
    )


@app.command()
def stop(
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Stop the daemon gracefully: in-flight commits finish first. Exit 0 if none was running.

    Example: grctl daemon stop
    """
    where = (home, socket, address, token_file, tls_ca)
    status = run(_status(*where))
    if status is None:
        render.note("grctl daemon is not running")
        return

    async def shutdown() -> None:
        async with connect(*where) as client:
            await client.shutdown_daemon()

    run(shutdown())
    pid = status["pid"]
    # Over TCP the daemon may run on another machine: it is gone once it stops answering.
    from grctl.home import daemon_address

    remote = daemon_address(address, socket, home) is not None
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not (run(_status(*where)) if remote else _alive(pid)):
            render.note(f"grctl daemon stopped (pid {pid})")
            return
        time.sleep(POLL_S)
    raise RefusedError(
        f"the daemon (pid {pid}) did not stop within {STOP_TIMEOUT_S:g}s; kill it with: kill {pid}"
    )


@app.command()
def status(
    home: HomeOpt = None,
    socket: SocketOpt = None,
    address: AddressOpt = None,
    token_file: TokenFileOpt = None,
    tls_ca: TlsCaOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show the daemon's socket and TCP listener, database, uptime, workers and runs by status.

    Example: grctl daemon status --json
    """

    async def go() -> dict[str, Any]:
        async with connect(home, socket, address, token_file, tls_ca) as client:
            return await client.daemon_status()

    data = run(go())
    if json_:
        render.print_json(data)
    else:
        render_daemon.daemon_status(data)


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
