"""``--profile``: sample the daemon and the worker with py-spy while ``chain`` runs once more.

py-spy attaches by pid and writes collapsed stacks (``--format raw``, one ``a;b;c count`` line
per distinct stack); from those we print the top functions by own time and also write a
speedscope file (open it at speedscope.app) for each process. py-spy lives in the peers venv
(bench/peers/setup.sh), never in the project's dependencies. Only threads on CPU are sampled
(py-spy's default), so time blocked in fsync or in the event loop's select is not counted.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

SAMPLE_RATE_HZ = 250
TOP = 15
# Innermost frames that are a thread waiting, not working: py-spy's idle detection misses some
# (a thread blocked in a C call shows its Python caller as the leaf). Dropped from the top list
# and reported as ``idle_pct``.
IDLE_LEAVES = (
    "select (selectors.py)",
    "_worker (concurrent/futures/thread.py)",
    "_connection_worker_thread (aiosqlite/core.py)",
    "wait (threading.py)",
    "_wait_for_tstate_lock (threading.py)",
)
# Leaves that need explaining. Both processes run on uvloop, whose loop is C: py-spy shows the
# time spent in it (epoll, socket write syscalls, callback dispatch) as Runner.run's own time.
FRAME_NOTES = {
    "Runner.run (asyncio/runners.py)": "uvloop's C event loop: socket syscalls, callbacks",
}
# Frames whose inclusive share we report by name: the daemon's group-commit transaction.
WATCH = ("SqliteStorage._write_batch", "PostgresStorage._write_batch")


def start(py_spy: Path, pid: int, raw_out: Path) -> subprocess.Popen[bytes]:
    """Attach py-spy to ``pid``; it records until ``stop()``."""
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--nolineno",
            "--rate",
            str(SAMPLE_RATE_HZ),
            "--output",
            str(raw_out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(proc: subprocess.Popen[bytes]) -> str:
    """Ask py-spy to write its output and wait for it; returns its stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")


def read_stacks(raw: Path) -> list[tuple[list[str], int]]:
    stacks = []
    if not raw.exists():
        return stacks
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def busy(stacks: list[tuple[list[str], int]]) -> list[tuple[list[str], int]]:
    """The stacks whose innermost frame is not a known idle wait."""
    return [(frames, count) for frames, count in stacks if frames[-1] not in IDLE_LEAVES]


def summarise(stacks: list[tuple[list[str], int]], n: int = TOP) -> dict[str, Any]:
    """Top ``n`` functions by own time among busy samples, the idle share, watched frames."""
    everything = sum(c for _, c in stacks)
    working = busy(stacks)
    total = max(sum(c for _, c in working), 1)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in working:
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    watched = {
        name: 100 * sum(c for f, c in inclusive.items() if f.startswith(name + " ")) / total
        for name in WATCH
    }
    return {
        "samples": everything,
        "busy_samples": sum(c for _, c in working),
        "idle_pct": 100 * (everything - sum(c for _, c in working)) / max(everything, 1),
        "watched_total_pct": watched,
        "top_own": [
            {
                "function": frame,
                "own_samples": count,
                "own_pct": 100 * count / total,
                "total_pct": 100 * inclusive[frame] / total,
            }
            for frame, count in own.most_common(n)
        ],
    }


def write_speedscope(stacks: list[tuple[list[str], int]], name: str, out: Path) -> None:
    frames: dict[str, int] = {}
    samples, weights = [], []
    for stack, count in stacks:
        samples.append([frames.setdefault(f, len(frames)) for f in stack])
        weights.append(count)
    doc = {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": f} for f in frames]},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": name,
        "exporter": "grctl bench (from py-spy raw)",
    }
    out.write_text(json.dumps(doc))
