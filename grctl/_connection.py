"""One socket connection to the daemon, for the client and the worker: frames in, frames out."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from grctl import _faults as faults
from grctl import codec
from grctl import protocol as p
from grctl.errors import DaemonUnavailableError, GrctlError, ProtocolError, error_from_wire

PushHandler = Callable[[p.Message], Awaitable[None] | None]

_END = object()
DRAIN_ABOVE_BYTES = 256 * 1024
# The frames a worker sends about a step: where worker_mid_frame cuts.
_STEP_FRAMES = (p.RecordOutcome, p.CompleteStep, p.StartChild, p.SendToParent)


class Connection:
    """A hello'd connection: ``request()`` awaits the reply, pushes go to ``on_push``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, asyncio.Queue[Any]] = {}
        self._on_push: PushHandler | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._out = codec.FrameWriter(writer)
        self.connection_id = ""
        self.heartbeat_timeout_s = 10.0
        self.socket_path: Path | None = None

    @classmethod
    async def open(
        cls,
        socket_path: Path,
        role: str = "client",
        name: str = "",
        on_push: PushHandler | None = None,
    ) -> Connection:
        try:
            reader, writer = await asyncio.open_unix_connection(
                str(socket_path), limit=p.MAX_FRAME_BYTES + 16
            )
        except (FileNotFoundError, ConnectionRefusedError, OSError) as exc:
            raise DaemonUnavailableError(
                f"the grctl daemon is not running (no answer on {socket_path}: "
                f"{exc.strerror or exc}); start it with: grctl daemon start"
            ) from None
        conn = cls(reader, writer)
        conn.socket_path = socket_path
        conn._on_push = on_push
        try:
            writer.write(p.encode(p.Hello(p.PROTOCOL_VERSION, role, name, os.getpid())))
            first = await p.read_message(reader, open_values=True)
        except (ConnectionError, OSError):
            first = None
        if first is None:
            # The daemon went away between accept and welcome (it was stopping or crashed).
            writer.close()
            raise DaemonUnavailableError(
                f"the grctl daemon on {socket_path} closed the connection before answering; "
                "check it with: grctl daemon status"
            )
        if isinstance(first, p.ErrorReply):
            writer.close()
            raise error_from_wire(first.code, first.message)
        if not isinstance(first, p.Welcome):
            writer.close()
            raise ProtocolError("the daemon did not answer the hello")
        conn.connection_id = first.connection_id
        conn.heartbeat_timeout_s = first.heartbeat_timeout_ms / 1000
        conn._read_task = asyncio.create_task(conn._read_loop(), name="grctl-connection-reader")
        return conn

    async def _read_loop(self) -> None:
        frames = p.FrameReader(self._reader)
        try:
            while True:
                bodies = await frames.read()
                if bodies is None:
                    break
                for body in bodies:
                    await self._route(p.decode(body, open_values=True))
        except (ProtocolError, ConnectionError, OSError):
            pass
        finally:
            self._fail_all()

    async def _route(self, msg: p.Message) -> None:
        req_id = getattr(msg, "req_id", None)
        if isinstance(msg, p.HistoryItems) and req_id in self._streams:
            queue = self._streams[req_id]
            queue.put_nowait(msg.events)
            if msg.done:
                queue.put_nowait(_END)
            return
        if isinstance(msg, p.Reply | p.ErrorReply) and req_id in self._streams:
            self._streams[req_id].put_nowait(msg)
            return
        if isinstance(msg, p.Reply | p.ErrorReply) and req_id in self._pending:
            fut = self._pending.pop(req_id)
            if not fut.done():
                fut.set_result(msg)
            return
        if self._on_push is not None:
            result = self._on_push(msg)
            if asyncio.iscoroutine(result):
                await result

    def _fail_all(self) -> None:
        self._closed.set()
        err = DaemonUnavailableError(
            "lost the connection to the grctl daemon; check it with: grctl daemon status"
        )
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        for queue in self._streams.values():
            queue.put_nowait(err)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def next_id(self) -> int:
        return next(self._ids)

    async def send(self, msg: p.Message) -> None:
        if self.closed:
            raise DaemonUnavailableError(
                "lost the connection to the grctl daemon; check it with: grctl daemon status"
            )
        frame = p.encode(msg)
        try:
            if faults.ARMED and isinstance(msg, _STEP_FRAMES):
                self._out.flush()
                faults.cut(self._writer.write, frame, "worker_mid_frame")
            # Frames queued in one turn of the loop go out in one write (a worker finishing
            # many steps at once); wait only when the daemon is slow to read.
            self._out.write(frame)
            if self._out.buffered() > DRAIN_ABOVE_BYTES:
                self._out.flush()
                async with self._write_lock:
                    await self._writer.drain()
        except (ConnectionError, OSError):
            raise DaemonUnavailableError(
                "lost the connection to the grctl daemon; check it with: grctl daemon status"
            ) from None

    async def request(self, build: Callable[[int], p.Message]) -> Any:
        """Send the message ``build(req_id)`` makes and return the reply's data (or raise)."""
        req_id = self.next_id()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            await self.send(build(req_id))
            reply = await fut
        except asyncio.CancelledError:  # a wait_for timed out, a task was cancelled
            self.abandon(req_id)
            raise
        finally:
            self._pending.pop(req_id, None)
        return _unwrap(reply)

    def abandon(self, req_id: int) -> None:
        """Tell the daemon we no longer want the answer to ``req_id`` (it releases the wait)."""
        if not self.closed and not self._writer.is_closing():
            self._out.write(p.encode(p.Abandon(req_id)))

    async def stream(
        self, build: Callable[[int], p.Message]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Send a streaming request and yield its chunks until the daemon closes the stream."""
        req_id = self.next_id()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[req_id] = queue
        ended = False
        try:
            await self.send(build(req_id))
            while True:
                item = await queue.get()
                if item is _END:
                    ended = True
                    return
                if isinstance(item, GrctlError):
                    ended = True
                    raise item
                if isinstance(item, p.Reply | p.ErrorReply):
                    ended = True
                    _unwrap(item)
                    return
                yield item
        finally:
            self._streams.pop(req_id, None)
            if not ended:  # left early: the daemon stops streaming
                self.abandon(req_id)

    async def close(self) -> None:
        self._out.flush()
        if self._read_task is not None:
            self._read_task.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        if self._read_task is not None:
            try:
                await self._read_task
            except asyncio.CancelledError:
                pass


def _unwrap(reply: p.Message) -> Any:
    if isinstance(reply, p.ErrorReply):
        raise error_from_wire(
            reply.code, reply.message, reply.workflow_id, reply.run_id, reply.details
        )
    return reply.data  # type: ignore[attr-defined]
