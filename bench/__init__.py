"""The benchmark suite: ``scripts/bench`` (see bench/run.py and docs/performance.md)."""
