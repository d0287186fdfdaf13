"""Where grctl keeps its files: GRCTL_HOME, GRCTL_SOCKET and GRCTL_DB are resolved here only."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "~/.grctl"
SOCKET_NAME = "grctl.sock"
DB_NAME = "grctl.db"
LOG_NAME = "daemon.log"
PID_NAME = "daemon.pid"


def home_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """The grctl home: the argument, else ``GRCTL_HOME``, else ``~/.grctl``."""
    return Path(home or os.environ.get("GRCTL_HOME") or DEFAULT_HOME).expanduser().absolute()


def socket_path(
    socket: str | os.PathLike[str] | None = None, home: str | os.PathLike[str] | None = None
) -> Path:
    """The daemon socket: the argument, else ``GRCTL_SOCKET``, else ``<home>/grctl.sock``."""
    if socket:
        return Path(socket).expanduser().absolute()
    if os.environ.get("GRCTL_SOCKET") and home is None:
        return Path(os.environ["GRCTL_SOCKET"]).expanduser().absolute()
    return home_dir(home) / SOCKET_NAME


def db_path(
    db: str | os.PathLike[str] | None = None, home: str | os.PathLike[str] | None = None
) -> Path:
    """The database file: the argument, else ``GRCTL_DB``, else ``<home>/grctl.db``."""
    if db:
        return Path(db).expanduser().absolute()
    if os.environ.get("GRCTL_DB") and home is None:
        return Path(os.environ["GRCTL_DB"]).expanduser().absolute()
    return home_dir(home) / DB_NAME
