"""A side-effect ledger for the seed flows: tasks append lines to the file named by SEED_LEDGER.

Each line is ``key attempt unix_time``; ``note(key)`` returns the attempt number it wrote, so a
task can fail a planned number of times and the test can count what really ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

LEDGER_ENV = "SEED_LEDGER"


def _path() -> Path | None:
    value = os.environ.get(LEDGER_ENV)
    return Path(value) if value else None


def note(key: str, *detail: str) -> int:
    """Append one line for ``key`` (with optional detail words); returns its attempt number."""
    path = _path()
    if path is None:
        return 1
    lines = path.read_text().splitlines() if path.exists() else []
    attempt = 1 + sum(1 for line in lines if line.split(" ", 1)[0] == key)
    with path.open("a") as f:
        f.write(" ".join([key, str(attempt), f"{time.time():.3f}", *detail]) + "\n")
    return attempt
