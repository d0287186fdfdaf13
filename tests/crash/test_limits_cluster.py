"""``max_concurrent_runs`` in a cluster of several daemons: N across every member.

The slots are rows of ``type_slots`` in the shared PostgreSQL database; a member claims one
before it dispatches a run of a limited type and gives it back once the step's outcome is
committed. ``LimSlots`` (tests/flows/lim_slots.py) writes ``begin``/``end`` to its worker's
ledger around a barrier the test releases: a run can only end once released, so at most N
begins beyond the releases prove at most N steps at once.

- Two members, workers beside each, N=2, 8 runs spread over both members' partitions: never
  more than 2 begun beyond those released, and all complete.
- A member is killed (``kill -9``) while its runs hold slots: its rows come back when it is
  taken over, and every run completes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import Daemon, read_ledger, wait_until
from tests.crash.support import result, worker_on
from tests.crash.test_cluster import LEASE_S, _member, _shares, _start_cluster
from tests.daemon.test_limits import start_runs

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

FLOWS = "flows.lim_slots"
PARTITIONS = 64
SETTLE_S = 1.0  # long enough for a third run to begin, were a slot wrongly free


def _begins(*homes: Daemon) -> list[str]:
    lines = [ln for d in homes for ln in read_ledger(d.home / "ledger.txt")]
    return [ln.split()[1] for ln in lines if ln.startswith("begin ")]


def _release(homes: tuple[Daemon, ...], wf_id: str) -> None:
    for d in homes:  # a worker waits at the barrier of its own home
        (d.home / f"go-{wf_id}").touch()


def _held(d: Daemon) -> list[str]:
    return [h for (h,) in d.rows("SELECT holder FROM type_slots WHERE holder IS NOT NULL")]


def _owners(d: Daemon, ids: list[str]) -> dict[str, str]:
    rows = d.rows(
        "SELECT r.workflow_id, p.holder FROM runs r JOIN partitions p ON p.id = r.partition"
    )
    return {wid: holder for wid, holder in rows if wid in ids}


def _two_members(daemon: Daemon, other: Daemon, workers: Any) -> tuple[Daemon, ...]:
    _start_cluster(daemon, other)
    workers(FLOWS, concurrency=4, env={"LIM_N": "2"})
    worker_on(other, FLOWS, other.home / "ledger.txt")
    return daemon, other


def test_two_members_run_at_most_n_of_a_type_at_once(
    daemon: Daemon, other: Daemon, workers: Any
) -> None:
    homes = _two_members(daemon, other, workers)
    ids = [f"c{i}" for i in range(8)]
    start_runs(daemon, ids)
    assert len(set(_owners(daemon, ids).values())) == 2  # the runs are spread over both members

    released: list[str] = []
    for _ in ids:
        want = min(len(released) + 2, len(ids))
        wait_until(lambda want=want: len(_begins(*homes)) >= want, 20, message=f"{want} begins")
        time.sleep(SETTLE_S if len(released) < 2 else 0.2)
        begun = _begins(*homes)
        assert len(begun) == want, (begun, released)  # never more than 2 beyond the released
        assert len(_held(daemon)) <= 2
        wf_id = next(w for w in begun if w not in released)
        released.append(wf_id)
        _release(homes, wf_id)
    for wid in ids:
        assert result(daemon, wid, timeout=30) == {"done": wid}
    assert sorted(_begins(*homes)) == sorted(ids)  # each ran once
    # The runs belonged to both members: each dispatched its own with the shared slots.
    assert set(_owners(daemon, ids).values()) == {_member(daemon), _member(other)}
    wait_until(lambda: _held(daemon) == [], 10, message="every slot given back")


def test_a_killed_member_holding_slots_gives_them_back_at_takeover(
    daemon: Daemon, other: Daemon, workers: Any
) -> None:
    homes = _two_members(daemon, other, workers)
    ids = [f"k{i}" for i in range(6)]
    start_runs(daemon, ids)
    wait_until(lambda: len(_begins(*homes)) >= 2, 20, message="two runs begin")
    time.sleep(SETTLE_S)
    assert len(_begins(*homes)) == 2
    held = _held(daemon)
    assert len(held) == 2
    victim, survivor = (daemon, other) if _member(daemon) in held else (other, daemon)
    gone = _member(victim)

    victim.kill9()
    wait_until(lambda: _shares(survivor) == [PARTITIONS], 4 * LEASE_S + 10, message="takeover")
    for wid in ids:
        _release(homes, wid)
    for wid in ids:
        assert result(survivor, wid, timeout=30) == {"done": wid}, wid
    assert gone not in _held(survivor)
    wait_until(lambda: _held(survivor) == [], 10, message="every slot given back")
    victim.proc = None  # killed on purpose: the fixture must not stop it
