"""Idempotent events and send-with-start in a cluster: each is answered by the run's owner.

A request that reaches a member not owning ``partition_of(workflow_id)`` is forwarded to the
owner (NotOwnerError → Forwarder), so the owner's memory and the database decide the dedupe.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from grctl.client import Client
from tests.conftest import Daemon, wait_until
from tests.crash.test_cluster import _start_cluster

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

IDS = [f"cl-cart-{n}" for n in range(8)]


def test_send_with_start_and_keyed_sends_are_forwarded_to_the_owner(daemon, other, workers):
    _start_cluster(daemon, other)
    workers("flows.ev_events")
    wait_until(lambda: other.status()["workers"], 10, message="the worker reaching member two")

    async def sws(c: Client) -> list[Any]:
        return await asyncio.gather(
            *(c.send_with_start("EvCart", w, "add", {"item": "a"}, None, "k") for w in IDS)
        )

    first = other.call(sws)
    assert all(h.started and h.sent["inbox_seq"] == 1 for h in first)

    def keyed(via: Daemon) -> list[dict[str, Any]]:
        async def go(c: Client) -> list[dict[str, Any]]:
            return await asyncio.gather(
                *(c.get_workflow_handle(w).send("add", {"item": "a"}, "k") for w in IDS)
            )

        return via.call(go)

    for via in (daemon, other):
        assert all(r["duplicate"] and r["inbox_seq"] == 1 for r in keyed(via))
    again = daemon.call(sws)
    assert [h.run_id for h in again] == [h.run_id for h in first]
    assert all(not h.started and h.sent["duplicate"] for h in again)

    rows = daemon.rows(
        "SELECT r.workflow_id, count(*), p.holder FROM inbox i JOIN runs r ON r.run_id = i.run_id "
        "JOIN partitions p ON p.id = r.partition WHERE r.workflow_id LIKE 'cl-cart-%' "
        "GROUP BY r.workflow_id, p.holder"
    )
    assert sorted((w, n) for w, n, _ in rows) == [(w, 1) for w in sorted(IDS)]
    owners = {holder for _, _, holder in rows}
    assert len(owners) == 2, "the ids are spread over both members: some were forwarded"
