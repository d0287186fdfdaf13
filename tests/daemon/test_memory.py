"""The run cache is bounded and a backlog is drained without reading it again and again."""

from __future__ import annotations

import asyncio

import pytest

from grctl.client import Client
from tests.conftest import wait_until

pytestmark = pytest.mark.backends

RUNS = 400
CACHE = 50


def test_a_backlog_bigger_than_the_cache_is_read_about_once_per_run(daemon, workers):
    """400 runs queued with no worker, a 50-run cache, then a worker that runs 2 at a time.

    Each step that ends frees a slot for one queued run: the drain reads that one back, not the
    whole queue (which used to read every queued run on every step: ~80,000 loads here).
    """
    workers("flows.pg_paging").stop()  # registers the type, then leaves
    wait_until(lambda: not daemon.status()["workers"], 10, message="worker gone")
    assert daemon.stop() == 0
    daemon.start(env={"GRCTL_RUN_CACHE": str(CACHE)})

    async def start_all(c: Client) -> None:
        await asyncio.gather(*(c.start_workflow("PgQuick", f"q-{n}") for n in range(RUNS)))

    daemon.call(start_all)
    before = daemon.status()["memory"]
    workers("flows.pg_paging", concurrency=2)
    wait_until(
        lambda: daemon.status()["runs"].get("completed", 0) == RUNS,
        60,
        message="every queued run completed",
    )
    memory = daemon.status()["memory"]
    assert memory["cached_runs"] <= CACHE + 2, memory
    assert memory["loads"] - before["loads"] <= 3 * RUNS, (before, memory)
