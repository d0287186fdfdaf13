"""Where grctl keeps its files: GRCTL_HOME, GRCTL_SOCKET and GRCTL_DB are resolved here only."""

from __future__ import annotations

import os
import stat
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


def db_url(
    db: str | os.PathLike[str] | None = None, home: str | os.PathLike[str] | None = None
) -> str:
    """The database: the argument, else ``GRCTL_DB``, else ``<home>/grctl.db``.

    A URL (``sqlite:///…``, ``postgresql://…``) is kept as given; a path is made absolute.
    """
    value = db or (os.environ.get("GRCTL_DB") if home is None else None)
    if not value:
        return str(home_dir(home) / DB_NAME)
    value = os.fspath(value)
    if "://" in value:
        return value
    return str(Path(value).expanduser().absolute())


def ensure_private(home: Path) -> int | None:
    """Create ``home`` mode 0700, or set it to 0700: only its owner may reach socket and database.

    A home that exists with a looser mode is tightened, not refused (it is grctl's own
    directory); the looser mode is returned so the caller can say so, else ``None``. A home
    owned by another user is refused with ``PermissionError``: its owner could swap our files.
    """
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = home.stat()
    if info.st_uid != os.geteuid():
        raise PermissionError(
            f"the grctl home {home} belongs to uid {info.st_uid}, not to you (uid "
            f"{os.geteuid()}); use a home of your own with --home or GRCTL_HOME"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode != 0o700:
        os.chmod(home, 0o700)
    return mode if mode & 0o077 else None
