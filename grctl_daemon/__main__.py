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
    parser.add_argument("--lease-timeout", type=float)
    parser.add_argument("--listen", metavar="HOST:PORT", help="also serve TCP here")
    parser.add_argument("--token-file", metavar="PATH", help="the token TCP clients present")
    parser.add_argument("--tls-cert", metavar="PATH", help="TLS certificate chain (PEM)")
    parser.add_argument("--tls-key", metavar="PATH", help="TLS private key (PEM)")
    parser.add_argument(
        "--retention", metavar="DURATION", help="delete runs ended longer ago (30d; 0: keep)"
    )
    parser.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus /metrics here")
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
            args.listen,
            args.token_file,
            args.tls_cert,
            args.tls_key,
            args.lease_timeout,
            args.retention,
            args.metrics,
        )
    except ValueError as exc:
        # One line the CLI can show as is (it prints the last line the daemon wrote).
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return main(config, foreground=not args.quiet)


if __name__ == "__main__":
    sys.exit(run())
