"""The daemon over TCP (SPEC 6, "Network access"): a token on every TCP connection, TLS optional.

- A run goes end to end over TCP: the client starts it by address and token, a ``grctl worker
  --address --token-file`` runs it, the CLI reads its result with ``--address`` and
  ``GRCTL_TOKEN`` (or ``GRCTL_ADDRESS``), from a home with no daemon, so nothing took the socket.
- Refused in one clear error, each logged once with the peer's address and never the token: no
  token, a wrong token, garbage frames, a TLS client on a plain listener, a plain client (with
  the right token) on a TLS listener, a CA that did not sign the daemon's certificate. After
  all of them the daemon still serves: a run completes, and daemon.log holds no traceback.
- TLS end to end with a CA made here by the ``openssl`` command line.
- The daemon refuses ``--listen`` without a token, saying how to make one.
"""

from __future__ import annotations

import asyncio
import shutil
import socket as socketlib
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grctl import codec
from grctl import protocol as p
from grctl.client import Client
from grctl.errors import DaemonUnavailableError, UnauthorizedError
from grctl.worker import Worker
from tests.cli.conftest import Result, run_grctl
from tests.conftest import GRCTL, TESTS, Daemon, _accepts, wait_until

TOKEN = "s3cret-token-for-tests-" + "x" * 20
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


# -- fixtures -----------------------------------------------------------------------------------


def free_port() -> int:
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(folder: Path, name: str) -> None:
    """A CA (``{name}.pem``, ``{name}.key``) and a certificate it signs for 127.0.0.1."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
    openssl(
        "req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    (folder / f"{name}-server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}-server.key", "-out", f"{name}-server.csr", "-subj", "/CN=127.0.0.1",
        cwd=folder,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}-server.csr", "-CA", f"{name}.pem", "-CAkey",
        f"{name}.key", "-CAcreateserial", "-out", f"{name}-server.pem", "-days", "2",
        "-extfile", f"{name}-server.ext",
        cwd=folder,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs() -> Iterator[Path]:
    """``ca`` signs the daemon's certificate (``ca-server.pem``); ``other`` is a stranger CA."""
    folder = Path(tempfile.mkdtemp(prefix="grctl-tls-", dir="/tmp"))
    make_ca(folder, "ca")
    make_ca(folder, "other")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class NetDaemon(Daemon):
    """A daemon started with ``--listen`` on a free port, a token file and maybe TLS."""

    def __init__(self, home: Path, tls: Path | None = None) -> None:
        super().__init__(home)
        self.address = f"127.0.0.1:{free_port()}"
        self.token_file = home / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)
        self.flags = ["--listen", self.address, "--token-file", str(self.token_file)]
        if tls is not None:
            self.flags += ["--tls-cert", str(tls / "ca-server.pem")]
            self.flags += ["--tls-key", str(tls / "ca-server.key")]

    def start(self, env: dict[str, str] | None = None, wait: bool = True) -> NetDaemon:
        with open(self.home / "daemon.out", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "grctl_daemon", "--home", str(self.home), "--quiet"]
                + self.flags,
                env=self.env(env),
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        wait_until(
            lambda: self.proc.poll() is not None or _accepts(self.socket), 15, message="socket"
        )
        assert self.proc.poll() is None, (self.home / "daemon.out").read_text()
        # Served on the socket means started: the TCP listener is bound by then.
        assert self.status()["listen"]["address"] == self.address
        return self

    def log_lines(self, needle: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if needle in line]


def net_daemon(tls: Path | None) -> Iterator[NetDaemon]:
    home = Path(tempfile.mkdtemp(prefix="grctl-net-", dir="/tmp"))
    home.chmod(0o700)
    d = NetDaemon(home, tls).start()
    try:
        yield d
    finally:
        code = d.stop()
        text = d.log.read_text()
        shutil.rmtree(home, ignore_errors=True)
        assert code == 0, f"daemon exited {code}"
        assert "Traceback" not in text, text
        assert TOKEN not in text, "the token must never be logged"


@pytest.fixture
def plain() -> Iterator[NetDaemon]:
    yield from net_daemon(None)


@pytest.fixture
def tls(certs: Path) -> Iterator[NetDaemon]:
    yield from net_daemon(certs)


@pytest.fixture
def elsewhere() -> Iterator[Path]:
    """A home with no daemon: whatever works from here went over TCP."""
    path = Path(tempfile.mkdtemp(prefix="grctl-away-", dir="/tmp"))
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_worker(d: NetDaemon, home: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``grctl worker flows.basic --address … --token-file …``; waits until it registered."""
    before = len(d.status()["workers"])
    cmd = [GRCTL, "worker", "flows.basic", "--address", d.address, "--token-file"]
    cmd += [str(d.token_file), *extra]
    with open(home / "worker.log", "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=TESTS,
            env=d.env({"GRCTL_HOME": str(home)}),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until(
            lambda: proc.poll() is not None or len(d.status()["workers"]) > before,
            15,
            message="worker registration over TCP",
        )
        assert proc.poll() is None, (home / "worker.log").read_text()
    except BaseException:
        proc.kill()  # never leave a worker reconnecting after the test
        proc.wait(10)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        code = proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait(10)
    assert code == 0


def over_tcp(d: NetDaemon, fn: Any, **connect: Any) -> Any:
    """Run ``fn(client)`` on a client connected by address (token and CA as given)."""

    async def go() -> Any:
        client = await Client.connect(address=d.address, **connect)
        try:
            return await asyncio.wait_for(fn(client), 30)
        finally:
            await client.close()

    return asyncio.run(go())


def refused(d: NetDaemon, **connect: Any) -> BaseException:
    """The error a client connecting by address gets."""
    try:
        over_tcp(d, lambda c: c.daemon_status(), **connect)
    except (UnauthorizedError, DaemonUnavailableError) as exc:
        return exc
    raise AssertionError(f"connected with {connect}")


def one_line_error(r: Result) -> str:
    assert r.code == 1, r
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r
    return r.err


def run_to_completion(d: NetDaemon, **connect: Any) -> Any:
    """Start a BasicOrder by address, approve it, and return its result."""
    workflow_id = f"net-{uuid.uuid4().hex[:8]}"

    async def go(c: Client) -> Any:
        handle = await c.start_workflow("BasicOrder", workflow_id, {"order_id": workflow_id})
        await handle.send("approve")
        return await handle.result(timeout=15)

    return workflow_id, over_tcp(d, go, token=TOKEN, **connect)


# -- tests --------------------------------------------------------------------------------------


def test_a_run_goes_end_to_end_over_tcp_with_a_token(plain: NetDaemon, elsewhere: Path):
    worker = start_worker(plain, elsewhere)
    try:
        workflow_id, result = run_to_completion(plain)
        assert result == {"txn": f"txn-{workflow_id}"}
        env = {"GRCTL_TOKEN": TOKEN}
        r = run_grctl("result", workflow_id, "--address", plain.address, "--json", home=elsewhere, env=env)  # fmt: skip
        assert r.code == 0, r
        assert r.json()["result"] == result
        r = run_grctl(
            "describe", workflow_id, "--json", home=elsewhere,
            env={**env, "GRCTL_ADDRESS": plain.address},
        )  # fmt: skip
        assert r.code == 0 and r.json()["status"] == "completed", r
        r = run_grctl("daemon", "status", "--json", "--address", plain.address, home=elsewhere, env=env)  # fmt: skip
        assert r.code == 0, r
        status = r.json()
        assert status["listen"] == {"address": plain.address, "tls": False}
        assert [w["workflow_types"] for w in status["workers"]] == [["BasicOrder"]]
    finally:
        stop(worker)


def test_no_token_a_wrong_token_and_garbage_are_refused_and_the_daemon_keeps_serving(
    plain: NetDaemon, elsewhere: Path, certs: Path
):
    exc = refused(plain)
    assert isinstance(exc, UnauthorizedError) and exc.code == "unauthorized"
    assert "GRCTL_TOKEN or --token-file" in str(exc)
    exc = refused(plain, token="not-the-token")
    assert isinstance(exc, UnauthorizedError)
    assert str(exc) == "the daemon refused the token; check GRCTL_TOKEN or --token-file"
    assert len(plain.log_lines("refused a client connection from 127.0.0.1:")) == 2
    assert len(plain.log_lines(": no token")) == 1 and len(plain.log_lines(": wrong token")) == 1

    # The CLI: one line, exit 1, what to do next.
    err = one_line_error(run_grctl("list", "--address", plain.address, home=elsewhere))
    assert "the daemon wants a token" in err
    env = {"GRCTL_TOKEN": "wrong", "GRCTL_ADDRESS": plain.address}
    err = one_line_error(run_grctl("list", home=elsewhere, env=env))
    assert "check GRCTL_TOKEN or --token-file" in err
    port = free_port()
    err = one_line_error(
        run_grctl("list", "--address", f"127.0.0.1:{port}", home=elsewhere, env=env)
    )
    assert f"connection refused); is the daemon started with --listen 127.0.0.1:{port}?" in err
    r = run_grctl("list", "--address", "nowhere", home=elsewhere)
    assert r.code == 2 and "is not HOST:PORT" in r.err, r

    # Raw sockets: garbage, an oversized first frame, a request instead of a hello, a tokenless
    # hello followed by a request. Each gets one error frame and the connection closes.
    host, port = plain.address.rsplit(":", 1)
    start = p.encode(p.StartWorkflow(1, "BasicOrder", "sneaky", p.wrap_value({"order_id": "x"})))
    for sent, code in [
        (b"\x00\x00\x00\x05hello", "protocol_error"),
        (b"\x7f\xff\xff\xff" + b"\x00" * 1000, "protocol_error"),
        (start, "protocol_error"),
        (p.encode(p.Hello(p.PROTOCOL_VERSION, "client")) + start, "unauthorized"),
    ]:
        with socketlib.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(sent)
            answer = read_all(s)
        frames = frames_of(answer)
        assert [f.kind for f in frames] == ["error"] and frames[0].code == code, (sent, frames)
    assert len(plain.log_lines("from 127.0.0.1:")) == 2 + 2 + 3 + 1

    # TLS to a plain listener: the client says what to change; the daemon logs one line.
    exc = refused(plain, token=TOKEN, tls_ca=certs / "ca.pem")
    assert "connect without --tls-ca" in str(exc), exc

    # Nothing of the above got in: no run 'sneaky'; and the daemon still serves everyone.
    assert plain.status()["runs"] == {}
    worker = start_worker(plain, elsewhere)
    try:
        workflow_id, result = run_to_completion(plain)
        assert result == {"txn": f"txn-{workflow_id}"}
    finally:
        stop(worker)


def read_all(s: socketlib.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def frames_of(data: bytes) -> list[Any]:
    async def go() -> list[Any]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        out = []
        while (body := await codec.read_frame(reader)) is not None:
            out.append(p.decode(body))
        return out

    return asyncio.run(go())


def test_tls_end_to_end_and_clients_that_do_not_match_it(
    tls: NetDaemon, elsewhere: Path, certs: Path
):
    ca = str(certs / "ca.pem")
    worker = start_worker(tls, elsewhere, "--tls-ca", ca)
    try:
        workflow_id, result = run_to_completion(tls, tls_ca=ca)
        assert result == {"txn": f"txn-{workflow_id}"}
        env = {"GRCTL_TOKEN": TOKEN, "GRCTL_TLS_CA": ca}
        r = run_grctl("result", workflow_id, "--address", tls.address, "--json", home=elsewhere, env=env)  # fmt: skip
        assert r.code == 0 and r.json()["result"] == result, r
        r = run_grctl("daemon", "status", "--address", tls.address, home=elsewhere, env=env)
        assert r.code == 0 and f"{tls.address} (TLS, token)" in r.out, r

        # A plain client, right token: its hello is no TLS handshake. One line each side.
        exc = refused(tls, token=TOKEN)
        assert isinstance(exc, DaemonUnavailableError)
        assert "connect with --tls-ca CA_FILE or GRCTL_TLS_CA" in str(exc), exc
        wait_until(lambda: tls.log_lines("TLS handshake with 127.0.0.1:"), 5)
        assert len(tls.log_lines("TLS handshake with 127.0.0.1:")) == 1
        err = one_line_error(
            run_grctl("list", "--address", tls.address, home=elsewhere, env={"GRCTL_TOKEN": TOKEN})
        )
        assert "--tls-ca" in err

        # A CA that did not sign the daemon's certificate: the client refuses the daemon.
        exc = refused(tls, token=TOKEN, tls_ca=certs / "other.pem")
        assert "failed TLS verification" in str(exc), exc
        # TLS and the right CA but a wrong token: refused like on a plain listener.
        exc = refused(tls, token="wrong", tls_ca=ca)
        assert isinstance(exc, UnauthorizedError)
        wait_until(lambda: len(tls.log_lines("TLS handshake with 127.0.0.1:")) == 3, 5)

        # Still serving, over TLS and on the socket.
        workflow_id, result = run_to_completion(tls, tls_ca=ca)
        assert result == {"txn": f"txn-{workflow_id}"}
        assert tls.call(lambda c: c.get_workflow_handle(workflow_id).result()) == result
    finally:
        stop(worker)


def test_listen_without_a_token_is_refused_saying_how_to_make_one(elsewhere: Path, certs: Path):
    port = free_port()
    r = run_grctl("daemon", "start", "--listen", f"127.0.0.1:{port}", home=elsewhere)
    err = one_line_error(r)
    assert "needs a token" in err and "secrets.token_urlsafe(32)" in err, r
    assert "chmod 600" in err
    r = run_grctl(
        "daemon", "start", "--listen", f"127.0.0.1:{port}", "--token-file", str(certs / "none"),
        home=elsewhere,
    )  # fmt: skip
    assert "cannot read the token file" in one_line_error(r)
    proc = subprocess.run(
        [sys.executable, "-m", "grctl_daemon", "--home", str(elsewhere), "--tls-cert", "x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "--listen" in proc.stderr


def test_the_sdk_worker_takes_address_token_and_ca(tls: NetDaemon, certs: Path):
    from tests.flows.basic import order

    async def go() -> Any:
        worker = Worker(
            [order], address=tls.address, token=TOKEN, tls_ca=certs / "ca.pem", concurrency=4
        )
        serving = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.registered.wait(), 10)
        client = await Client.connect(address=tls.address, token=TOKEN, tls_ca=certs / "ca.pem")
        try:
            handle = await client.start_workflow("BasicOrder", "sdk-1", {"order_id": "sdk-1"})
            await handle.send("approve")
            return await handle.result(timeout=15)
        finally:
            await client.close()
            await worker.stop()
            await serving

    assert asyncio.run(go()) == {"txn": "txn-sdk-1"}
