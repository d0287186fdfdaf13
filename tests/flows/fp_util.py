"""The ledger and barriers the fp_* flows share (tests/crash/test_fault_paths.py).

``note(op, *values)`` appends ``OP PID VALUES…`` to the ledger file env ``LEDGER`` names, one line
per execution of the code that calls it, so a test counts what really ran and where.
``await hold(name)`` is a barrier: the first execution to reach it writes ``NAME.reached`` next
to the ledger and waits for ``NAME.release``; every later execution (the re-dispatch after a
crash) passes straight through. A held execution that is cancelled (its worker lost the daemon)
writes ``NAME.cancelled``; one never released gives up after ``HOLD_DEADLINE_S``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

HOLD_DEADLINE_S = 20.0
POLL_S = 0.01


def ledger_path() -> Path:
    return Path(os.environ["LEDGER"])


def note(op: str, *values: str) -> None:
    with open(ledger_path(), "a") as f:
        f.write(" ".join([op, str(os.getpid()), *values]) + "\n")


def count(op: str, *values: str) -> int:
    """How many ledger lines are ``OP <any pid> VALUES…``."""
    path = ledger_path()
    if not path.exists():
        return 0
    lines = (line.split(" ") for line in path.read_text().splitlines())
    return sum(1 for parts in lines if parts[0] == op and parts[2:] == list(values))


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def hold(name: str) -> None:
    """Stop the first execution that gets here until the test releases ``name``."""
    folder = ledger_path().parent
    reached = folder / f"{name}.reached"
    if reached.exists():
        return
    _write_atomically(reached, str(os.getpid()))
    deadline = time.monotonic() + HOLD_DEADLINE_S
    try:
        while not (folder / f"{name}.release").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"barrier {name!r} was not released within {HOLD_DEADLINE_S}s")
            await asyncio.sleep(POLL_S)
    except asyncio.CancelledError:
        _write_atomically(folder / f"{name}.cancelled", str(os.getpid()))
        raise
