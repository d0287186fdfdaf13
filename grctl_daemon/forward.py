"""Requests for runs another member of the cluster owns go to that member, and back.

A client or worker may be connected to any daemon of a cluster. When the runtime answers
``not_owner`` (the run's partition is held by another member), the server hands the request to
``Forwarder.forward``: it finds the partition's holder as the database last showed it, sends
the same request there on a connection of role ``daemon`` (one per member, opened on first use:
its Unix socket on this host, else its TCP address with our token and TLS), and relays the
answer (every page of a followed history). A member never forwards what another member
forwarded to it: it answers ``not_owner``, and the forwarder reads the cluster again and
retries, until ``FORWARD_WAIT_S`` past a lease (a partition of a dead member has no holder
until its lease runs out).

Retrying is safe only when the request had no effect: it was refused with ``not_owner``, or
never sent. A request sent to a member whose connection then broke may or may not have been
applied; the caller gets ``daemon_unavailable`` for it, as when its own daemon dies, unless the
request only reads (then it is simply asked again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grctl import protocol as p
from grctl._connection import Connection, Endpoint, client_tls
from grctl.errors import DaemonUnavailableError, NotOwnerError, StorageUnavailableError
from grctl.home import member_host, parse_address
from grctl_daemon.config import DaemonConfig
from grctl_daemon.runtime.progress import relay_followed
from grctl_daemon.storage import base as rec

log = logging.getLogger("grctl.daemon.forward")

RETRY_S = 0.1
FORWARD_WAIT_S = 5.0  # beyond the lease timeout, before a request for an unowned partition fails
# Requests that only read: asked again when the member's connection broke mid-answer.
READS = (
    p.DescribeWorkflow,
    p.GetResult,
    p.GetHistory,
    p.GetInbox,
    p.QueryWorkflow,
    p.InspectRun,
)


class Forwarder:
    """Connections to the other members, and the forwarding of requests over them."""

    def __init__(self, config: DaemonConfig, storage: rec.Storage) -> None:
        self.config = config
        self.storage = storage
        self._conns: dict[str, Connection] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._host = member_host()
        self._tls: ssl.SSLContext | None = None
        ca = os.environ.get("GRCTL_TLS_CA") or config.tls_cert
        if ca:
            self._tls = client_tls(Path(ca))
        self.forwarded = 0  # requests relayed, for daemon status

    async def close(self) -> None:
        for conn in list(self._conns.values()):
            await conn.close()
        self._conns.clear()

    async def forward(
        self, msg: Any, refused: NotOwnerError, send: Callable[[p.Message], Awaitable[None]]
    ) -> Any:
        """Answer ``msg`` at the member that owns ``refused.partition``; the reply's data.

        A followed history is relayed page by page through ``send`` and returns None.
        """
        partition = refused.partition
        deadline = time.monotonic() + self.config.lease_timeout_s + FORWARD_WAIT_S
        while True:
            if "after_seq" in refused.details and isinstance(msg, p.GetHistory):
                msg = dataclasses.replace(msg, after_seq=refused.details["after_seq"])
            owner = self.storage.owner_of(partition)
            if owner is not None and owner.name != self.storage.holder:
                try:
                    conn = await self._connect(owner)
                except DaemonUnavailableError as exc:
                    log.warning("cannot reach member %s: %s", owner.name, exc)
                    self._drop(owner.name)
                else:
                    try:
                        self.forwarded += 1
                        return await self._relay(conn, msg, send)
                    except NotOwnerError as exc:
                        refused = exc  # it moved on: read the cluster again
                    except DaemonUnavailableError:
                        self._drop(owner.name)
                        if not isinstance(msg, READS):
                            raise DaemonUnavailableError(
                                f"the daemon that owns {_target(msg)!r} went away "
                                "while answering; the request may or may not have been applied: "
                                "check with grctl describe before trying again",
                                workflow_id=getattr(msg, "workflow_id", None),
                            ) from None
            if time.monotonic() > deadline:
                raise StorageUnavailableError(
                    f"no daemon of the cluster holds partition {partition} right now (its "
                    "owner stopped and its lease has not run out yet); try again in a few "
                    "seconds, and check the cluster with: grctl daemon status",
                    workflow_id=getattr(msg, "workflow_id", None),
                )
            await asyncio.sleep(RETRY_S)
            await self.storage.refresh()

    async def _relay(
        self, conn: Connection, msg: Any, send: Callable[[p.Message], Awaitable[None]]
    ) -> Any:
        if isinstance(msg, p.GetHistory):
            last = None
            chunks = conn.stream(lambda r: dataclasses.replace(msg, req_id=r))
            try:
                if msg.follow and (msg.progress or msg.only_progress):
                    # Progress: read as it comes, shed for a slow follower (runtime/progress.py).
                    last = await relay_followed(chunks, msg.req_id, send)
                else:
                    async for events in chunks:
                        if events:
                            last = events[-1]["seq"]
                            await send(p.HistoryItems(msg.req_id, events))
            except NotOwnerError as exc:  # handed over mid-way: go on after what was relayed
                last = exc.details.get("relayed", last)
                if last is not None:
                    exc.details["after_seq"] = last
                raise
            await send(p.HistoryItems(msg.req_id, [], True))
            return None
        return await conn.request(lambda r: dataclasses.replace(msg, req_id=r))

    async def _connect(self, member: rec.Member) -> Connection:
        conn = self._conns.get(member.name)
        if conn is not None and not conn.closed:
            return conn
        lock = self._opening.setdefault(member.name, asyncio.Lock())
        async with lock:
            conn = self._conns.get(member.name)
            if conn is None or conn.closed:
                conn = await Connection.open(self._endpoint(member), "daemon", self.storage.holder)
                conn.open_values = False  # relayed as they came
                self._conns[member.name] = conn
            return conn

    def _endpoint(self, member: rec.Member) -> Endpoint:
        if member.socket and member.host == self._host:
            return Endpoint(socket_path=Path(member.socket))
        if member.address:
            return Endpoint(
                address=parse_address(member.address, "a member's address"),
                token=self.config.token,
                tls=self._tls,
            )
        raise DaemonUnavailableError(
            f"member {member.name} runs on another host and has no TCP listener; start every "
            "daemon of a cluster with --listen"
        )

    def _drop(self, name: str) -> None:
        conn = self._conns.pop(name, None)
        if conn is not None:
            asyncio.ensure_future(conn.close())


def _target(msg: Any) -> str:
    """What a forwarded request is about: a run's workflow_id or a schedule's name."""
    return getattr(msg, "workflow_id", None) or getattr(msg, "name", "")
