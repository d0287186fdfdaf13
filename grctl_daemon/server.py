"""The socket server: accept, hello, then one handler per connection; frames ↔ runtime calls.

No decisions here. A malformed frame is the peer's fault: it gets an error frame and its
connection is closed; every other connection carries on. Each request runs as its own task so a
long wait (``result --wait``, ``history --follow``) never blocks the connection's other requests.

Two listeners feed the same handler: the Unix socket (its owner's only, no token) and, with
``--listen``, TCP. A TCP peer must present the daemon's token in its hello, checked before
anything else it sent is looked at; with a certificate the TCP listener speaks TLS. The TLS
handshake runs per connection in its own task (``connect_accepted_socket``), so a peer that
fails it costs one log line and nobody else waits.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grctl import protocol as p
from grctl.errors import (
    GrctlError,
    InvalidInputError,
    NotOwnerError,
    ProtocolError,
    StorageUnavailableError,
    TooManyWaitsError,
    UnauthorizedError,
)
from grctl_daemon.definitions import definition_problem
from grctl_daemon.dispatch import WorkerSlot
from grctl_daemon.forward import Forwarder
from grctl_daemon.listen import HELLO_TIMEOUT_S, bind, handshake_problem, remote
from grctl_daemon.peer import Peer
from grctl_daemon.runtime import Runtime, refusal
from grctl_daemon.storage.base import CommitFailed
from grctl_daemon.timers import now_ms

log = logging.getLogger("grctl.daemon.server")


# A peer that sends faster than it reads its replies is paced, so it costs bounded memory: we
# read nothing more from it while its unread replies are over READ_PAUSE_ABOVE_BYTES or while
# MAX_IN_FLIGHT of its requests are still being answered. Only that peer waits.
READ_PAUSE_ABOVE_BYTES = 1024 * 1024
MAX_IN_FLIGHT = 1024
# Long waits (``result`` with wait, ``history`` followed) are not requests in flight: they do
# not pace the connection. A connection may hold this many; one more is refused.
MAX_WAITS = 4096
YIELD_EVERY_FRAMES = 32
# What a connection buffers ahead of the frame being read (readexactly() takes frames of any
# size up to MAX_FRAME_BYTES; this only bounds read-ahead from a peer we are not reading).
READ_BUFFER_BYTES = 256 * 1024
# A hello is small: a TCP peer not yet let in may not make us buffer more than this.
HELLO_LIMIT_BYTES = 64 * 1024
ACCEPT_RETRY_S = 0.1  # after a failed accept (out of file descriptors): try again this soon


class Server:
    """Serves the runtime on a Unix socket, and over TCP when the config has ``listen``."""

    def __init__(
        self,
        runtime: Runtime,
        socket_path: Path,
        on_shutdown: Callable[[], None],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.runtime = runtime
        self.socket_path = socket_path
        self._tls = tls
        self._token = (runtime.config.token or "").encode()
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._opening: set[asyncio.Task[None]] = set()  # TCP peers in their TLS handshake
        self._server: asyncio.AbstractServer | None = None
        self._peers: set[Peer] = set()
        self._on_shutdown = on_shutdown
        self.forwarder = Forwarder(runtime.config, runtime.storage)
        self._routes: dict[type[p.Message], Callable[[Any], Awaitable[Any]]] = {
            p.StartWorkflow: runtime.start_workflow,
            p.SendEvent: runtime.send,
            p.SendWithStart: runtime.send_with_start,
            p.QueryWorkflow: runtime.query,
            p.CancelWorkflow: runtime.cancel,
            p.TerminateWorkflow: runtime.terminate,
            p.ResetWorkflow: runtime.reset,
            p.DescribeWorkflow: runtime.describe,
            p.GetResult: runtime.result,
            p.ListWorkflows: runtime.list_workflows,
            p.PruneRuns: runtime.prune,
            p.GetInbox: runtime.inbox,
            p.InspectRun: runtime.inspect,
            p.StartChild: runtime.start_child,
            p.SendToParent: runtime.send_to_parent,
            p.CreateSchedule: runtime.create_schedule,
            p.ListSchedules: runtime.list_schedules,
            p.DescribeSchedule: runtime.describe_schedule,
            p.PauseSchedule: runtime.pause_schedule,
            p.ResumeSchedule: runtime.resume_schedule,
            p.TriggerSchedule: runtime.trigger_schedule,
            p.DeleteSchedule: runtime.delete_schedule,
        }
        self._hot: dict[type[p.Message], Callable[[Any], tuple[asyncio.Future[None], Any]]] = {
            p.CompleteStep: runtime.complete_step,
            p.RecordOutcome: runtime.record,
            p.Settle: runtime.settle,
        }

    async def start(self) -> None:
        if self.socket_path.exists():
            self.socket_path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._handle, str(self.socket_path), limit=READ_BUFFER_BYTES
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)
        listen = self.runtime.config.listen
        if listen is not None:
            self._listener = bind(listen)
            self._accepting = asyncio.create_task(self._accept(self._listener))

    async def stop(self) -> None:
        """Stop accepting, close every connection (workers reconnect to the next daemon)."""
        await self.forwarder.close()
        if self._accepting is not None:
            self._accepting.cancel()
        if self._listener is not None:
            self._listener.close()
        for task in list(self._opening):
            task.cancel()
        if self._server is not None:
            self._server.close()
        for peer in list(self._peers):
            for t in (*peer.tasks, *peer.waits):
                t.cancel()
            peer.writer.close()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except TimeoutError:
                pass

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(listener)
            except OSError as exc:  # out of file descriptors: those connected carry on
                log.warning("cannot accept a TCP connection: %s", exc.strerror or exc)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            task = asyncio.create_task(self._handle_tcp(conn, remote(address)))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _handle_tcp(self, conn: socket.socket, remote: str) -> None:
        """Open the streams of one TCP peer (the TLS handshake first, if any), then serve it."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_BUFFER_BYTES)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self._tls,
                ssl_handshake_timeout=HELLO_TIMEOUT_S if self._tls else None,
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            conn.close()
            what = "TLS handshake with" if self._tls else "opening the connection from"
            log.warning("%s %s failed: %s", what, remote, handshake_problem(exc))
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self._opening.discard(asyncio.current_task())  # type: ignore[arg-type]
        await self._handle(reader, writer, remote)

    async def _handle(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        remote: str | None = None,
    ) -> None:
        peer = Peer(writer, remote)
        self._peers.add(peer)
        try:
            if await self._hello(peer, reader):
                await self._serve(peer, reader)
        except ProtocolError as exc:
            log.warning(
                "closing %s connection %s%s: %s",
                peer.role,
                peer.name or peer.connection_id,
                f" from {remote}" if remote else "",
                exc,
            )
            # Flushed now (the close below comes first otherwise), not drained: a peer that does
            # not read must not keep its connection open by it.
            peer.write(p.ErrorReply(None, exc.code, f"{exc}; closing the connection"))
            peer.flush()
        except (ConnectionError, OSError):
            pass
        finally:
            self._peers.discard(peer)
            for t in (*peer.tasks, *peer.waits):
                t.cancel()
            if peer.role == "worker":
                self.runtime.worker_left(peer.connection_id)
                log.info("worker %s disconnected", peer.name)
            writer.close()

    async def _hello(self, peer: Peer, reader: asyncio.StreamReader) -> bool:
        limit = p.MAX_FRAME_BYTES if peer.remote is None else HELLO_LIMIT_BYTES
        try:
            msg = await asyncio.wait_for(p.read_message(reader, limit=limit), HELLO_TIMEOUT_S)
        except TimeoutError:
            raise ProtocolError("no hello within 10s") from None
        if msg is None:
            return False
        if not isinstance(msg, p.Hello):
            raise ProtocolError(f"the first frame must be a hello, not {msg.kind!r}")
        if peer.remote is not None and not self._authorized(peer, msg):
            return False
        if msg.protocol_version != p.PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {msg.protocol_version} is not supported (daemon speaks "
                f"{p.PROTOCOL_VERSION}); use the same grctl version for daemon, workers and CLI"
            )
        if msg.role not in ("client", "worker", "daemon"):
            raise ProtocolError(f"unknown role {msg.role!r}")
        peer.role, peer.name = msg.role, msg.name or f"pid-{msg.pid}"
        heartbeat_ms = int(self.runtime.config.heartbeat_timeout_s * 1000)
        welcome = p.Welcome(p.PROTOCOL_VERSION, "0.1.0", peer.connection_id, heartbeat_ms)
        if self.runtime.storage.members():  # a cluster: a worker must serve every member
            welcome.member = self.runtime.storage.holder
            welcome.members = self.runtime.other_members()
        await peer.send(welcome)
        return True

    def _authorized(self, peer: Peer, hello: p.Hello) -> bool:
        """Whether a TCP peer's hello holds our token; if not, tell it once, log it, refuse."""
        given = (hello.token or "").encode()
        if given and hmac.compare_digest(given, self._token):
            return True
        log.warning(
            "refused a %s connection from %s: %s",
            hello.role,
            peer.remote,
            "wrong token" if given else "no token",
        )
        reason = (
            "the daemon refused the token; check GRCTL_TOKEN or --token-file"
            if given
            else "the daemon wants a token on TCP connections; give it with GRCTL_TOKEN or "
            "--token-file"
        )
        peer.write(p.ErrorReply(None, UnauthorizedError.code, reason))
        peer.flush()
        return False

    async def _serve(self, peer: Peer, reader: asyncio.StreamReader) -> None:
        watchdog = None
        if peer.role == "worker":
            watchdog = asyncio.create_task(self._watch(peer, asyncio.current_task()))
        frames = p.FrameReader(reader, READ_BUFFER_BYTES)
        try:
            while True:
                if (
                    len(peer.tasks) >= MAX_IN_FLIGHT
                    or peer.writer.transport.get_write_buffer_size() > READ_PAUSE_ABOVE_BYTES
                ):
                    await self._pace(peer)
                bodies = await frames.read()
                if bodies is None:
                    return
                peer.last_seen = time.monotonic()
                for n, body in enumerate(bodies, 1):
                    self._route(peer, p.decode(body))
                    if len(peer.tasks) >= MAX_IN_FLIGHT:  # one chunk holds thousands of frames
                        await self._pace(peer)
                    elif n % YIELD_EVERY_FRAMES == 0:
                        # Let the group commit take what is decided so far and hand the next
                        # steps out, so the worker runs them while we decide the rest.
                        await asyncio.sleep(0)
        except asyncio.CancelledError:
            if watchdog is not None and watchdog.done() and not watchdog.cancelled():
                return  # the watchdog found the worker silent: it is lost
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()

    async def _watch(self, peer: Peer, serving: asyncio.Task[Any] | None) -> None:
        """A worker silent for the heartbeat timeout is lost (one timer per worker, not per frame)."""
        timeout = self.runtime.config.heartbeat_timeout_s
        while True:
            silent = time.monotonic() - peer.last_seen
            if silent >= timeout:
                log.warning("worker %s missed its heartbeats; treating it as lost", peer.name)
                if serving is not None:
                    serving.cancel()
                return
            await asyncio.sleep(min(timeout - silent, timeout / 4) + 0.001)

    async def _pace(self, peer: Peer) -> None:
        """Wait until the peer read its replies and has fewer than MAX_IN_FLIGHT requests open."""
        if peer.writer.transport.get_write_buffer_size() > READ_PAUSE_ABOVE_BYTES:
            await peer.writer.drain()
        while len(peer.tasks) >= MAX_IN_FLIGHT:
            await asyncio.wait(list(peer.tasks), return_when=asyncio.FIRST_COMPLETED)

    def _route(self, peer: Peer, msg: p.Message) -> None:
        if isinstance(msg, p.Heartbeat):
            return
        if isinstance(msg, p.QueryAnswer):
            self.runtime.query_answered(msg)
            return
        if isinstance(msg, p.Abandon):
            abandoned = peer.by_req.get(msg.abandoned)
            if abandoned is not None:
                abandoned.cancel()
            return
        req_id = getattr(msg, "req_id", None)
        if req_id is None:
            if isinstance(msg, p.Progress):  # one way: relayed to followers, never answered
                self.runtime.progress(msg)
                return
            raise ProtocolError(f"unexpected {msg.kind!r} from a {peer.role}")
        hot = self._hot.get(type(msg))
        if hot is not None:
            self._answer_hot(peer, hot, msg, req_id)
            return
        waits = (isinstance(msg, p.GetResult) and msg.wait) or (
            isinstance(msg, p.GetHistory) and msg.follow
        )
        if waits and len(peer.waits) >= MAX_WAITS:
            refused = TooManyWaitsError(
                f"this connection already holds {MAX_WAITS} waits (results, followed "
                "histories); let some end or abandon them, or open another connection"
            )
            peer.write(refusal(refused, req_id))
            return
        # Start the handler now so that its synchronous half runs in arrival order.
        task = asyncio.ensure_future(self._answer(peer, msg, req_id))
        held = peer.waits if waits else peer.tasks
        held.add(task)
        peer.by_req[req_id] = task

        def done(t: asyncio.Task[Any]) -> None:
            held.discard(t)
            if peer.by_req.get(req_id) is t:
                del peer.by_req[req_id]

        task.add_done_callback(done)

    def _answer_hot(
        self, peer: Peer, hot: Callable[[Any], Any], msg: p.Message, req_id: int
    ) -> None:
        """A step result or record: decided now, answered from a callback once durable."""
        try:
            durable, data = hot(msg)
        except GrctlError as exc:
            peer.write(refusal(exc, req_id))
            return
        except Exception as exc:  # a bug of ours: say so, keep serving
            peer.write(_internal_error(msg, exc, req_id))
            return

        def answer(f: asyncio.Future[None]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is None:  # a reply decided after a read comes as the future's result
                peer.write(p.Reply(req_id, data if data is not None else f.result()))
            elif isinstance(exc, GrctlError):
                peer.write(refusal(exc, req_id))
            elif isinstance(exc, CommitFailed):  # logged once by the storage; the daemon stops
                peer.write(
                    refusal(StorageUnavailableError(f"the daemon's database failed: {exc}"), req_id)
                )
            else:
                peer.write(_internal_error(msg, exc, req_id))

        durable.add_done_callback(answer)

    async def _answer(self, peer: Peer, msg: p.Message, req_id: int) -> None:
        try:
            try:
                if isinstance(msg, p.GetHistory):
                    await self.runtime.history(msg, peer.send)
                    return
                data = await self._call(peer, msg)
            except NotOwnerError as exc:
                if peer.role == "daemon":  # forwarded already: its sender finds the owner
                    raise
                data = await self.forwarder.forward(msg, exc, peer.send)
                if isinstance(msg, p.GetHistory):
                    return
            reply: p.Message = p.Reply(req_id, data)
        except GrctlError as exc:
            reply = refusal(exc, req_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours: say so, keep serving
            reply = _internal_error(msg, exc, req_id)
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
            return {**await self.runtime.status(), "storage": self.runtime.storage.health()}
        if isinstance(msg, p.Shutdown):
            self._on_shutdown()
            return {"stopping": True}
        raise ProtocolError(f"{msg.kind!r} is not a request")

    async def _register(self, peer: Peer, msg: p.RegisterWorker) -> Any:
        if peer.role != "worker":
            raise InvalidInputError("only a worker connection may register workflows")
        for definition in msg.workflows:
            problem = definition_problem(definition)
            if problem:
                raise InvalidInputError(f"malformed workflow definitions: {problem}")
        types = frozenset(d["workflow_type"] for d in msg.workflows)
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


def _internal_error(msg: p.Message, exc: BaseException, req_id: int) -> p.ErrorReply:
    log.error("internal error handling %s", msg.kind, exc_info=exc)
    return p.ErrorReply(
        req_id,
        "internal_error",
        f"internal error in the daemon ({type(exc).__name__}: {exc}); see daemon.log",
    )
