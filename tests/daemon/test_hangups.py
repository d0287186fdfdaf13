"""A client that hangs up in the middle of a read leaves every later read current.

When a client's connection closes, the daemon cancels what it was doing for it, a storage read
included. On SQLite a read used to be three jobs on the reader connection's thread (execute,
fetch, close): cancelled between them, it left its statement open, and every later read on
that connection saw the snapshot of that moment (``grctl list`` missed runs already
acknowledged: CI of stop 18). Real daemon, both backends: many clients each ask for a large
list and hang up at once; after each one a run is started and must be the newest listed.
"""

from __future__ import annotations

import socket as socketlib
import struct
from typing import Any

import msgpack
import pytest

from grctl import protocol as p
from tests.conftest import Daemon

pytestmark = pytest.mark.backends

HEADER = struct.Struct(">I")
SEEDED = 300  # runs to list: enough rows that a read spans a few turns of the daemon's loop
HANGUPS = 60


def _frame(msg: dict[str, Any]) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def _ask_and_hang_up(daemon: Daemon) -> None:
    """Say hello, ask for a large page of runs, and close before the answer."""
    sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(daemon.socket))
    hello = {"kind": "hello", "protocol_version": p.PROTOCOL_VERSION, "role": "client"}
    ask = {"kind": "list", "req_id": 1, "limit": p.PAGE_ROWS}
    sock.sendall(_frame(hello) + _frame(ask))
    sock.recv(64)  # the welcome has begun: the request is read right behind it
    sock.close()


def test_reads_after_clients_hang_up_mid_read_see_every_acknowledged_run(daemon, workers):
    workers("flows.basic")

    async def seed(c: Any) -> None:
        for i in range(SEEDED):
            await c.start_workflow("BasicOrder", f"seed-{i}", {"order_id": str(i)})

    daemon.call(seed, timeout=120)
    missed = []
    for k in range(HANGUPS):
        _ask_and_hang_up(daemon)
        wid = f"probe-{k}"
        daemon.call(lambda c, wid=wid: c.start_workflow("BasicOrder", wid, {"order_id": wid}))
        newest = daemon.call(lambda c: c.list_workflows(workflow_type="BasicOrder", limit=1))
        if [r.workflow_id for r in newest] != [wid]:
            missed.append((wid, [r.workflow_id for r in newest]))
    assert missed == [], f"{len(missed)} of {HANGUPS} acknowledged runs were not listed"
    assert daemon.status()["pid"] == daemon.pid  # and the daemon served every hang-up
