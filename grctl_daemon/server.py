"""The socket server: accept, hello, then one handler per connection; frames ↔ runtime calls.

No decisions here. A malformed frame is the peer's fault: it gets an error frame and its
connection is closed; every other connection carries on. Each request runs as its own task so a
long wait (``result --wait``, ``history --follow``) never blocks the connection's other requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ulid import ULID

from grctl import _faults as faults
from grctl import protocol as p
from grctl.errors import GrctlError, InvalidInputError, ProtocolError
from grctl_daemon.dispatch import WorkerSlot
from grctl_daemon.runtime import Runtime, refusal
from grctl_daemon.timers import now_ms

log = logging.getLogger("grctl.daemon.server")

HELLO_TIMEOUT_S = 10.0
DRAIN_ABOVE_BYTES = 256 * 1024


class Peer:
    """One connection: its writer, its role and its in-flight request tasks."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.connection_id = str(ULID())
        self.role = "client"
        self.name = ""
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[Any]] = set()

    def write(self, msg: p.Message) -> None:
        """Queue one frame now; a frame is written whole, so no lock is needed to interleave."""
        if self.writer.is_closing():
            return
        try:
            frame = p.encode(msg)
        except ProtocolError as exc:  # ours to send, too big to send: say so, keep serving
            log.error("cannot send %s to %s: %s", msg.kind, self.name or self.connection_id, exc)
            return
        if faults.ARMED and isinstance(msg, p.DispatchStep):
            faults.cut(self.writer.write, frame, "daemon_mid_frame")
        self.writer.write(frame)

    async def send(self, msg: p.Message) -> None:
        """Write, then wait only when the peer is slow to read (back-pressure)."""
        self.write(msg)
        transport = self.writer.transport
        if transport.get_write_buffer_size() > DRAIN_ABOVE_BYTES:
            async with self.lock:
                try:
                    await self.writer.drain()
                except (ConnectionError, OSError):
                    pass


class Server:
    """Serves the runtime on a Unix socket."""

    def __init__(
        self, runtime: Runtime, socket_path: Path, on_shutdown: Callable[[], None]
    ) -> None:
        self.runtime = runtime
        self.socket_path = socket_path
        self._server: asyncio.AbstractServer | None = None
        self._peers: set[Peer] = set()
        self._on_shutdown = on_shutdown
        self._routes: dict[type[p.Message], Callable[[Any], Awaitable[Any]]] = {
            p.StartWorkflow: runtime.start_workflow,
            p.SendEvent: runtime.send,
            p.QueryWorkflow: runtime.query,
            p.CancelWorkflow: runtime.cancel,
            p.TerminateWorkflow: runtime.terminate,
            p.DescribeWorkflow: runtime.describe,
            p.GetResult: runtime.result,
            p.ListWorkflows: runtime.list_runs,
            p.GetInbox: runtime.inbox,
            p.RecordOutcome: runtime.record,
            p.CompleteStep: runtime.complete_step,
            p.StartChild: runtime.start_child,
            p.SendToParent: runtime.send_to_parent,
        }

    async def start(self) -> None:
        if self.socket_path.exists():
            self.socket_path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._handle, str(self.socket_path), limit=p.MAX_FRAME_BYTES + 16
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)

    async def stop(self) -> None:
        """Stop accepting, close every connection (workers reconnect to the next daemon)."""
        if self._server is not None:
            self._server.close()
        for peer in list(self._peers):
            for t in peer.tasks:
                t.cancel()
            peer.writer.close()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except TimeoutError:
                pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(writer)
        self._peers.add(peer)
        try:
            if await self._hello(peer, reader):
                await self._serve(peer, reader)
        except ProtocolError as exc:
            log.warning(
                "closing %s connection %s: %s", peer.role, peer.name or peer.connection_id, exc
            )
            await peer.send(p.ErrorReply(None, exc.code, f"{exc}; closing the connection"))
        except (ConnectionError, OSError):
            pass
        finally:
            self._peers.discard(peer)
            for t in peer.tasks:
                t.cancel()
            if peer.role == "worker":
                self.runtime.worker_left(peer.connection_id)
                log.info("worker %s disconnected", peer.name)
            writer.close()

    async def _hello(self, peer: Peer, reader: asyncio.StreamReader) -> bool:
        try:
            msg = await asyncio.wait_for(p.read_message(reader), HELLO_TIMEOUT_S)
        except TimeoutError:
            raise ProtocolError("no hello within 10s") from None
        if msg is None:
            return False
        if not isinstance(msg, p.Hello):
            raise ProtocolError(f"the first frame must be a hello, not {msg.kind!r}")
        if msg.protocol_version != p.PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {msg.protocol_version} is not supported (daemon speaks "
                f"{p.PROTOCOL_VERSION}); use the same grctl version for daemon, workers and CLI"
            )
        if msg.role not in ("client", "worker"):
            raise ProtocolError(f"unknown role {msg.role!r}")
        peer.role, peer.name = msg.role, msg.name or f"pid-{msg.pid}"
        heartbeat_ms = int(self.runtime.config.heartbeat_timeout_s * 1000)
        await peer.send(p.Welcome(p.PROTOCOL_VERSION, "0.1.0", peer.connection_id, heartbeat_ms))
        return True

    async def _serve(self, peer: Peer, reader: asyncio.StreamReader) -> None:
        idle = self.runtime.config.heartbeat_timeout_s if peer.role == "worker" else None
        while True:
            try:
                if idle is not None:
                    msg = await asyncio.wait_for(p.read_message(reader), idle)
                else:
                    msg = await p.read_message(reader)
            except TimeoutError:
                log.warning("worker %s missed its heartbeats; treating it as lost", peer.name)
                return
            if msg is None:
                return
            self._route(peer, msg)

    def _route(self, peer: Peer, msg: p.Message) -> None:
        if isinstance(msg, p.Heartbeat):
            return
        if isinstance(msg, p.QueryAnswer):
            self.runtime.query_answered(msg)
            return
        req_id = getattr(msg, "req_id", None)
        if req_id is None:
            raise ProtocolError(f"unexpected {msg.kind!r} from a {peer.role}")
        # Start the handler now so that its synchronous half runs in arrival order.
        task = asyncio.ensure_future(self._answer(peer, msg, req_id))
        peer.tasks.add(task)
        task.add_done_callback(peer.tasks.discard)

    async def _answer(self, peer: Peer, msg: p.Message, req_id: int) -> None:
        try:
            if isinstance(msg, p.GetHistory):
                await self.runtime.history(msg, peer.send)
                return
            data = await self._call(peer, msg)
            reply: p.Message = p.Reply(req_id, data)
        except GrctlError as exc:
            reply = refusal(exc, req_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours: say so, keep serving
            log.exception("internal error handling %s", msg.kind)
            reply = p.ErrorReply(
                req_id,
                "internal_error",
                f"internal error in the daemon ({type(exc).__name__}: {exc}); see daemon.log",
            )
        try:
            await peer.send(reply)
        except ProtocolError as exc:
            await peer.send(refusal(InvalidInputError(str(exc)), req_id))

    async def _call(self, peer: Peer, msg: p.Message) -> Any:
        route = self._routes.get(type(msg))
        if route is not None:
            return await route(msg)
        if isinstance(msg, p.RegisterWorker):
            return await self._register(peer, msg)
        if isinstance(msg, p.DaemonStatus):
            return await self.runtime.status()
        if isinstance(msg, p.Shutdown):
            self._on_shutdown()
            return {"stopping": True}
        raise ProtocolError(f"{msg.kind!r} is not a request")

    async def _register(self, peer: Peer, msg: p.RegisterWorker) -> Any:
        if peer.role != "worker":
            raise InvalidInputError("only a worker connection may register workflows")
        try:
            types = frozenset(d["workflow_type"] for d in msg.workflows)
        except (KeyError, TypeError):
            raise InvalidInputError("malformed workflow definitions") from None
        capacity = max(1, int(msg.concurrency))
        slot = WorkerSlot(peer.connection_id, peer.name, types, capacity, peer.write, now_ms())
        try:
            decision = self.runtime.worker_joined(slot, msg.workflows)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"malformed workflow definitions: {exc}") from None
        log.info(
            "worker %s serves %s (concurrency %d)", peer.name, ", ".join(sorted(types)), capacity
        )
        return await self.runtime.commit(decision)
