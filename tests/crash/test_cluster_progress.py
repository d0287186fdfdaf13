"""Progress streaming in a cluster: a follower connected to any member gets the run's progress.

The worker reports a step's progress to the member that dispatched it, the owner of the run's
partition; a follower connected to the other member is forwarded there, and its progress is
relayed back (through a bounded buffer of the forwarding member). Flows: tests/flows/ps_progress.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from grctl.client import Client
from grctl.models import ProgressEvent
from tests.conftest import Daemon, wait_until
from tests.crash.test_cluster import _member, _start_cluster
from tests.daemon.test_guarantees import release, wait_reached
from tests.daemon.test_progress import until

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

EXPECTED = [
    ("emit_start", "stage", "fetch"),
    ("emit_start", "items", 1),
    ("emit_start", "items", 2),
    ("emit_start", "items", 3),
    ("emit_start", "stage", "done"),
    ("emit_last", "stage", "last step"),
]


def _follow_via(
    via: Daemon, owner: Daemon, home: Daemon, wid: str, gate: str
) -> list[ProgressEvent]:
    """Stream ``wid`` through ``via``; release its step (a file in the worker's ``home``) once
    the owner counts the forwarded follower."""

    async def go(client: Client) -> list[ProgressEvent]:
        got: list[ProgressEvent] = []

        async def read() -> None:
            async for ev in client.get_workflow_handle(wid).stream():
                got.append(ev)

        reader = asyncio.ensure_future(read())

        at_owner = await Client.connect(owner.socket)
        try:

            async def followed() -> bool:
                status = await at_owner.daemon_status()
                return status["memory"]["progress"]["followers"] >= 1

            await until(followed, f"{wid} followed at its owner")
        finally:
            await at_owner.close()
        release(home, gate)
        await asyncio.wait_for(reader, 30)
        return got

    return via.call(go, timeout=60)


def test_a_follower_on_either_member_gets_the_progress(daemon, other, workers, ledger):
    _start_cluster(daemon, other)
    workers("flows.ps_progress")
    wait_until(lambda: other.status()["workers"], 10, message="the worker reaching member two")
    ids = [f"ps-c-{n}" for n in range(8)]

    async def start(c: Client) -> None:
        for n, wid in enumerate(ids):
            await c.start_workflow("PsEmit", wid, {"barrier": f"ps-c-gate-{n}"})

    daemon.call(start)
    for n in range(len(ids)):
        wait_reached(ledger, f"ps-c-gate-{n}")
    owner_of: dict[str, Any] = dict(
        daemon.rows(
            "SELECT r.workflow_id, p.holder FROM runs r JOIN partitions p ON p.id = r.partition"
        )
    )
    members = {_member(daemon): daemon, _member(other): other}
    chosen = {}
    for n, wid in enumerate(ids):
        chosen.setdefault(owner_of[wid], (n, wid))
    assert len(chosen) == 2, "eight runs land on both members"
    for holder, (n, wid) in chosen.items():
        owner = members[holder]
        via = other if owner is daemon else daemon  # a follower of the member that does not own it
        got = _follow_via(via, owner, daemon, wid, f"ps-c-gate-{n}")
        assert [(ev.step_name, ev.name, ev.data) for ev in got] == EXPECTED, (wid, holder)
    for n in range(len(ids)):
        release(daemon, f"ps-c-gate-{n}")
    for wid in ids:
        assert daemon.call(lambda c, w=wid: c.get_workflow_handle(w).result(timeout=30)) == "ok"
