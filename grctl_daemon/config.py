"""DaemonConfig: built once from flags, environment and the named defaults below."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grctl.duration import duration_ms
from grctl.home import LOG_NAME, PID_NAME, Address, db_url, home_dir, parse_address, read_token
from grctl.home import socket_path as resolve_socket
from grctl_daemon.engine.decide import DEFAULT_MAX_WORKER_LOSSES

DEFAULT_HEARTBEAT_TIMEOUT_S = 10.0
# Runs held in memory beyond those in use (a step on a worker, a unit not yet durable): the
# recently used ones, so that a step, an event or a read on them needs no database read.
DEFAULT_RUN_CACHE = 4096
DEFAULT_QUERY_TIMEOUT_S = 10.0
# Several daemons on one PostgreSQL database: how long the owner's lease lasts unrenewed, so
# how soon a standby takes over when the owner dies or hangs.
DEFAULT_LEASE_TIMEOUT_S = 5.0
SYNCHRONOUS_MODES = ("FULL", "NORMAL")
# Ended runs older than this are deleted by the daemon itself (``--retention``; 0 keeps all).
DEFAULT_RETENTION = "30d"
# How often the daemon looks for runs past retention: a tenth of it, within these bounds (a
# 1-minute retention then keeps at most ~66 s of ended runs; 30 days, 30 days and a minute).
PRUNE_INTERVAL_MIN_MS = 1_000
PRUNE_INTERVAL_MAX_MS = 60_000
DEFAULT_CHAIN_STEPS = 32
MAX_CHAIN_STEPS = 1000
MAKE_TOKEN = (
    "python -c 'import secrets; print(secrets.token_urlsafe(32))' > token && chmod 600 token"
)


@dataclass(frozen=True)
class DaemonConfig:
    """Where the daemon keeps its files and how it behaves."""

    home: Path
    socket_path: Path
    db_url: str  # a path or a URL; storage.open_storage picks the backend
    log_path: Path
    pid_path: Path
    synchronous: str = "FULL"
    heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S
    query_timeout_s: float = DEFAULT_QUERY_TIMEOUT_S
    max_worker_losses: int = DEFAULT_MAX_WORKER_LOSSES
    run_cache: int = DEFAULT_RUN_CACHE  # runs held in memory beyond those in use
    # The TCP listener beside the socket (``--listen``): every connection on it must present
    # ``token`` in its hello; with a certificate and key it speaks TLS.
    listen: Address | None = None
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S
    retention_ms: int = duration_ms(DEFAULT_RETENTION)  # 0: keep every run
    # Where Prometheus scrapes ``/metrics`` (``--metrics``); None serves no metrics.
    metrics: Address | None = None
    # How many steps of a run a worker may run in place before reporting (GRCTL_CHAIN_STEPS;
    # 0: every step reported alone). See ``grctl.worker._chain``.
    chain_steps: int = DEFAULT_CHAIN_STEPS

    @property
    def prune_interval_ms(self) -> int:
        """How often retention runs (see PRUNE_INTERVAL_MIN_MS)."""
        return min(PRUNE_INTERVAL_MAX_MS, max(PRUNE_INTERVAL_MIN_MS, self.retention_ms // 10))

    @classmethod
    def build(
        cls,
        home: str | None = None,
        socket: str | None = None,
        db: str | None = None,
        synchronous: str | None = None,
        max_worker_losses: int | None = None,
        run_cache: int | None = None,
        listen: str | None = None,
        token_file: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        lease_timeout_s: float | None = None,
        retention: str | None = None,
        metrics: str | None = None,
    ) -> DaemonConfig:
        h = home_dir(home)
        sync = (synchronous or os.environ.get("GRCTL_SYNCHRONOUS") or "FULL").upper()
        if sync not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {sync!r}"
            )
        heartbeat = float(os.environ.get("GRCTL_HEARTBEAT_TIMEOUT", DEFAULT_HEARTBEAT_TIMEOUT_S))
        net = _network(
            listen or os.environ.get("GRCTL_LISTEN"),
            token_file or os.environ.get("GRCTL_TOKEN_FILE"),
            tls_cert or os.environ.get("GRCTL_TLS_CERT"),
            tls_key or os.environ.get("GRCTL_TLS_KEY"),
        )
        metrics = metrics or os.environ.get("GRCTL_METRICS")
        return cls(
            home=h,
            socket_path=resolve_socket(socket, home),
            db_url=db_url(db, home),
            log_path=h / LOG_NAME,
            pid_path=h / PID_NAME,
            synchronous=sync,
            heartbeat_timeout_s=heartbeat,
            max_worker_losses=_at_least_1(
                "max-worker-losses",
                max_worker_losses
                or int(os.environ.get("GRCTL_MAX_WORKER_LOSSES", DEFAULT_MAX_WORKER_LOSSES)),
            ),
            run_cache=_at_least_1(
                "run-cache", run_cache or int(os.environ.get("GRCTL_RUN_CACHE", DEFAULT_RUN_CACHE))
            ),
            **net,
            lease_timeout_s=_positive(
                "lease-timeout",
                lease_timeout_s
                or float(os.environ.get("GRCTL_LEASE_TIMEOUT") or DEFAULT_LEASE_TIMEOUT_S),
            ),
            retention_ms=_duration(
                "retention", retention or os.environ.get("GRCTL_RETENTION") or DEFAULT_RETENTION
            ),
            metrics=parse_address(metrics, "--metrics") if metrics else None,
            chain_steps=_chain_steps(os.environ.get("GRCTL_CHAIN_STEPS")),
        )


def _chain_steps(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_CHAIN_STEPS
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_CHAIN_STEPS:
        raise ValueError(
            f"GRCTL_CHAIN_STEPS must be a whole number from 0 (off) to {MAX_CHAIN_STEPS}, "
            f"not {text!r}"
        )
    return n


def _duration(name: str, text: str) -> int:
    try:
        return duration_ms(text)
    except ValueError as exc:
        raise ValueError(f"--{name}: {exc}") from None


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"--{name} must be more than 0 seconds, not {value}")
    return value


def _at_least_1(name: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"--{name} must be 1 or more, not {value}")
    return value


def _network(
    listen: str | None, token_file: str | None, tls_cert: str | None, tls_key: str | None
) -> dict[str, Any]:
    """The TCP listener's settings; ValueError for a listener that would be open to anyone."""
    if not listen:
        if tls_cert or tls_key:
            raise ValueError("--tls-cert and --tls-key secure the TCP listener; add --listen")
        return {}
    address = parse_address(listen, "--listen")
    if not token_file:
        raise ValueError(
            f"--listen {address} needs a token, so that only those who hold it get in: make "
            f"one with: {MAKE_TOKEN}; then start with --token-file token (or GRCTL_TOKEN_FILE) "
            "and give clients GRCTL_TOKEN or --token-file"
        )
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key (PEM files)")
    path = Path(token_file).expanduser().absolute()
    return {
        "listen": address,
        "token": read_token(path),
        "token_file": path,
        "tls_cert": Path(tls_cert).expanduser().absolute() if tls_cert else None,
        "tls_key": Path(tls_key).expanduser().absolute() if tls_key else None,
    }
