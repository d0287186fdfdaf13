"""The one codec: msgpack for user values, for stored rows and for frames, and the frame batcher.

Every msgpack call of grctl goes through here, with the same options (bin type on, str keys
not required, str as str), so that what one side packs the other always reads back the same.

- **Values.** A user value (input, payload, store value, result) is packed once by the SDK and
  travels as an opaque ``ExtType(VALUE_EXT, bytes)``: the daemon stores and forwards the bytes
  and never decodes them on the step path (``wrap_value``, ``packed``, ``unwrap``, ``open_value``).
- **Frames.** A frame is a 4-byte big-endian length and one msgpack body (``frame``,
  ``FrameReader``, ``read_frame``); ``grctl.protocol`` turns bodies into messages.
- **Writing.** ``FrameWriter`` batches the frames queued in one turn of the event loop into one
  write: the daemon's connections and the SDK's share it.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import msgpack

from grctl.errors import ProtocolError

MAX_FRAME_BYTES = 16 * 1024 * 1024
HEADER = struct.Struct(">I")
VALUE_EXT = 1

ExtType = msgpack.ExtType


# -- values -----------------------------------------------------------------------------------


def pack(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """A Python value as msgpack bytes (raises TypeError for what msgpack cannot hold)."""
    return msgpack.packb(value, use_bin_type=True, default=default)


def not_serialisable(value: Any, what: str, fix: str) -> str:
    """Why ``value`` (``what``: "store value for key 'k'") could not be packed, saying what to do.

    A coroutine in it (found at any depth, and closed so Python does not warn about it) is a
    forgotten ``await``, most often on ``ctx.now()``, ``ctx.uuid4()`` or ``ctx.store.get()``.
    """
    found = _coroutines(value, 0)
    for coro in found:
        coro.close()
    if found:
        name = getattr(found[0], "__qualname__", "a coroutine")
        return (
            f"{what} holds an un-awaited coroutine ({name}): did you forget await? "
            "ctx.now(), ctx.uuid4() and ctx.store.get() are awaited, e.g. await ctx.now()"
        )
    return f"{what} is a {type(value).__name__}, which msgpack cannot serialise; {fix}"


def _coroutines(value: Any, depth: int) -> list[Any]:
    if asyncio.iscoroutine(value):
        return [value]
    if depth > 20:
        return []
    if isinstance(value, dict):
        items: Any = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple | set):
        items = value
    else:
        return []
    return [c for item in items for c in _coroutines(item, depth + 1)]


def unpack(data: bytes, open_values: bool = False) -> Any:
    """msgpack bytes back to Python; with ``open_values``, wrapped user values are opened too."""
    if open_values:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_open_ext)
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def wrap_value(value: Any) -> msgpack.ExtType:
    """A user value as it travels: packed once, opaque to the daemon."""
    return msgpack.ExtType(VALUE_EXT, pack(value))


def packed(blob: bytes | None) -> msgpack.ExtType | None:
    """Bytes the daemon holds (already packed by the SDK) as a wrapped value, to send on."""
    return None if blob is None else msgpack.ExtType(VALUE_EXT, blob)


def unwrap(value: Any) -> bytes | None:
    """The packed bytes of a wrapped value from the wire.

    A peer that sent a plain value instead of a wrapped one (``None`` too) gets it packed here.
    """
    if isinstance(value, msgpack.ExtType) and value.code == VALUE_EXT:
        return value.data
    return pack(value)


def wrapped_size(value: Any) -> int:
    """The bytes a wrapped value (or raw packed bytes) carries; 0 for anything else."""
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, msgpack.ExtType):
        return len(value.data)
    return 0


def _open_ext(code: int, data: bytes) -> Any:
    if code == VALUE_EXT:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_open_ext)
    return msgpack.ExtType(code, data)


def open_value(value: Any) -> Any:
    """A wrapped user value back to Python; anything else is returned as is."""
    if isinstance(value, msgpack.ExtType) and value.code == VALUE_EXT:
        return _open_ext(value.code, value.data)
    return value


# -- frames -----------------------------------------------------------------------------------


def frame(body: dict[str, Any], what: str) -> bytes:
    """One map → one frame, header included; ProtocolError past MAX_FRAME_BYTES."""
    data = pack(body)
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(
            f"message {what!r} is {len(data)} bytes, over the {MAX_FRAME_BYTES}-byte frame limit"
        )
    return HEADER.pack(len(data)) + data


def _too_long(length: int, limit: int = MAX_FRAME_BYTES) -> ProtocolError:
    # A TLS record (handshake 0x16 or alert 0x15, version 0x03..) read as a frame header.
    tls = length >> 24 in (0x15, 0x16) and (length >> 16) & 0xFF == 0x03
    hint = "; these are TLS bytes: one end speaks TLS and the other does not" if tls else ""
    return ProtocolError(f"frame of {length} bytes is over the {limit}-byte limit{hint}")


async def read_frame(reader: asyncio.StreamReader, limit: int = MAX_FRAME_BYTES) -> bytes | None:
    """One frame body; ``None`` at a clean end of stream. Raises ProtocolError on a bad frame.

    ``limit`` lowers the frame limit (a hello from a peer not yet authenticated is small).
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed mid-frame") from None
    (length,) = HEADER.unpack(header)
    if length > limit:
        raise _too_long(length, limit)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed mid-frame") from None


class FrameReader:
    """Frame bodies from a stream read in chunks: one await per chunk, whatever it holds.

    A group commit wakes many steps at once, so their frames arrive together; reading them
    one ``readexactly`` pair at a time would cost two awaits per frame.
    """

    def __init__(self, reader: asyncio.StreamReader, chunk_bytes: int = 256 * 1024) -> None:
        self._reader = reader
        self._chunk = chunk_bytes
        self._buf = bytearray()

    async def read(self) -> list[bytes] | None:
        """The next complete frame bodies (at least one); ``None`` at a clean end of stream."""
        while True:
            bodies = self._split()
            if bodies:
                return bodies
            chunk = await self._reader.read(self._chunk)
            if not chunk:
                if self._buf:
                    raise ProtocolError("connection closed mid-frame")
                return None
            self._buf += chunk

    def _split(self) -> list[bytes]:
        buf = self._buf
        size = len(buf)
        pos = 0
        bodies = []
        while size - pos >= HEADER.size:
            (length,) = HEADER.unpack_from(buf, pos)
            if length > MAX_FRAME_BYTES:
                raise _too_long(length)
            end = pos + HEADER.size + length
            if end > size:
                break
            bodies.append(bytes(buf[pos + HEADER.size : end]))
            pos = end
        if pos:
            del buf[:pos]
        return bodies


class FrameWriter:
    """Frames queued in one turn of the loop go out in one write (a group commit wakes many
    steps at once; a worker finishing many steps sends many results)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._out: list[bytes] = []
        self.queued = 0  # bytes waiting for the next flush

    def write(self, data: bytes) -> None:
        self._out.append(data)
        self.queued += len(data)
        if len(self._out) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # off the loop (a stream closed by the garbage collector)
                self.flush()

    def flush(self) -> None:
        """Write what is queued with one system call."""
        out, self._out, self.queued = self._out, [], 0
        if out and not self.writer.is_closing():
            try:
                self.writer.write(out[0] if len(out) == 1 else b"".join(out))
            except (ConnectionError, OSError):
                pass  # the reading side sees the connection end and fails what waits on it

    def buffered(self) -> int:
        """Bytes written but not yet taken by the peer (the transport's buffer)."""
        return self.writer.transport.get_write_buffer_size()
