"""Barriers and a ledger for the gd_* flows: files in the worker's GRCTL_HOME the test controls.

``await hold(name)`` appends ``reached NAME`` to the ledger, then polls until the test creates
the file ``<home>/NAME`` (``tests.daemon.test_guarantees.release``). ``ledger(line)`` appends one
line to ``<home>/ledger.txt``, the side-effect record tests compare with the history.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

POLL_S = 0.01


def home() -> Path:
    return Path(os.environ["GRCTL_HOME"])


def ledger(line: str) -> int:
    """Append ``line``; returns how many times it is now in the ledger (1 the first time)."""
    path = home() / "ledger.txt"
    with open(path, "a") as f:
        f.write(line + "\n")
    return path.read_text().splitlines().count(line)


async def hold(name: str) -> None:
    """Say we reached barrier ``name``, then wait until the test releases it."""
    ledger(f"reached {name}")
    gate = home() / name
    while not gate.exists():
        await asyncio.sleep(POLL_S)
