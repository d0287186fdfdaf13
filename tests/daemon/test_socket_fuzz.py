"""Hostile bytes on the daemon's socket: ONE real daemon (and one real worker) for the module.

Every frame below is something no SDK sends: random bytes, lying length prefixes, truncated or
mis-shaped msgpack, every message kind with every field of the wrong type (generated from the
dataclasses in ``grctl.protocol``), unknown kinds, bad hellos, hang-ups mid-frame, and a peer
that floods requests without reading its replies. For each the daemon answers with an error
frame or drops only that connection; it never dies, never answers ``internal_error``, never
logs a traceback, and keeps its memory and file descriptors bounded. After all of it a normal
workflow (``tests/flows/basic.py`` on the real worker) still completes.
"""

from __future__ import annotations

import dataclasses
import os
import socket as socketlib
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from grctl import protocol as p
from tests.conftest import Daemon, Worker, shared_daemon, wait_until

HEADER = struct.Struct(">I")
SENTINEL = 2**62 + 4242  # the req_id of the status request that follows each fuzzed frame
FRAMES = {"count": 0}  # fuzzed frames sent to the daemon, reported by the last test
PROBE_TIMEOUT_S = 10


# -- one daemon and one worker for the module --------------------------------------------------


class Rig:
    def __init__(self, daemon: Daemon, worker: Worker) -> None:
        self.daemon = daemon
        self.worker = worker
        self.fd_baseline = 0
        self.rss_baseline_kb = 0
        self.normal_runs = 0

    def alive(self) -> None:
        """The daemon process is up and its socket still serves a request."""
        assert self.daemon.proc.poll() is None, self.daemon.log.read_text()
        assert self.daemon.status()["pid"] == self.daemon.pid

    def normal_workflow(self) -> None:
        """The real worker runs tests/flows/basic.py end to end through the daemon."""
        self.normal_runs += 1
        wid = f"fz-normal-{self.normal_runs}"
        d = self.daemon
        d.call(lambda c: c.start_workflow("BasicOrder", wid, {"order_id": wid}))
        wait_until(
            lambda: (
                d.call(lambda c: c.get_workflow_handle(wid).describe()).status.value == "waiting"
            ),
            15,
            message=f"{wid} waiting",
        )
        d.call(lambda c: c.get_workflow_handle(wid).send("approve"))
        result = d.call(lambda c: c.get_workflow_handle(wid).result(timeout=15))
        assert result == {"txn": f"txn-{wid}"}


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with shared_daemon("flows.basic", "fz") as (daemon, worker):
        r = Rig(daemon, worker)
        r.normal_workflow()
        r.fd_baseline = fd_count(daemon.pid)
        r.rss_baseline_kb = rss_kb(daemon.pid)
        yield r


# -- a raw peer ---------------------------------------------------------------------------------


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def pack(msg: Any) -> bytes:
    return frame(msgpack.packb(msg, use_bin_type=True))


HELLO = {"kind": "hello", "protocol_version": p.PROTOCOL_VERSION, "role": "client"}
STATUS = {"kind": "status", "req_id": SENTINEL}


class Raw:
    """A bare socket to the daemon; frames read back are plain dicts."""

    def __init__(self, rig: Rig, role: str | None = "client") -> None:
        self.sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        self.sock.settimeout(PROBE_TIMEOUT_S)
        self.sock.connect(str(rig.daemon.socket))
        if role is not None:
            self.sock.sendall(pack({**HELLO, "role": role}))
            welcome = self.read()
            assert welcome is not None and welcome["kind"] == "welcome", welcome

    def send(self, data: bytes) -> bool:
        """Send ``data``; False if the daemon already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _exactly(self, n: int) -> bytes | None:
        chunks, got = [], 0
        while got < n:
            try:
                chunk = self.sock.recv(min(n - got, 1 << 20))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def read(self) -> dict[str, Any] | None:
        """The next frame, or None once the daemon closed the connection."""
        header = self._exactly(HEADER.size)
        if header is None:
            return None
        body = self._exactly(HEADER.unpack(header)[0])
        assert body is not None, "the daemon closed mid-frame"
        return msgpack.unpackb(body, raw=False, strict_map_key=False)

    def until_closed(self) -> list[dict[str, Any]]:
        frames = []
        while (f := self.read()) is not None:
            frames.append(f)
        return frames

    def close(self) -> None:
        self.sock.close()


def assert_dropped_with_error(
    frames: list[dict[str, Any]], words: str = "", sent: Any = ""
) -> None:
    """The daemon said why in one protocol_error frame (req_id None), then closed."""
    errors = [f for f in frames if f["kind"] == "error" and f["req_id"] is None]
    assert len(errors) == 1, (sent, frames)
    assert errors[0]["code"] == "protocol_error", (sent, errors)
    message = errors[0]["message"]
    assert words in message and "closing the connection" in message, (sent, message)
    assert all(f.get("code") != "internal_error" for f in frames), frames


class Prober:
    """Sends one fuzzed frame at a time on a hello'd connection, reconnecting when dropped.

    After the frame it sends a status request (req_id SENTINEL): the frames read until that
    reply are the daemon's answer to the fuzzed frame; a close means it dropped the connection.
    """

    def __init__(self, rig: Rig, role: str = "client") -> None:
        self.rig = rig
        self.role = role
        self.peer: Raw | None = None
        self.dropped = 0
        self.kept = 0

    def probe(self, data: bytes) -> tuple[bool, list[dict[str, Any]]]:
        """(connection kept, frames the daemon sent back)."""
        if self.peer is None:
            self.peer = Raw(self.rig, self.role)
        FRAMES["count"] += 1
        if self.peer.send(data):
            self.peer.send(pack(STATUS))  # fails if the daemon dropped us: its error is read below
        frames: list[dict[str, Any]] = []
        while True:
            f = self.peer.read()
            if f is None:
                self.peer.close()
                self.peer = None
                self.dropped += 1
                return False, frames
            if f["kind"] == "reply" and f["req_id"] == SENTINEL:
                self.kept += 1
                return True, frames
            frames.append(f)

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()
            self.peer = None


# -- what to fuzz with --------------------------------------------------------------------------

JUNK: list[Any] = [
    None,
    True,
    0,
    -1,
    2**64 - 1,
    -(2**63),
    1.5,
    float("nan"),
    "",
    "x" * 5000,
    "fz\x00\n\u202e",
    b"",
    b"\x00\xff" * 10,
    [],
    [1, [2, [3, None]]],
    {},
    {"kind": "shutdown", "req_id": 1},
    {1: b"x", b"k": [{}], 2.5: None},
    msgpack.ExtType(p.VALUE_EXT, b"\xc1"),
    msgpack.ExtType(42, b"\x00" * 8),
    [[[[[[[[[[{"deep": [[[[[[[[[[None]]]]]]]]]]}]]]]]]]]]],
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=16)),
)
keys = st.one_of(st.text(max_size=10), st.integers(-5, 5), st.binary(max_size=4))
nested_junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=10,
)

# Harmless valid values per annotated field type (no run, type or dispatch by these names).
BASELINE_BY_TYPE: dict[str, Any] = {
    "int": 1,
    "int | None": None,
    "str": "fz-missing",
    "str | None": None,
    "bool": False,
    "dict[str, Any]": {},
    "dict[str, Any] | None": None,
    "list[Any]": [],
    "list[dict[str, Any]]": [],
    "list[Any] | None": None,
    "Any": None,
}
BASELINE_BY_NAME: dict[str, Any] = {
    "protocol_version": p.PROTOCOL_VERSION,
    "role": "client",
    "workflow_type": "FzNoSuchType",
    "dispatch_id": "FZNOSUCHRUN.1",
    "limit": 5,
    "after_seq": 0,
}


def baseline(cls: type[p.Message]) -> dict[str, Any]:
    """A well-formed wire map of ``cls`` that refers to nothing that exists."""
    out: dict[str, Any] = {"kind": cls.kind}
    for f in dataclasses.fields(cls):
        out[f.name] = BASELINE_BY_NAME.get(f.name, BASELINE_BY_TYPE[str(f.type)])
    return out


def type_ok(cls: type[p.Message], name: str, value: Any) -> bool:
    """Whether the decoder accepts ``value`` for field ``name`` (mirrors its declared type)."""
    allowed = dict(cls._field_checks)[name]
    if allowed is None:
        return True
    if isinstance(value, bool) and allowed == (int,):
        return False
    return isinstance(value, allowed)


FIELDS = [
    (cls, f.name) for cls in p.MESSAGES.values() for f in dataclasses.fields(cls)
]  # every field of every message kind


def harmful(cls: type[p.Message], msg: dict[str, Any]) -> bool:
    """A *valid* shutdown would stop the daemon: that is its job, not a fuzz finding."""
    if cls is not p.Shutdown:
        return False
    return all(type_ok(cls, k, v) for k, v in msg.items() if k != "kind")


def check_answer(cls: type[p.Message], msg: dict[str, Any], kept: bool, frames: list) -> None:
    """A wrong type closes the connection with a protocol_error; anything else is answered."""
    for f in frames:
        assert f.get("code") != "internal_error", (msg, f)
    fields_ok = all(type_ok(cls, k, v) for k, v in msg.items() if k in dict(cls._field_checks))
    if not fields_ok:
        assert not kept, (msg, frames)
        assert_dropped_with_error(frames, "wrong type", msg)
    elif not kept:
        # Well-typed but not acceptable from a client (a reply, a push, a hello…): dropped, said why.
        assert_dropped_with_error(frames, "", msg)


# -- hand-picked frames -------------------------------------------------------------------------

# (bytes sent, hello first?, words the error frame must carry; None: just a close is fine)
HAND_PICKED: dict[str, tuple[bytes, bool, str | None]] = {
    "random bytes, no frame": (b"\x8f\x13\xa7\x00\xfe" * 7, False, None),
    "length 0": (HEADER.pack(0), True, "not valid msgpack"),
    "length 0 before hello": (HEADER.pack(0), False, "not valid msgpack"),
    "length 2^32-1": (HEADER.pack(2**32 - 1), True, "over the"),
    "length 2^32-1 before hello": (HEADER.pack(2**32 - 1) + b"x" * 100, False, "over the"),
    "length MAX+1": (HEADER.pack(p.MAX_FRAME_BYTES + 1), True, "over the"),
    # A 4-byte prefix cannot say 4 GiB: the 8-byte 2^32 reads as a 1-byte frame of 0x00.
    "4 GiB as 8 bytes": (struct.pack(">Q", 2**32), True, "not a map"),
    "length says 10, body 3, then hang-up": (HEADER.pack(10) + b"\x81\xa4k", True, None),
    "truncated map": (frame(b"\x82\xa4kind\xa6status\xa6req_"), True, "not valid msgpack"),
    "truncated str": (frame(b"\xdb\x00\x00\xff\xffab"), True, "not valid msgpack"),
    "array claims 2^32-1 items": (frame(b"\xdd\xff\xff\xff\xff\xc0"), True, "not valid msgpack"),
    "map claims 2^32-1 pairs": (frame(b"\xdf\xff\xff\xff\xff\xc0"), True, "not valid msgpack"),
    "reserved byte 0xc1": (frame(b"\xc1"), True, "not valid msgpack"),
    "trailing bytes after the map": (frame(msgpack.packb(STATUS) + b"\x00"), True, "msgpack"),
    "100k-deep nesting": (frame(b"\x91" * 100_000 + b"\xc0"), True, "not valid msgpack"),
    "bad utf-8 in a str": (frame(b"\x81\xa4kind\xa2\xff\xfe"), True, "not valid msgpack"),
    "unhashable map key": (frame(b"\x81\x91\x01\x01"), True, "not valid msgpack"),
    "invalid timestamp ext": (frame(b"\x81\xa4kind\xd4\xff\x00"), True, "not valid msgpack"),
    "not a map: int": (pack(7), True, "not a map"),
    "not a map: list": (pack(["kind", "status"]), True, "not a map"),
    "not a map: str": (pack("status"), True, "not a map"),
    "not a map: nil": (pack(None), True, "not a map"),
    "map without kind": (pack({"req_id": 1}), True, "not a map with a 'kind'"),
    "kind is an int": (pack({"kind": 1, "req_id": 1}), True, "not a map with a 'kind'"),
    "kind is bytes": (pack({"kind": b"status", "req_id": 1}), True, "not a map with a 'kind'"),
    "kind is nil": (pack({"kind": None}), True, "not a map with a 'kind'"),
    "unknown kind": (pack({"kind": "launch_missiles", "req_id": 1}), True, "unknown message"),
    "empty kind": (pack({"kind": "", "req_id": 1}), True, "unknown message"),
    "dunder kind": (pack({"kind": "__class__", "req_id": 1}), True, "unknown message"),
    "python path kind": (pack({"kind": "os.system", "req_id": 1}), True, "unknown message"),
    "non-str field name": (pack({"kind": "status", "req_id": 1, 5: 6}), True, "bad fields"),
    "bytes field name": (pack({"kind": "status", b"req_id": 1}), True, "bad fields"),
    "status without req_id": (pack({"kind": "status"}), True, "bad fields"),
    "second hello": (pack(HELLO), True, "unexpected 'hello'"),
    "hello version 0": (pack({**HELLO, "protocol_version": 0}), False, "version 0"),
    "hello version 99": (pack({**HELLO, "protocol_version": 99}), False, "version 99"),
    "hello version -1": (pack({**HELLO, "protocol_version": -1}), False, "version -1"),
    "hello version 2^64-1": (pack({**HELLO, "protocol_version": 2**64 - 1}), False, "version"),
    "hello version as str": (pack({**HELLO, "protocol_version": "1"}), False, "wrong type"),
    "hello version as bool": (pack({**HELLO, "protocol_version": True}), False, "wrong type"),
    "hello without a version": (pack({"kind": "hello", "role": "client"}), False, "bad fields"),
    "hello role nil": (pack({**HELLO, "role": None}), False, "wrong type"),
    "hello role admin": (pack({**HELLO, "role": "admin"}), False, "unknown role"),
    "hello name a dict": (pack({**HELLO, "name": {"a": 1}}), False, "wrong type"),
}
for _cls in p.MESSAGES.values():
    if _cls is not p.Hello:
        HAND_PICKED[f"{_cls.kind} before hello"] = (pack(baseline(_cls)), False, "must be a hello")


@pytest.mark.parametrize("case", list(HAND_PICKED))
def test_a_hand_picked_bad_frame_gets_an_error_frame_or_a_close(rig, case):
    data, say_hello, words = HAND_PICKED[case]
    peer = Raw(rig, "client" if say_hello else None)
    FRAMES["count"] += 1
    peer.send(data)
    if case.endswith("hang-up"):
        peer.close()
        rig.alive()
        return
    frames = peer.until_closed()
    peer.close()
    if words is not None:
        assert_dropped_with_error(frames, words)
    else:
        assert all(f.get("code") != "internal_error" for f in frames), frames
    rig.alive()


def test_a_frame_of_exactly_max_bytes_is_read_then_refused_and_the_daemon_stays_small(rig):
    body = b"\xc0" * p.MAX_FRAME_BYTES  # nil followed by junk: read whole, then refused
    peer = Raw(rig)
    FRAMES["count"] += 1
    assert peer.send(frame(body))
    assert_dropped_with_error(peer.until_closed(), "not valid msgpack")
    peer.close()
    rig.alive()
    assert rss_kb(rig.daemon.pid) - rig.rss_baseline_kb < 128 * 1024


# -- every message kind, every field, every wrong type ------------------------------------------


def test_every_field_of_every_message_kind_with_every_junk_value(rig):
    prober = Prober(rig)
    cases = 0
    try:
        for cls, name in FIELDS:
            for value in JUNK:
                msg = {**baseline(cls), name: value}
                if harmful(cls, msg):
                    continue
                kept, frames = prober.probe(pack(msg))
                check_answer(cls, msg, kept, frames)
                cases += 1
        for cls in p.MESSAGES.values():  # a field missing, a field too many
            for f in dataclasses.fields(cls):
                msg = {k: v for k, v in baseline(cls).items() if k != f.name}
                kept, frames = prober.probe(pack(msg))
                has_default = f.default is not dataclasses.MISSING or (
                    f.default_factory is not dataclasses.MISSING
                )
                if not has_default:
                    assert not kept, (msg, frames)
                    assert_dropped_with_error(frames)
                cases += 1
            if cls is not p.Shutdown:
                kept, frames = prober.probe(pack({**baseline(cls), "surplus": 1}))
                assert not kept and frames, frames
                assert_dropped_with_error(frames, "bad fields")
                cases += 1
    finally:
        prober.close()
    assert cases > len(FIELDS) * len(JUNK) // 2
    assert prober.dropped and prober.kept, "both outcomes happen"
    rig.alive()
    FRAMES["every_field"] = 1


FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(field=st.sampled_from(FIELDS), value=nested_junk, role=st.sampled_from(["client", "worker"]))
def test_hypothesis_a_field_of_any_kind_gets_generated_junk(rig, field, value, role):
    cls, name = field
    msg = {**baseline(cls), name: value}
    assume(not harmful(cls, msg) and value != SENTINEL)
    if role == "worker" and cls is p.RegisterWorker and type_ok(cls, name, value):
        assume(isinstance(value, int) or not value)  # no junk workflow types registered for real
    prober = Prober(rig, role)
    try:
        kept, frames = prober.probe(pack(msg))
    finally:
        prober.close()
    check_answer(cls, msg, kept, frames)


@FUZZ
@given(body=st.binary(max_size=200), hello_first=st.booleans())
def test_hypothesis_random_bytes_in_a_frame(rig, body, hello_first):
    peer = Raw(rig, "client" if hello_first else None)
    FRAMES["count"] += 1
    try:
        peer.send(frame(body) + pack(STATUS))
        frames = []
        while (f := peer.read()) is not None:
            if f["kind"] == "reply" and f["req_id"] == SENTINEL:
                break
            frames.append(f)
    finally:
        peer.close()
    assert all(f.get("code") != "internal_error" for f in frames), (body, frames)


@FUZZ
@given(
    msg=st.dictionaries(
        st.one_of(st.sampled_from(["kind", "req_id", "workflow_id", "run_id"]), keys),
        nested_junk,
        max_size=6,
    ),
    kind=st.one_of(st.sampled_from(sorted(p.MESSAGES)), st.text(max_size=20), nested_junk),
)
def test_hypothesis_random_maps_with_known_and_unknown_kinds(rig, msg, kind):
    msg = {**msg, "kind": kind}
    assume(kind != "shutdown")
    prober = Prober(rig)
    try:
        kept, frames = prober.probe(pack(msg))
    finally:
        prober.close()
    assert all(f.get("code") != "internal_error" for f in frames), (msg, frames)
    if not isinstance(kind, str) or kind not in p.MESSAGES:
        assert not kept
        assert_dropped_with_error(frames)


@FUZZ
@given(raw=st.binary(min_size=1, max_size=64), cut=st.integers(0, 63))
def test_hypothesis_a_client_that_hangs_up_mid_frame(rig, raw, cut):
    body = msgpack.packb({"kind": "status", "req_id": 1, "pad": raw}, use_bin_type=True)
    data = frame(body)
    peer = Raw(rig, None if cut % 2 else "client")
    FRAMES["count"] += 1
    peer.send(data[: 1 + cut % (len(data) - 1)])
    peer.close()
    rig.alive()


def test_hangups_and_abandoned_waits_leave_no_fds_and_the_run_completes(rig):
    d = rig.daemon
    d.call(lambda c: c.start_workflow("BasicOrder", "fz-abandoned", {"order_id": "a"}))
    wait_until(
        lambda: (
            d.call(lambda c: c.get_workflow_handle("fz-abandoned").describe()).status.value
            == "waiting"
        ),
        message="fz-abandoned waiting",
    )
    for n in range(20):  # long waits whose asker hangs up before the answer
        peer = Raw(rig)
        peer.send(
            pack({"kind": "result", "req_id": 1, "workflow_id": "fz-abandoned", "wait": True})
        )
        peer.send(
            pack({"kind": "history", "req_id": 2, "workflow_id": "fz-abandoned", "follow": True})
        )
        assert peer.read()["kind"] == "history_items", "the follow started"
        if n % 2:
            peer.send(HEADER.pack(50) + b"half")
        FRAMES["count"] += 3
        peer.close()
    wait_until(lambda: fd_count(d.pid) <= rig.fd_baseline, message="fds back to baseline")
    d.call(lambda c: c.get_workflow_handle("fz-abandoned").send("approve"))
    assert d.call(lambda c: c.get_workflow_handle("fz-abandoned").result(timeout=15)) == {
        "txn": "txn-a"
    }
    rig.alive()


# -- a hostile worker ----------------------------------------------------------------------------

GOOD_DEF = {
    "workflow_type": "FzW",
    "start": {"name": "go", "params": []},
    "steps": [{"name": "s", "timeout_ms": 5000, "retry_policy": None}],
    "events": [{"name": "e", "params": []}],
    "queries": ["q"],
}
BAD_DEFS = [
    None,
    "FzX",
    {**GOOD_DEF, "workflow_type": 5},
    {**GOOD_DEF, "workflow_type": ""},
    {**GOOD_DEF, "start": {"name": 7, "params": []}},
    {**GOOD_DEF, "start": {"name": "go", "params": 5}},
    {**GOOD_DEF, "start": {"name": "go", "params": [["class", "POSITIONAL_OR_KEYWORD", False]]}},
    {**GOOD_DEF, "start": {"name": "go", "params": [["x", "NOPE", False]]}},
    {**GOOD_DEF, "steps": [{"name": "s", "timeout_ms": "abc"}]},
    {**GOOD_DEF, "steps": [{"name": "s", "timeout_ms": 2**64 - 1}]},
    {**GOOD_DEF, "steps": [{"name": "s", "timeout_ms": 1, "retry_policy": {"x": 1}}]},
    {**GOOD_DEF, "steps": [{"name": "s", "timeout_ms": 1, "retry_policy": {"jitter": "x"}}]},
    {**GOOD_DEF, "steps": [{"name": "s", "timeout_ms": 1, "retry_policy": 5}]},
    {**GOOD_DEF, "events": [{"name": "e", "params": [[1, 2]]}]},
    {
        **GOOD_DEF,
        "events": [
            {"name": "e", "params": [["a", "KEYWORD_ONLY", 0], ["b", "POSITIONAL_ONLY", 0]]}
        ],
    },
    {**GOOD_DEF, "queries": "abc"},
    {**GOOD_DEF, "queries": [[1]]},
]


def test_malformed_workflow_definitions_are_refused_whole_and_register_nothing(rig):
    worker = Raw(rig, "worker")
    try:
        for n, definition in enumerate(BAD_DEFS):
            if isinstance(definition, dict) and definition["workflow_type"] == "FzW":
                definition = {**definition, "workflow_type": definition["workflow_type"] + str(n)}
            # A good definition first: the bad one after it must not leave it half-registered.
            good = {**GOOD_DEF, "workflow_type": f"FzGood{n}"}
            worker.send(
                pack({"kind": "register_worker", "req_id": n, "workflows": [good, definition]})
            )
            FRAMES["count"] += 1
            reply = worker.read()
            assert reply["kind"] == "error" and reply["code"] == "invalid_input", (
                definition,
                reply,
            )
            assert "malformed workflow definitions" in reply["message"]
    finally:
        worker.close()
    assert [w["workflow_types"] for w in rig.daemon.status()["workers"]] == [["BasicOrder"]]
    peer = Raw(rig)
    peer.send(
        pack(
            {
                "kind": "start_workflow",
                "req_id": 1,
                "workflow_type": "FzGood0",
                "workflow_id": "fz-g",
            }
        )
    )
    reply = peer.read()
    peer.close()
    assert reply["code"] == "workflow_type_not_registered", reply
    assert "(known: BasicOrder)" in reply["message"], "no half-registered type is known"
    rig.alive()


E = msgpack.ExtType
# (message kind, fields) a worker sends about a live dispatch of its own: the run may fail, the
# request may be refused, but the daemon answers and carries on.
WORKER_JUNK: list[tuple[str, dict[str, Any]]] = [
    ("complete_step", {"directive": {"kind": "bogus"}}),
    ("complete_step", {"directive": {}}),
    ("complete_step", {"directive": {"kind": "step", "step_name": 5}}),
    ("complete_step", {"directive": {"kind": "step", "step_name": "nope"}}),
    ("complete_step", {"directive": {"kind": "wait_for_event", "timeout_ms": "x"}}),
    ("complete_step", {"directive": {"kind": "wait_for_event", "timeout_ms": 2**64 - 1}}),
    ("complete_step", {"directive": {"kind": "complete"}, "store_writes": {5: E(1, b"\xc0")}}),
    ("complete_step", {"directive": {"kind": "complete"}, "store_writes": {"k": E(1, b"\xc1")}}),
    ("complete_step", {"error": {"type": 5, "message": [None]}}),
    ("complete_step", {"error": {}}),
    ("complete_step", {"directive": None, "error": None}),
    ("record", {"record": None}),
    ("record", {"record": [1, 2, 3]}),
    ("record", {"record": {"op": "1"}}),
    ("record", {"record": E(1, b"\xc1")}),
    ("start_child", {"record": {"op": 1}, "workflow_type": "FzW", "workflow_id": ""}),
    ("start_child", {"record": {"op": 1}, "workflow_type": "Nope", "workflow_id": "c"}),
    ("send_to_parent", {"record": None, "event_name": "e"}),
]


def test_a_worker_answering_a_live_dispatch_with_junk_is_answered_and_harms_nobody(rig):
    worker = Raw(rig, "worker")
    worker.send(
        pack({"kind": "register_worker", "req_id": 1, "workflows": [GOOD_DEF], "concurrency": 1})
    )
    assert worker.read()["kind"] == "reply"
    client = Raw(rig)
    try:
        for n, (kind, fields) in enumerate(WORKER_JUNK):
            wid = f"fz-w-{n}"
            client.send(
                pack(
                    {
                        "kind": "start_workflow",
                        "req_id": n,
                        "workflow_type": "FzW",
                        "workflow_id": wid,
                    }
                )
            )
            dispatch = worker.read()
            while dispatch["kind"] != "dispatch_step":
                dispatch = worker.read()
            assert client.read()["kind"] == "reply"
            msg = {
                "kind": kind,
                "req_id": 100 + n,
                "dispatch_id": dispatch["dispatch_id"],
                **fields,
            }
            worker.send(pack(msg))
            FRAMES["count"] += 1
            reply = worker.read()
            assert reply is not None and reply["req_id"] == 100 + n, (msg, reply)
            assert reply.get("code") != "internal_error", (msg, reply)
            client.send(pack({"kind": "terminate", "req_id": 1000 + n, "workflow_id": wid}))
            assert client.read()["kind"] in ("reply", "error")
    finally:
        worker.close()
        client.close()
    rig.alive()


# -- a flooder that never reads -----------------------------------------------------------------


def test_a_flooder_that_never_reads_costs_bounded_memory_and_only_itself_waits(rig):
    pid = rig.daemon.pid
    start_rss = rss_kb(pid)
    peer = Raw(rig)
    peer.sock.setblocking(False)
    batch = b"".join(pack({"kind": "status", "req_id": i}) for i in range(2000))
    sent, peak, served = 0, start_rss, 0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        try:
            sent += peer.sock.send(batch)
        except BlockingIOError:
            # The daemon stopped reading us: others are still served meanwhile.
            assert rig.daemon.status()["pid"] == pid
            served += 1
        peak = max(peak, rss_kb(pid))
    FRAMES["count"] += sent // len(pack({"kind": "status", "req_id": 1000}))
    peer.close()
    growth_mib = (peak - start_rss) / 1024
    assert sent > 256 * 1024, f"only {sent} bytes went out"
    assert served > 0, "the daemon paused the flooder (its socket filled up)"
    assert growth_mib < 64, f"daemon RSS grew {growth_mib:.0f} MiB under a flooder"
    wait_until(lambda: fd_count(pid) <= rig.fd_baseline, message="flooder's fd closed")
    rig.alive()


def test_a_slow_reader_is_paced_not_dropped_every_request_is_answered(rig):
    total = 20_000
    peer = Raw(rig)
    data = b"".join(pack({"kind": "status", "req_id": i}) for i in range(total))

    def pump() -> None:
        peer.sock.sendall(data)

    writer = threading.Thread(target=pump)
    writer.start()
    seen = set()
    for _ in range(total):
        f = peer.read()
        assert f is not None and f["kind"] == "reply", f
        seen.add(f["req_id"])
    writer.join(30)
    FRAMES["count"] += total
    peer.close()
    assert seen == set(range(total))


# -- afterwards ---------------------------------------------------------------------------------


def test_afterwards_the_daemon_is_whole_and_a_normal_workflow_completes(rig):
    d = rig.daemon
    rig.alive()
    wait_until(
        lambda: fd_count(d.pid) <= rig.fd_baseline,
        message=f"fds back to {rig.fd_baseline} (now {fd_count(d.pid)})",
    )
    assert [w["workflow_types"] for w in d.status()["workers"]] == [["BasicOrder"]]
    rig.normal_workflow()
    assert d.integrity_ok()
    text = d.log.read_text()
    assert "Traceback" not in text and "internal error" not in text, text[-5000:]
    growth_mib = (rss_kb(d.pid) - rig.rss_baseline_kb) / 1024
    print(f"\nfuzzed frames: {FRAMES['count']}; daemon RSS growth {growth_mib:.1f} MiB")
    if FRAMES.get("every_field"):  # under xdist, that test may have run in another process
        assert FRAMES["count"] > 5000


def test_start_child_with_a_non_map_record_is_refused_as_invalid_input(daemon):
    r = Rig(daemon, None)  # type: ignore[arg-type]
    worker = Raw(r, "worker")
    worker.send(pack({"kind": "register_worker", "req_id": 1, "workflows": [GOOD_DEF]}))
    assert worker.read()["kind"] == "reply"
    client = Raw(r)
    client.send(
        pack({"kind": "start_workflow", "req_id": 1, "workflow_type": "FzW", "workflow_id": "p"})
    )
    dispatch = worker.read()
    while dispatch["kind"] != "dispatch_step":
        dispatch = worker.read()
    child = {"workflow_type": "FzW", "workflow_id": "c", "record": None}
    worker.send(
        pack({"kind": "start_child", "req_id": 2, "dispatch_id": dispatch["dispatch_id"], **child})
    )
    reply = worker.read()
    worker.close()
    client.close()
    assert reply["code"] == "invalid_input", reply
