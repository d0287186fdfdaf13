"""One connection to the daemon, for the client and the worker: frames in, frames out.

The daemon answers on its Unix socket and, when started with ``--listen``, on a TCP address
(with a token, and TLS when it has a certificate). ``Endpoint`` says which; once the streams
are open, both go through the same hello and the same reader.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grctl import _faults as faults
from grctl import codec
from grctl import protocol as p
from grctl.errors import DaemonUnavailableError, GrctlError, ProtocolError, error_from_wire
from grctl.home import Address, client_token, daemon_address, member_host, parse_address, tls_ca
from grctl.home import socket_path as resolve_socket

PushHandler = Callable[[p.Message], Awaitable[None] | None]

_END = object()
DRAIN_ABOVE_BYTES = 256 * 1024
# The frames a worker sends about a step: where worker_mid_frame cuts.
_STEP_FRAMES = (p.RecordOutcome, p.CompleteStep, p.StartChild, p.SendToParent)
# An address that does not answer (a dropped SYN, a stalled TLS handshake) fails after this.
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Endpoint:
    """Where the daemon answers: its Unix socket, or a TCP address with a token and maybe TLS."""

    socket_path: Path | None = None
    address: Address | None = None
    token: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = None

    def __str__(self) -> str:
        if self.address is None:
            return str(self.socket_path)
        return f"{self.address} ({'TLS' if self.tls else 'plain TCP'})"

    @classmethod
    def resolve(
        cls,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        home: str | os.PathLike[str] | None = None,
        address: str | None = None,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls_ca_file: str | os.PathLike[str] | None = None,
    ) -> Endpoint:
        """The endpoint the arguments name, else the environment's (see ``grctl.home``).

        An explicit socket or home wins over ``GRCTL_ADDRESS``; without an address it is the
        Unix socket. ValueError for a malformed address or an unreadable token or CA file.
        """
        if socket_path and address:
            raise ValueError("give the daemon's socket or its address, not both")
        where = None if socket_path else daemon_address(address, home=home)
        if where is None:
            return cls(socket_path=resolve_socket(socket_path, home))
        ca = tls_ca(tls_ca_file)
        return cls(
            address=where,
            token=client_token(token, token_file),
            tls=client_tls(ca) if ca else None,
        )

    def for_member(self, info: dict[str, Any]) -> Endpoint | None:
        """How a worker given this endpoint reaches another cluster member; None if it cannot.

        ``info`` is a member as ``Welcome.members`` lists it. A worker that came over TCP may
        run on another host, so it takes the member's TCP address when there is one; else the
        member's Unix socket if the member runs on this host (``home.member_host``); else its
        TCP address. Over TCP it presents this endpoint's token and TLS (the members of a
        cluster share them), or, when this endpoint is a socket, those of the environment
        (``GRCTL_TOKEN``, ``GRCTL_TOKEN_FILE``, ``GRCTL_TLS_CA``). ValueError when the member's
        address is not HOST:PORT.
        """
        address = info.get("address")
        on_this_host = bool(info.get("socket")) and info.get("host") == member_host()
        if on_this_host and not (address and self.address is not None):
            return Endpoint(socket_path=Path(info["socket"]))
        if not address:
            return None
        where = f"the address of cluster member {info.get('name')!r}"
        token, tls = self.token, self.tls
        if self.address is None:  # we came by socket: the environment says how to dial TCP
            token = client_token()
            ca = tls_ca()
            tls = client_tls(ca) if ca else None
        return Endpoint(address=parse_address(str(address), where), token=token, tls=tls)


def client_tls(ca: Path) -> ssl.SSLContext:
    """TLS that trusts only ``ca`` and checks the daemon's certificate names the host dialled."""
    try:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    except FileNotFoundError:
        raise ValueError(
            f"the CA file {ca} does not exist; --tls-ca (or GRCTL_TLS_CA) names the PEM file "
            "of the CA that signed the daemon's certificate"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load the CA file {ca} ({_reason(exc)}); it must "
            "be the PEM certificate of the CA that signed the daemon's certificate"
        ) from None


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
        # Values arrive opened (Python objects); a daemon relaying replies keeps them as sent.
        self.open_values = True
        self.heartbeat_timeout_s = 10.0
        self.socket_path: Path | None = None
        # What the Welcome said of the cluster: this daemon's member name and the other live
        # members (see ``p.Welcome``); both None for a lone daemon.
        self.member: str | None = None
        self.members: list[Any] | None = None

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint | Path,
        role: str = "client",
        name: str = "",
        on_push: PushHandler | None = None,
    ) -> Connection:
        """Connect, say hello, and return once the daemon welcomed us (or raise why not)."""
        if not isinstance(endpoint, Endpoint):
            endpoint = Endpoint(socket_path=Path(endpoint))
        if endpoint.address is None:
            reader, writer = await _open_unix(endpoint)
        else:
            reader, writer = await _open_tcp(endpoint)
        conn = cls(reader, writer)
        conn.socket_path = endpoint.socket_path
        conn._on_push = on_push
        hello = p.Hello(p.PROTOCOL_VERSION, role, name, os.getpid(), endpoint.token)
        try:
            writer.write(p.encode(hello))
            first = await p.read_message(reader, open_values=True)
        except (ConnectionError, OSError):
            first = None
        except ProtocolError:
            # Not grctl frames: over plain TCP, most likely a TLS listener's answer.
            await _abort(writer)
            raise DaemonUnavailableError(
                f"{endpoint.address or endpoint.socket_path} did not answer as a grctl daemon"
                f"{_TLS_HINT if endpoint.address and not endpoint.tls else ''}"
            ) from None
        if not isinstance(first, p.Welcome):
            await _abort(writer)
        if first is None:
            # The daemon went away between accept and welcome (it was stopping or crashed), or
            # a TLS listener dropped our plain hello.
            if endpoint.address is not None and endpoint.tls is None:
                raise DaemonUnavailableError(
                    f"the daemon at {endpoint.address} closed the connection before answering"
                    f"{_TLS_HINT}"
                )
            raise DaemonUnavailableError(
                f"the grctl daemon on {endpoint.address or endpoint.socket_path} closed the "
                "connection before answering; check it with: grctl daemon status"
            )
        if isinstance(first, p.ErrorReply):
            raise error_from_wire(first.code, first.message)
        if not isinstance(first, p.Welcome):
            raise ProtocolError("the daemon did not answer the hello")
        conn.connection_id = first.connection_id
        conn.heartbeat_timeout_s = first.heartbeat_timeout_ms / 1000
        conn.member = first.member
        conn.members = first.members
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
                    await self._route(p.decode(body, open_values=self.open_values))
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


_TLS_HINT = (
    "; if it listens with TLS (--tls-cert), connect with --tls-ca CA_FILE or GRCTL_TLS_CA, "
    "else check it with: grctl daemon status"
)
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open_unix(endpoint: Endpoint) -> Streams:
    try:
        return await asyncio.open_unix_connection(
            str(endpoint.socket_path), limit=p.MAX_FRAME_BYTES + 16
        )
    except (FileNotFoundError, ConnectionRefusedError, OSError) as exc:
        raise DaemonUnavailableError(
            f"the grctl daemon is not running (no answer on {endpoint.socket_path}: "
            f"{exc.strerror or exc}); start it with: grctl daemon start"
        ) from None


async def _open_tcp(endpoint: Endpoint) -> Streams:
    address = endpoint.address
    assert address is not None
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(
                address.host,
                address.port,
                ssl=endpoint.tls,
                server_hostname=address.host if endpoint.tls else None,
                limit=p.MAX_FRAME_BYTES + 16,
            ),
            CONNECT_TIMEOUT_S,
        )
    except ssl.SSLCertVerificationError as exc:
        raise DaemonUnavailableError(
            f"the daemon at {address} failed TLS verification ({exc.verify_message}); "
            "--tls-ca (or GRCTL_TLS_CA) must name the CA that signed its certificate, and the "
            f"certificate must name {address.host}"
        ) from None
    except ssl.SSLError as exc:
        raise DaemonUnavailableError(
            f"the TLS handshake with {address} failed ({exc.reason or exc}); if the daemon "
            "listens without TLS, connect without --tls-ca and GRCTL_TLS_CA"
        ) from None
    except ConnectionRefusedError:
        raise DaemonUnavailableError(
            f"no answer at {address} (connection refused); is the daemon started with "
            f"--listen {address}?"
        ) from None
    except TimeoutError:
        raise DaemonUnavailableError(
            f"no answer at {address} within {CONNECT_TIMEOUT_S:g}s; is the host reachable and "
            f"the daemon started with --listen {address}?"
        ) from None
    except (ConnectionError, OSError) as exc:
        if endpoint.tls is not None and isinstance(exc, ConnectionError):
            raise DaemonUnavailableError(
                f"the daemon at {address} closed the connection during the TLS handshake; if "
                "it listens without TLS, connect without --tls-ca and GRCTL_TLS_CA"
            ) from None
        raise DaemonUnavailableError(
            f"no answer at {address} ({exc.strerror or exc}); is the daemon started with "
            f"--listen {address}?"
        ) from None


def _unwrap(reply: p.Message) -> Any:
    if isinstance(reply, p.ErrorReply):
        raise error_from_wire(
            reply.code, reply.message, reply.workflow_id, reply.run_id, reply.details
        )
    return reply.data  # type: ignore[attr-defined]


async def _abort(writer: asyncio.StreamWriter) -> None:
    """Drop a connection that failed its hello, now: no TLS close-notify exchange to wait for."""
    writer.transport.abort()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError, ssl.SSLError):
        pass


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)
