"""Wiring and lifecycle: lock the home → open storage → recover → serve → drain → close."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import socket
import sys
from typing import IO, Any

from grctl.home import Address, ensure_private, member_host
from grctl.loop import run as run_loop
from grctl_daemon.config import DaemonConfig
from grctl_daemon.listen import ListenError, server_tls
from grctl_daemon.metrics import Exporter, MetricsError, Tally
from grctl_daemon.runtime import Runtime
from grctl_daemon.server import Server
from grctl_daemon.storage import display, open_storage
from grctl_daemon.storage.base import StorageError

log = logging.getLogger("grctl.daemon")


class AlreadyRunning(Exception):
    """Another daemon holds this home."""


def _lock(config: DaemonConfig) -> IO[str]:
    handle = open(config.pid_path, "a+")  # noqa: SIM115 - held for the daemon's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise AlreadyRunning(
            f"a grctl daemon (pid {pid}) is already running for {config.home}; "
            "stop it with: grctl daemon stop"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _setup_logging(config: DaemonConfig, foreground: bool) -> None:
    handlers: list[logging.Handler] = [logging.FileHandler(config.log_path)]
    if foreground:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def member_info(config: DaemonConfig) -> dict[str, str | None]:
    """How the other daemons of a cluster, and workers, reach this one."""
    address = None
    if config.listen is not None:
        host = config.listen.host
        if host in ("", "0.0.0.0", "::"):  # every interface: the others dial our name
            host = socket.gethostname()
        address = str(Address(host, config.listen.port))
    return {"host": member_host(), "socket": str(config.socket_path), "address": address}


async def serve(config: DaemonConfig) -> int:
    """Run the daemon until a signal or a shutdown request; returns the exit code."""
    # A certificate that does not load stops the start before the database is opened.
    tls = (
        server_tls(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None
    )
    # So does a metrics port that is taken (or the extra missing).
    exporter = (
        None if config.metrics is None else Exporter(config.metrics, asyncio.get_running_loop())
    )
    try:
        return await _serve(config, tls, exporter)
    finally:
        if exporter is not None:
            await exporter.close()


async def _serve(config: DaemonConfig, tls: Any, exporter: Exporter | None) -> int:
    storage = open_storage(
        config.db_url,
        synchronous=config.synchronous,
        lease_timeout_s=config.lease_timeout_s,
        member=member_info(config),
    )
    await storage.open()
    runtime = Runtime(config, storage)
    if exporter is not None:
        runtime.tally = Tally()
        storage.on_batch = runtime.tally.batch
        exporter.runtime = runtime
    stop = asyncio.Event()
    server = Server(runtime, config.socket_path, stop.set, tls)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.recover()
        await server.start()
        log.info(
            "grctl daemon %d serving %s (db %s, %s)",
            os.getpid(),
            config.socket_path,
            display(config.db_url),
            f"member {storage.holder}, {len(storage.owned)} partitions"
            if storage.members()
            else f"epoch {storage.epoch}",
        )
        if config.listen is not None:
            log.info(
                "grctl daemon listening on %s (%s, token from %s)",
                config.listen,
                "TLS" if tls else "plain TCP, no TLS",
                config.token_file,
            )
        if exporter is not None:
            log.info("grctl daemon serving Prometheus metrics at http://%s/metrics", config.metrics)
        waits = {
            asyncio.ensure_future(runtime.fatal.wait()),
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(storage.lost.wait()),  # another daemon took the database
        }
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if storage.lost.is_set():
            runtime.fatal.set()
        if runtime.fatal.is_set():
            log.error("grctl daemon stopping after a database failure; a restart resumes")
        else:
            log.info("grctl daemon stopping: finishing in-flight commits")
    finally:
        if exporter is not None:  # scrapes from now on report nothing: storage is closing
            exporter.runtime = None
        await server.stop()
        await runtime.close()
        await storage.close()
        try:
            config.socket_path.unlink()
        except FileNotFoundError:
            pass
    log.info("grctl daemon stopped")
    return 1 if runtime.fatal.is_set() else 0


def main(config: DaemonConfig, foreground: bool = True) -> int:
    # Whatever the caller's umask, all the daemon creates (database and its WAL, log, pid file,
    # socket) is for its owner only; the home itself is made 0700.
    os.umask(0o077)
    try:
        loose_mode = ensure_private(config.home)
        lock = _lock(config)
    except (AlreadyRunning, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        _setup_logging(config, foreground)
        if loose_mode is not None:
            log.warning(
                "the grctl home %s was mode %o, open to other users; set it to 700",
                config.home,
                loose_mode,
            )
        if config.token_file is not None and config.token_file.stat().st_mode & 0o077:
            log.warning(
                "the token file %s may be read by other users; make it yours only with: chmod "
                "600 %s",
                config.token_file,
                config.token_file,
            )
        return run_loop(serve(config))
    except (StorageError, ListenError, MetricsError) as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            config.pid_path.unlink()
        except FileNotFoundError:
            pass
        lock.close()
