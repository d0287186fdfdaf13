"""Several daemons on one PostgreSQL database: partitions shared, forwarded, taken over, fenced.

- Two members split the 64 partitions; a client of either reaches every run (forwarded to its
  owner), and a worker connected to one serves both (it registers with every member).
- A member joins: the partitions are rebalanced; it stops cleanly: the other takes all back.
- A member is killed (``kill -9``): the other takes its partitions over once its lease ran out,
  and every run resumes and completes, each task's side effect recorded once.
- A member is stopped (SIGSTOP) past its lease while its worker keeps finishing steps: its
  partitions move; resumed, it commits nothing (the fence refuses it) and stops by itself.
- Members on (what they see as) other hosts forward and serve workers over TCP with the token
  and TLS; garbage, missing or wrong tokens and plain TCP at a member's listener are refused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket as socketlib
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from grctl import protocol as p
from grctl.client import Client
from tests.conftest import GRCTL, TESTS, Daemon, wait_until
from tests.crash.support import entries, result, worker_on
from tests.daemon.test_network import TOKEN, free_port, make_ca

LEASE_S = 2.0
RUNS = 30
STEPS = 20
ENV = {"GRCTL_LEASE_TIMEOUT": str(LEASE_S)}
PARTITIONS = 64

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def _cluster(d: Daemon) -> dict[str, Any]:
    return d.status()["cluster"]


def _shares(d: Daemon) -> list[int]:
    """Partitions per member, as the database shows them (one row per member)."""
    return sorted(
        n
        for _, n in d.rows(
            "SELECT holder, count(*) FROM partitions WHERE holder IS NOT NULL GROUP BY 1"
        )
    )


def _holders(d: Daemon) -> dict[str, int]:
    return dict(
        d.rows("SELECT holder, count(*) FROM partitions WHERE holder IS NOT NULL GROUP BY 1")
    )


def _member(d: Daemon) -> str:
    return _cluster(d)["member"]


def _balanced(d: Daemon, n: int) -> bool:
    shares = _shares(d)
    return len(shares) == n and sum(shares) == PARTITIONS and shares[-1] - shares[0] <= 1


def _start_cluster(daemon: Daemon, other: Daemon) -> None:
    daemon.stop()
    daemon.start(env=ENV)
    other.start(env=ENV)
    wait_until(lambda: _balanced(daemon, 2), 6 * LEASE_S + 10, message="two members, balanced")


def _start_runs(d: Daemon, prefix: str, workflow_type: str = "FpCounter") -> list[str]:
    ids = [f"{prefix}-{n}" for n in range(RUNS)]

    async def go(c: Client) -> None:
        await asyncio.gather(*(c.start_workflow(workflow_type, w, {"steps": STEPS}) for w in ids))

    d.call(go)
    return ids


def _ticks(ledger: Path) -> int:
    return sum(1 for op, _, _ in entries(ledger) if op == "tick")


def _check_durable(d: Daemon, ids: list[str]) -> None:
    """Every run completed once: contiguous history, one step_completed per step."""
    for wid in ids:
        ((run_id, history_seq),) = d.rows(
            "SELECT run_id, history_seq FROM runs WHERE workflow_id = ?", (wid,)
        )
        rows = d.rows("SELECT seq, kind FROM history WHERE run_id = ? ORDER BY seq", (run_id,))
        assert [seq for seq, _ in rows] == list(range(1, history_seq + 1)), wid
        kinds = Counter(kind for _, kind in rows)
        assert kinds["step_completed"] == STEPS and kinds["workflow_completed"] == 1, (wid, kinds)


def _check_ticks(ledger: Path, ids: list[str]) -> None:
    ticks = Counter((v[0], int(v[1])) for op, _, v in entries(ledger) if op == "tick")
    assert set(ticks) == {(w, n) for w in ids for n in range(1, STEPS + 1)}
    # A tick whose record was durable never ran again; one in flight at a fault may have.
    assert sum(ticks.values()) <= RUNS * STEPS + RUNS


def _under_way(daemon: Daemon, other: Daemon, workers: Any, ledger: Path, prefix: str):
    """Two members, a worker beside each, RUNS runs started and under way; their ids."""
    _start_cluster(daemon, other)
    workers("flows.fp_counter", env={"LEDGER": str(ledger)})
    worker_on(other, "flows.fp_counter", ledger)
    ids = _start_runs(daemon, prefix)
    wait_until(lambda: _ticks(ledger) >= RUNS, 30, message="the runs under way")
    return ids


def test_two_members_share_the_runs_and_either_answers_for_every_run(
    daemon, other, workers, ledger
):
    _start_cluster(daemon, other)

    def seen() -> list[dict[str, Any]] | None:  # as member two's last renewal saw the cluster
        members = _cluster(other)["members"]
        return members if sorted(m["partitions"] for m in members) == [32, 32] else None

    members = wait_until(seen, 3 * LEASE_S, message="the cluster in daemon status")
    assert all(m["lease_left_ms"] > 0 for m in members)
    # One worker, on the first daemon's home: it registers with the second member too.
    workers("flows.fp_counter", env={"LEDGER": str(ledger)})
    wait_until(lambda: other.status()["workers"], 10, message="the worker reaching member two")

    ids = _start_runs(other, "both")  # through the second daemon, whoever owns each run
    owners = {
        wid: holder
        for wid, holder in other.rows(
            "SELECT r.workflow_id, p.holder FROM runs r JOIN partitions p ON p.id = r.partition"
        )
    }
    assert len(set(owners.values())) == 2  # the runs are spread over both members
    for n, wid in enumerate(ids):
        via = daemon if n % 2 else other
        assert result(via, wid, timeout=60) == {"count": STEPS}, wid
    _check_durable(daemon, ids)
    _check_ticks(ledger, ids)
    # Reads of a run the other member owns are forwarded, history included.
    for wid in ids[:4]:
        for via in (daemon, other):
            events = via.call(lambda c, w=wid: c.get_workflow_handle(w).history())
            assert sum(e.kind == "step_completed" for e in events) == STEPS
    # daemon status shows the cluster: members, partitions, leases, workers per member.
    cluster = _cluster(daemon)
    assert {m["name"] for m in cluster["members"]} == {_member(daemon), _member(other)}
    wait_until(  # what the others publish of themselves is as of their last renewal
        lambda: [m["workers"] for m in _cluster(daemon)["members"]] == [1, 1],
        3 * LEASE_S,
        message="one worker on each member",
    )


def test_members_rebalance_when_one_joins_and_when_one_leaves(daemon, other):
    daemon.stop()
    daemon.start(env=ENV)
    wait_until(lambda: _shares(daemon) == [PARTITIONS], 10, message="one member holding all")
    other.start(env=ENV)
    wait_until(lambda: _balanced(daemon, 2), 6 * LEASE_S + 10, message="rebalanced on join")
    left = time.monotonic()
    assert other.stop() == 0
    # A clean stop hands the partitions back at once: taken within a tick, not a lease.
    wait_until(lambda: _shares(daemon) == [PARTITIONS], 3 * LEASE_S, message="all back")
    assert time.monotonic() - left < 2 * LEASE_S
    assert [m["name"] for m in _cluster(daemon)["members"]] == [_member(daemon)]


def test_a_killed_member_is_taken_over_and_its_runs_complete(daemon, other, workers, ledger):
    ids = _under_way(daemon, other, workers, ledger, "kill")

    daemon.kill9()
    killed = time.monotonic()
    wait_until(lambda: _shares(other) == [PARTITIONS], 4 * LEASE_S + 10, message="the takeover")
    assert time.monotonic() - killed < LEASE_S + 5  # within the lease (and a tick)
    assert list(_holders(other)) == [_member(other)]
    for wid in ids:
        assert result(other, wid, timeout=60) == {"count": STEPS}, wid
    _check_durable(other, ids)
    _check_ticks(ledger, ids)
    daemon.proc = None  # killed on purpose: the fixture must not stop it


@pytest.mark.serial  # a lease-timed SIGSTOP: both cores keep its timing honest
def test_a_member_stopped_past_its_lease_is_fenced_when_it_resumes(daemon, other, workers, ledger):
    ids = _under_way(daemon, other, workers, ledger, "stop")
    paused = _member(daemon)

    os.kill(daemon.pid, signal.SIGSTOP)  # its worker goes on finishing the steps it holds
    try:
        wait_until(lambda: _shares(other) == [PARTITIONS], 4 * LEASE_S + 10, message="the takeover")
        for wid in ids:
            assert result(other, wid, timeout=60) == {"count": STEPS}, wid
        batches = other.rows("SELECT count(*) FROM history")
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    # Resumed, it finds its member row gone or its batch fenced, and stops by itself.
    assert daemon.wait_dead(30) == 1
    text = daemon.log.read_text()
    assert "lost its partitions" in text or "no longer holds" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    # Nothing it decided landed: no member row, no partition, and every run's durable
    # history is whole, each step counted once, and unchanged since the takeover finished.
    assert paused not in _holders(other)
    assert not other.rows("SELECT 1 FROM members WHERE holder = ?", (paused,))
    assert other.rows("SELECT count(*) FROM history") == batches
    _check_durable(other, ids)
    daemon.allow_tracebacks = True  # it exited by itself; nothing left to stop


def test_members_on_other_hosts_talk_tls_with_the_token_and_refuse_bad_peers(
    daemon, other, ledger, tmp_path
):
    """Two members that see each other as remote (GRCTL_MEMBER_HOST differs): requests are
    forwarded, and a worker of one reaches the other, over TCP with the token and TLS; bad
    peers at a member's listener are refused and the cluster keeps serving."""
    make_ca(tmp_path, "ca")
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    common = {
        **ENV,
        "GRCTL_TOKEN_FILE": str(token),
        "GRCTL_TLS_CERT": str(tmp_path / "ca-server.pem"),
        "GRCTL_TLS_KEY": str(tmp_path / "ca-server.key"),
        "GRCTL_TLS_CA": str(tmp_path / "ca.pem"),
    }
    addresses = {}
    for d, host in ((daemon, "host-a"), (other, "host-b")):
        addresses[host] = f"127.0.0.1:{free_port()}"
        if d.proc is not None:
            d.stop()
        d.start(env={**common, "GRCTL_MEMBER_HOST": host, "GRCTL_LISTEN": addresses[host]})
    wait_until(lambda: _balanced(daemon, 2), 6 * LEASE_S + 10, message="two members, balanced")
    assert {m["address"] for m in _cluster(other)["members"]} == set(addresses.values())

    # Bad peers at member A's listener: garbage, no token, a wrong token, plain TCP to TLS.
    host, port = addresses["host-a"].rsplit(":", 1)
    for sent in (
        b"\x00\x00\x00\x05hello",
        p.encode(p.Hello(p.PROTOCOL_VERSION, "client")),
        p.encode(p.Hello(p.PROTOCOL_VERSION, "daemon", token="wrong")),
    ):
        with socketlib.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(sent)  # not TLS: the handshake fails, logged, connection closed
            s.settimeout(10)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
    wait_until(lambda: "TLS handshake with 127.0.0.1" in daemon.log.read_text(), 10)

    # A worker of member B's home (its seed is B's socket): it reaches A over TCP + TLS.
    env = {"LEDGER": str(ledger), "GRCTL_MEMBER_HOST": "host-b", "GRCTL_TOKEN": TOKEN}
    env["GRCTL_TLS_CA"] = str(tmp_path / "ca.pem")
    out = open(other.home / "worker.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [GRCTL, "worker", "flows.fp_counter", "--home", str(other.home)],
        cwd=TESTS,
        env=other.env(env),
        stdout=out,
        stderr=out,
        stdin=subprocess.DEVNULL,
    )
    out.close()
    other.started.append(proc)
    wait_until(lambda: daemon.status()["workers"], 20, message="the worker reaching A by TCP")

    ids = _start_runs(other, "tls")  # A's runs forwarded from B over TLS
    for wid in ids:
        assert result(other, wid, timeout=60) == {"count": STEPS}, wid
    _check_durable(daemon, ids)
    text = daemon.log.read_text()
    assert "Traceback" not in text and TOKEN not in text, text[-3000:]
