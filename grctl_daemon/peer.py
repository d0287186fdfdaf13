"""One connection to the daemon: its frame writer, its role, and its requests and waits."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ulid import ULID

from grctl import _faults as faults
from grctl import codec
from grctl import protocol as p
from grctl.errors import ProtocolError, ReplyTooLargeError
from grctl_daemon.runtime import refusal

log = logging.getLogger("grctl.daemon.server")

DRAIN_ABOVE_BYTES = 256 * 1024


class Peer:
    """One connection: its writer, its role and its in-flight request tasks."""

    def __init__(self, writer: asyncio.StreamWriter, remote: str | None = None) -> None:
        self.writer = writer
        self.remote = remote  # HOST:PORT of a TCP peer; None on the Unix socket
        self.out = codec.FrameWriter(writer)
        self.connection_id = str(ULID())
        self.role = "client"
        self.name = ""
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[Any]] = set()  # requests being answered (they pace reads)
        self.waits: set[asyncio.Task[Any]] = set()  # long waits (they do not)
        self.by_req: dict[int, asyncio.Task[Any]] = {}  # what an Abandon can cancel
        self.last_seen = time.monotonic()

    def write(self, msg: p.Message) -> None:
        """Queue one frame; the frames queued in one turn of the loop go out in one write."""
        if self.writer.is_closing():
            return
        try:
            frame = p.encode(msg)
        except ProtocolError as exc:  # ours to send, too big to send: say so, keep serving
            req_id = getattr(msg, "req_id", None)
            if req_id is None:
                log.error(
                    "cannot send %s to %s: %s", msg.kind, self.name or self.connection_id, exc
                )
                return
            refused = ReplyTooLargeError(f"the answer is too large to send ({exc}); ask for less")
            frame = p.encode(refusal(refused, req_id))
        if faults.ARMED and isinstance(msg, p.DispatchStep):
            self.out.flush()
            faults.cut(self.writer.write, frame, "daemon_mid_frame")
        self.out.write(frame)

    def flush(self) -> None:
        self.out.flush()

    async def send(self, msg: p.Message) -> None:
        """Write, then wait only when the peer is slow to read (back-pressure)."""
        self.write(msg)
        if self.out.queued > DRAIN_ABOVE_BYTES:
            self.out.flush()  # a long stream (history) must not pile up before the turn ends
        if self.out.buffered() > DRAIN_ABOVE_BYTES:
            async with self.lock:
                try:
                    await self.writer.drain()
                except (ConnectionError, OSError):
                    pass
