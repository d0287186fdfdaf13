"""Storage backends, chosen by URL and imported only when used (see ``base`` for the seam).

``--db`` / ``GRCTL_DB`` take a path or ``sqlite:///path`` (the default, ``$GRCTL_HOME/grctl.db``),
or ``postgresql://user[:password]@host[:port]/dbname[?schema=NAME]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from grctl_daemon.storage.base import Storage, StorageError

SCHEMES = ("sqlite", "postgresql", "postgres")


def scheme_of(url: str) -> str:
    """The backend a ``--db`` value names: ``sqlite`` for a plain path."""
    head, sep, _ = url.partition("://")
    if not sep:
        return "sqlite"
    if head not in SCHEMES:
        raise StorageError(
            f"--db {url!r}: unknown database scheme {head!r}; use a path, sqlite:///PATH or "
            "postgresql://USER@HOST/DBNAME"
        )
    return "postgresql" if head == "postgres" else head


def sqlite_path(url: str) -> Path:
    """The file a SQLite ``--db`` value names (``sqlite:///abs`` or ``sqlite://rel``, or a path)."""
    if "://" not in url:
        return Path(url).expanduser()
    parts = urlsplit(url)
    return Path((parts.netloc + parts.path) or ".").expanduser()


def display(url: str) -> str:
    """The URL without its password, for logs and status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def open_storage(url: str, **options: Any) -> Storage:
    """The backend for ``url``, not yet opened; ``options`` are backend settings."""
    scheme = scheme_of(url)
    if scheme == "sqlite":
        from grctl_daemon.storage.sqlite import SqliteStorage

        return SqliteStorage(sqlite_path(url), synchronous=options.get("synchronous", "FULL"))
    try:
        from grctl_daemon.storage.postgres import PostgresStorage
    except ImportError as exc:
        raise StorageError(
            f"--db {display(url)}: the PostgreSQL backend needs asyncpg ({exc}); install it "
            "with: pip install 'grctl[postgres]'"
        ) from None
    return PostgresStorage(url, options.get("lease_timeout_s", 5.0), options.get("member"))
