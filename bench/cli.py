"""The ``cli`` workload: the CPU one ``grctl`` command costs, start-up included.

A command is a fresh Python process, so what a user waits for is mostly import time. Each
command runs ``rounds`` times against the Stack's running daemon (which then holds the warm-up
chain's runs); its CPU (user + system, from ``wait4``) is taken per run and the median reported
in ms. ``grctl --help`` renders the whole help screen; ``grctl list`` asks the daemon for a page.
The target (docs/performance.md) is under 150 ms each on the reference machine.

The commands run with bytecode writing on (``PYTHONDONTWRITEBYTECODE`` removed, as a user's
shell has it): the warm-up run writes grctl's ``.pyc`` files, as a normal install (pip compiles
them) or a user's first run would. With it set, every run compiles grctl's own ~25 modules from
source again, ~25 ms a command that no user pays.
"""

from __future__ import annotations

import os
import statistics
import subprocess
from typing import Any

from bench.harness import GRCTL, Stack

COMMANDS = {"help": ["--help"], "list": ["list"], "list_json": ["list", "--json"]}


def _cpu_ms(argv: list[str], env: dict[str, str]) -> float:
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}")
    return (usage.ru_utime + usage.ru_stime) * 1000


def cli(stack: Stack, rounds: int) -> dict[str, Any]:
    """Median CPU ms of each command over ``rounds`` runs (one warm-up run each first)."""
    env = {**stack.env(), "NO_COLOR": "1", "COLUMNS": "100"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out: dict[str, Any] = {"rounds": rounds}
    for name, args in COMMANDS.items():
        _cpu_ms([GRCTL, *args], env)  # warm the page cache and the .pyc files
        samples = [_cpu_ms([GRCTL, *args], env) for _ in range(rounds)]
        out[f"{name}_cpu_ms"] = statistics.median(samples)
        out[f"{name}_cpu_ms_max"] = max(samples)
    return out
