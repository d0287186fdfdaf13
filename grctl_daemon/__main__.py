"""``python -m grctl_daemon``: run the daemon in the foreground (the CLI starts it this way)."""

from __future__ import annotations

import argparse
import sys

from grctl_daemon.app import main
from grctl_daemon.config import DaemonConfig


def run() -> int:
    parser = argparse.ArgumentParser(prog="python -m grctl_daemon")
    parser.add_argument("--home")
    parser.add_argument("--socket")
    parser.add_argument("--db")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL", "full", "normal"])
    parser.add_argument("--max-worker-losses", type=int)
    parser.add_argument("--run-cache", type=int)
    parser.add_argument("--quiet", action="store_true", help="log to daemon.log only")
    args = parser.parse_args()
    try:
        config = DaemonConfig.build(
            args.home,
            args.socket,
            args.db,
            args.synchronous,
            args.max_worker_losses,
            args.run_cache,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return main(config, foreground=not args.quiet)


if __name__ == "__main__":
    sys.exit(run())
