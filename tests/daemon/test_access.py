"""Who may reach the daemon, and what it does with what they send.

- The home is 0700 and everything the daemon creates in it (socket, database, WAL, log, pid
  file) is owner-only, even under umask 000; an existing looser home is tightened (and the log
  says so); a home owned by another user is refused with one clear line.
- Another user (``setpriv`` to nobody) can connect neither with a raw socket nor with the CLI,
  which prints one line and no traceback.
- Values are data: a pickle whose ``__reduce__`` would create a file travels as bytes and
  comes back as bytes; msgpack ExtTypes of other codes come back as ExtTypes; nothing runs.
- The daemon never imports workflow code: the flow module marks each importing pid.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket as socketlib
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from grctl import protocol as p
from tests.conftest import GRCTL, Daemon, _accepts, wait_until

HEADER = struct.Struct(">I")
FLOWS = "flows.fz_access"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as another user (nobody)",
)


@pytest.fixture(autouse=True)
def marker_dir(monkeypatch, tmp_path) -> Path:
    """Every process started here (daemon, workers) sees FZ_MARKER_DIR in its environment."""
    path = tmp_path / "markers"
    path.mkdir()
    monkeypatch.setenv("FZ_MARKER_DIR", str(path))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def start_daemon(home: Path, umask: int) -> Daemon:
    """A daemon started under ``umask`` on a home it may have to create itself."""
    d = Daemon(home)
    out = home.parent / f"{home.name}.out"
    with open(out, "ab") as f:
        d.proc = subprocess.Popen(
            [sys.executable, "-m", "grctl_daemon", "--home", str(home), "--quiet"],
            env=d.env(),
            stdout=f,
            stderr=f,
            stdin=subprocess.DEVNULL,
            umask=umask,
        )
    wait_until(lambda: d.proc.poll() is not None or _accepts(d.socket), 15, message="socket")
    assert d.proc.poll() is None, out.read_text()
    return d


@pytest.fixture
def parent() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="grctl-acc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def stop_clean(d: Daemon) -> None:
    assert d.stop() == 0
    assert "Traceback" not in d.log.read_text()


# -- files and modes ----------------------------------------------------------------------------


def test_under_umask_000_the_new_home_is_0700_and_all_the_daemon_creates_is_owner_only(parent):
    home = parent / "home"
    d = start_daemon(home, umask=0o000)
    try:
        d.status()  # a connection, so the WAL exists too
        assert mode(home) == 0o700
        assert stat.S_ISSOCK(d.socket.stat().st_mode) and mode(d.socket) == 0o600
        created = sorted(home.iterdir())
        names = {f.name for f in created}
        assert {"grctl.sock", "grctl.db", "daemon.log", "daemon.pid"} <= names, names
        loose = {f.name: oct(mode(f)) for f in created if mode(f) & 0o077}
        assert loose == {}, f"readable or writable by others: {loose}"
    finally:
        stop_clean(d)


def test_an_existing_looser_home_is_tightened_and_the_log_says_so(parent):
    home = parent / "home"
    home.mkdir()
    os.chmod(home, 0o777)
    d = start_daemon(home, umask=0o000)
    try:
        assert mode(home) == 0o700
        assert mode(d.socket) == 0o600
        assert "was mode 777, open to other users; set it to 700" in d.log.read_text()
    finally:
        stop_clean(d)


@needs_root
def test_a_home_owned_by_another_user_is_refused_in_one_line(parent):
    home = parent / "theirs"
    home.mkdir(mode=0o700)
    os.chown(home, 65534, 65534)
    proc = subprocess.run(
        [sys.executable, "-m", "grctl_daemon", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("error: the grctl home") and "belongs to uid 65534" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert list(home.iterdir()) == [], "nothing was created in it"
    assert mode(home) == 0o700 and home.stat().st_uid == 65534, "nor was it changed"


# -- another user -------------------------------------------------------------------------------

AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]

CONNECT = """
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("refused", exc.errno)
else:
    body = bytes.fromhex(sys.argv[2])
    s.sendall(struct.pack(">I", len(body)) + body)
    print("connected", s.recv(100))
"""


def as_nobody_connect(socket_path: Path) -> str:
    hello = msgpack.packb(
        {"kind": "hello", "protocol_version": p.PROTOCOL_VERSION, "role": "client"}
    )
    proc = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", CONNECT, str(socket_path), hello.hex()],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@needs_root
def test_another_user_cannot_connect_to_the_socket_even_through_an_open_home(daemon):
    assert as_nobody_connect(daemon.socket) == "refused 13", "the 0700 home stops them"
    os.chmod(daemon.home, 0o755)  # even if the home were opened up, the 0600 socket holds
    try:
        assert as_nobody_connect(daemon.socket) == "refused 13", "the 0600 socket stops them"
        # The check can fail: the same probe as root gets in and is welcomed.
        connected = subprocess.run(
            [sys.executable, "-c", CONNECT, str(daemon.socket), msgpack.packb(HELLO).hex()],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert connected.stdout.startswith("connected") and "welcome" in connected.stdout
    finally:
        os.chmod(daemon.home, 0o700)
    assert daemon.status()["pid"] == daemon.pid


HELLO = {"kind": "hello", "protocol_version": p.PROTOCOL_VERSION, "role": "client"}


@needs_root
def test_another_user_is_refused_by_the_cli_in_one_clear_line(daemon):
    for home_mode in (0o700, 0o755):
        os.chmod(daemon.home, home_mode)
        proc = subprocess.run(
            [*AS_NOBODY, GRCTL, "list", "--home", str(daemon.home)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            env={**daemon.env(), "HOME": "/nonexistent", "COLUMNS": "300"},
        )
        assert proc.returncode == 1, proc
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: permission denied on the daemon's socket"), lines
        assert "another user" in lines[0]
    os.chmod(daemon.home, 0o700)
    assert daemon.status()["pid"] == daemon.pid


# -- values are data ----------------------------------------------------------------------------


class Armed:
    """Unpickling this opens (so creates) ``path``: the classic pickle payload."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def armed(path: Path) -> bytes:
    return pickle.dumps(Armed(str(path)))


def test_the_pickle_payload_is_live(tmp_path):
    """The payload below is not a dud: unpickling it does create its file."""
    target = tmp_path / "sanity"
    pickle.loads(armed(target)).close()
    assert target.exists()


def test_a_pickle_in_input_and_payload_round_trips_as_bytes_and_runs_nowhere(
    daemon, workers, tmp_path
):
    workers(FLOWS)
    boom_in, boom_ev = tmp_path / "boom-input", tmp_path / "boom-event"
    data_in, data_ev = armed(boom_in), armed(boom_ev)
    daemon.call(lambda c: c.start_workflow("FzEcho", "pickled", data_in))
    wait_until(lambda: describe(daemon, "pickled").status.value == "waiting", message="waiting")
    daemon.call(lambda c: c.get_workflow_handle("pickled").send("give", data_ev))
    result = daemon.call(lambda c: c.get_workflow_handle("pickled").result(timeout=15))
    assert result == {
        "start": data_in,
        "start_type": "bytes",
        "event": data_ev,
        "event_type": "bytes",
    }
    history = daemon.call(lambda c: c.get_workflow_handle("pickled").history())
    assert history and history[-1].kind == "workflow_completed"
    assert not boom_in.exists() and not boom_ev.exists(), "nothing unpickled them"


def test_ext_types_of_other_codes_round_trip_as_ext_types_or_are_refused(daemon, workers, tmp_path):
    workers(FLOWS)
    boom = tmp_path / "boom-ext"
    payload = armed(boom)
    inner = {
        "pickle": msgpack.ExtType(42, payload),
        "zero": msgpack.ExtType(0, b"\x01\x02"),
        "top": msgpack.ExtType(127, b""),
    }
    # Through the SDK: ExtTypes nested in a value are opaque data end to end.
    daemon.call(lambda c: c.start_workflow("FzEcho", "ext-sdk", {"value": inner}))
    wait_until(lambda: describe(daemon, "ext-sdk").status.value == "waiting", message="waiting")
    daemon.call(lambda c: c.get_workflow_handle("ext-sdk").send("give", msgpack.ExtType(2, b"x")))
    result = daemon.call(lambda c: c.get_workflow_handle("ext-sdk").result(timeout=15))
    assert result["start"] == inner and result["start_type"] == "dict"
    assert result["event"] == msgpack.ExtType(2, b"x") and result["event_type"] == "ExtType"

    # On the raw wire: a bare ExtType in place of a wrapped value is stored as data too…
    peer = RawClient(daemon)
    reply = peer.request(
        {
            "kind": "start_workflow",
            "req_id": 1,
            "workflow_type": "FzEcho",
            "workflow_id": "ext-raw",
            "workflow_input": msgpack.ExtType(99, payload),
        }
    )
    assert reply["kind"] == "reply", reply
    # …and a pickle posing as a wrapped value (code VALUE_EXT) is refused as invalid input.
    reply = peer.request(
        {
            "kind": "send",
            "req_id": 2,
            "workflow_id": "ext-raw",
            "event_name": "give",
            "payload": msgpack.ExtType(p.VALUE_EXT, payload),
        }
    )
    assert reply["kind"] == "error" and reply["code"] == "invalid_input", reply
    # …and a reserved (negative) ext code is not even a valid frame: refused, connection closed.
    start = msgpack.packb(
        {"kind": "start_workflow", "req_id": 3, "workflow_type": "FzEcho", "workflow_id": "neg"}
    )
    body = bytes([start[0] + 1]) + start[1:] + msgpack.packb("workflow_input") + b"\xd4\xf9\x00"
    reply = peer.request_raw(body)
    assert reply["kind"] == "error" and reply["code"] == "protocol_error", reply
    assert "not valid msgpack" in reply["message"]
    peer.sock.close()
    wait_until(lambda: describe(daemon, "ext-raw").status.value == "waiting", message="waiting")
    info = describe(daemon, "ext-raw")
    assert info.store["start"] == msgpack.ExtType(99, payload)
    assert info.store["start_type"] == "ExtType"
    assert not boom.exists(), "nothing unpickled it"


# -- the daemon never imports workflow code -----------------------------------------------------


def test_only_worker_processes_import_workflow_modules(daemon, workers, marker_dir):
    assert os.environ["FZ_MARKER_DIR"] in daemon.env()["FZ_MARKER_DIR"]
    w = workers(FLOWS)
    daemon.call(lambda c: c.start_workflow("FzEcho", "imp", 1))
    wait_until(lambda: describe(daemon, "imp").status.value == "waiting", message="waiting")
    daemon.call(lambda c: c.get_workflow_handle("imp").send("give", 2))
    assert daemon.call(lambda c: c.get_workflow_handle("imp").result(timeout=15))["event"] == 2
    first_pid = daemon.pid
    assert daemon.stop() == 0  # recovery is covered too: restart it on the same home
    daemon.start()
    assert describe(daemon, "imp").status.value == "completed"
    pids = {int(f.read_text()) for f in marker_dir.iterdir()}
    assert pids, "the worker imported the flow and marked it"
    assert not {first_pid, daemon.pid} & pids, "the daemon imported workflow code"
    assert pids <= {w.pid} | children(w.pid), (pids, w.pid)
    maps = Path(f"/proc/{daemon.pid}/maps").read_text()
    assert "fz_access" not in maps and "flows" not in maps


def children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(x) for x in text.split()}


# -- helpers ------------------------------------------------------------------------------------


def describe(daemon: Daemon, workflow_id: str):
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).describe())


class RawClient:
    def __init__(self, daemon: Daemon) -> None:
        self.sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(daemon.socket))
        assert self.request(HELLO)["kind"] == "welcome"

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        return self.request_raw(msgpack.packb(msg, use_bin_type=True))

    def request_raw(self, body: bytes) -> dict[str, Any]:
        self.sock.sendall(HEADER.pack(len(body)) + body)
        (n,) = HEADER.unpack(self._exactly(4))
        return msgpack.unpackb(self._exactly(n), raw=False, strict_map_key=False)

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the daemon closed the connection"
            data += chunk
        return data
