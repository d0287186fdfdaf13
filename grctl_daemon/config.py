"""DaemonConfig: built once from flags, environment and the named defaults below."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from grctl._home import LOG_NAME, PID_NAME, db_path, home_dir, socket_path

DEFAULT_HEARTBEAT_TIMEOUT_S = 10.0
DEFAULT_QUERY_TIMEOUT_S = 10.0
SYNCHRONOUS_MODES = ("FULL", "NORMAL")


@dataclass(frozen=True)
class DaemonConfig:
    """Where the daemon keeps its files and how it behaves."""

    home: Path
    socket_path: Path
    db_path: Path
    log_path: Path
    pid_path: Path
    synchronous: str = "FULL"
    heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S
    query_timeout_s: float = DEFAULT_QUERY_TIMEOUT_S

    @classmethod
    def build(
        cls,
        home: str | None = None,
        socket: str | None = None,
        db: str | None = None,
        synchronous: str | None = None,
    ) -> DaemonConfig:
        h = home_dir(home)
        sync = (synchronous or os.environ.get("GRCTL_SYNCHRONOUS") or "FULL").upper()
        if sync not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {sync!r}"
            )
        heartbeat = float(os.environ.get("GRCTL_HEARTBEAT_TIMEOUT", DEFAULT_HEARTBEAT_TIMEOUT_S))
        return cls(
            home=h,
            socket_path=socket_path(socket, home),
            db_path=db_path(db, home),
            log_path=h / LOG_NAME,
            pid_path=h / PID_NAME,
            synchronous=sync,
            heartbeat_timeout_s=heartbeat,
        )
