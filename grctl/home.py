"""Where grctl keeps its files and finds its daemon; the GRCTL_* locations are read here only.

GRCTL_HOME, GRCTL_SOCKET and GRCTL_DB for the files; GRCTL_ADDRESS, GRCTL_TOKEN (or
GRCTL_TOKEN_FILE) and GRCTL_TLS_CA for a daemon reached over TCP.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import NamedTuple

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


class Address(NamedTuple):
    """A TCP address, ``HOST:PORT`` (``[::1]:7777`` for IPv6); an empty host means every one."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, where: str = "--address") -> Address:
    """``HOST:PORT`` → Address; ValueError naming ``where`` when it is not one."""
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{where} {text!r} is not HOST:PORT (for example 10.0.0.5:7777 or [::1]:7777)"
        )
    return Address(host, int(port))


def daemon_address(
    address: str | None = None,
    socket: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> Address | None:
    """The daemon's TCP address: the argument, else ``GRCTL_ADDRESS``; None means its socket.

    ``GRCTL_ADDRESS`` gives way to a socket or home given explicitly, as ``GRCTL_SOCKET`` does.
    """
    if address:
        return parse_address(address)
    value = os.environ.get("GRCTL_ADDRESS")
    if not value or socket or home is not None:
        return None
    return parse_address(value, "GRCTL_ADDRESS")


def read_token(path: str | os.PathLike[str]) -> str:
    """The token a token file holds (surrounding whitespace dropped); ValueError if none."""
    try:
        token = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise ValueError(f"the token file {path} is empty")
    return token


def client_token(
    token: str | None = None, token_file: str | os.PathLike[str] | None = None
) -> str | None:
    """The token a client presents over TCP; None when there is none.

    The argument, else the file's, else ``GRCTL_TOKEN``, else ``GRCTL_TOKEN_FILE``'s content.
    """
    if token:
        return token
    if token_file:
        return read_token(token_file)
    if os.environ.get("GRCTL_TOKEN"):
        return os.environ["GRCTL_TOKEN"].strip()
    if os.environ.get("GRCTL_TOKEN_FILE"):
        return read_token(os.environ["GRCTL_TOKEN_FILE"])
    return None


def tls_ca(ca: str | os.PathLike[str] | None = None) -> Path | None:
    """The CA a client verifies the daemon's certificate with: the argument, else ``GRCTL_TLS_CA``.

    None means a plain TCP connection.
    """
    value = ca or os.environ.get("GRCTL_TLS_CA")
    return Path(value).expanduser().absolute() if value else None


def member_host() -> str:
    """The host name daemons of a cluster and workers compare to tell a member on this host
    (reached by its Unix socket) from one elsewhere (by TCP): ``GRCTL_MEMBER_HOST``, else the
    system's. Set it where several machines or containers share one host name."""
    return os.environ.get("GRCTL_MEMBER_HOST") or socket.gethostname()
