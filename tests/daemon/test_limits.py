"""Per-type concurrency (``Workflow(max_concurrent_runs=N)``, SPEC 7) against the real daemon.

Real worker processes (several, each with room for more than N steps) run ``LimSlots``
(tests/flows/lim_slots.py), whose step writes ``begin``/``end`` to the ledger around a barrier
the test releases; the ledger proves at most N overlap and the order runs got their slots.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from grctl.errors import WorkflowDefinitionError
from grctl.worker.context import Context
from grctl.workflow import Workflow
from grctl_daemon.definitions import definition_problem
from tests.cli.conftest import run_grctl
from tests.conftest import Daemon, Worker, read_ledger, wait_until

pytestmark = pytest.mark.backends

FLOWS = "flows.lim_slots"


def release(daemon: Daemon, name: str) -> None:
    (daemon.home / name).touch()


def begins(daemon: Daemon) -> list[tuple[str, str]]:
    lines = read_ledger(daemon.home / "ledger.txt")
    return [(ln.split()[1], ln.split()[2]) for ln in lines if ln.startswith("begin ")]


def max_overlap(daemon: Daemon, lost_pids: set[str] = frozenset()) -> int:  # type: ignore[assignment]
    """The most steps between ``begin`` and ``end`` at once (steps of killed workers ignored)."""
    running, most = 0, 0
    for line in read_ledger(daemon.home / "ledger.txt"):
        kind, *rest = line.split()
        if kind in ("begin", "end") and rest[1] in lost_pids:
            continue
        running += {"begin": 1, "end": -1}.get(kind, 0)
        most = max(most, running)
    return most


def start_runs(daemon: Daemon, ids: list[str]) -> None:
    async def go(c: Any) -> None:
        for wf_id in ids:  # one at a time: the arrival order is ids' order
            await c.start_workflow(workflow_type="LimSlots", workflow_id=wf_id, workflow_input={})

    daemon.call(go)


def results(daemon: Daemon, ids: list[str]) -> list[Any]:
    async def go(c: Any) -> list[Any]:
        return [await c.get_workflow_handle(i).result() for i in ids]

    return daemon.call(go)


def describe(daemon: Daemon, wf_id: str) -> Any:
    return daemon.call(lambda c: c.get_workflow_handle(wf_id).describe())


def test_at_most_n_in_arrival_order_smallest_limit_wins(
    daemon: Daemon, workers: Callable[..., Worker]
) -> None:
    # Three workers with room for 4 steps each declare 4, 2 and 3: the smallest (2) holds.
    for n in ("4", "2", "3"):
        workers(FLOWS, concurrency=4, env={"LIM_N": n})
    ids = [f"r{i}" for i in range(8)]
    start_runs(daemon, ids)
    wait_until(lambda: len(begins(daemon)) == 2, message="the first two runs begin")

    info = describe(daemon, "r7")
    assert info.waiting_for_slot == {"limit": 2, "executing": 2, "ahead": 5}
    assert describe(daemon, "r2").waiting_for_slot == {"limit": 2, "executing": 2, "ahead": 0}
    assert describe(daemon, "r0").waiting_for_slot is None
    shown = run_grctl("describe", "r7", home=daemon.home)
    assert shown.code == 0, shown
    assert "waiting for a slot: 2 of 2 runs of LimSlots are executing a step; 5 ahead" in " ".join(
        shown.out.split()
    )
    as_json = run_grctl("describe", "r7", "--json", home=daemon.home)
    assert as_json.code == 0, as_json
    assert as_json.json()["waiting_for_slot"] == {"limit": 2, "executing": 2, "ahead": 5}

    # One barrier at a time: each release frees one slot, which goes to the head of the queue.
    for i, wf_id in enumerate(ids):
        release(daemon, f"go-{wf_id}")
        want = min(i + 3, len(ids))
        wait_until(lambda want=want: len(begins(daemon)) == want, message=f"{want} begins")
    assert results(daemon, ids) == [{"done": i} for i in ids]
    order = [wf_id for wf_id, _ in begins(daemon)]
    # The first two got their slots together and run on different workers: either may write
    # its ``begin`` first. Each later one got the slot its predecessor's release freed.
    assert sorted(order[:2]) == ids[:2] and order[2:] == ids[2:], order
    assert max_overlap(daemon) == 2
    assert len({pid for _, pid in begins(daemon)}) >= 2  # the runs really spread over workers


def test_worker_killed_holding_a_slot_frees_it(
    daemon: Daemon, workers: Callable[..., Worker]
) -> None:
    pool = [workers(FLOWS, concurrency=4, env={"LIM_N": "1"}) for _ in range(2)]
    start_runs(daemon, ["k0", "k1"])
    wait_until(lambda: len(begins(daemon)) == 1, message="k0 begins")
    assert begins(daemon)[0][0] == "k0"
    assert describe(daemon, "k1").waiting_for_slot == {"limit": 1, "executing": 1, "ahead": 0}

    holder_pid = begins(daemon)[0][1]
    victim = next(w for w in pool if str(w.pid) == holder_pid)
    victim.kill9()
    # The lost step's slot is free at once: the waiting run (k1) gets it, then k0 runs again.
    wait_until(lambda: len(begins(daemon)) == 2, message="a second begin after the kill")
    assert begins(daemon)[1] == ("k1", begins(daemon)[1][1])
    assert begins(daemon)[1][1] != holder_pid
    assert describe(daemon, "k0").waiting_for_slot == {"limit": 1, "executing": 1, "ahead": 0}
    release(daemon, "go-k1")
    wait_until(lambda: len(begins(daemon)) == 3, message="k0 re-dispatched")
    assert begins(daemon)[2][0] == "k0"
    release(daemon, "go-k0")
    assert results(daemon, ["k0", "k1"]) == [{"done": "k0"}, {"done": "k1"}]
    assert max_overlap(daemon, {holder_pid}) == 1
    assert describe(daemon, "k0").attempt >= 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True])
def test_limit_is_validated_at_definition_time(bad: Any) -> None:
    with pytest.raises(WorkflowDefinitionError, match="max_concurrent_runs must be a whole"):
        Workflow(workflow_type="Bad", max_concurrent_runs=bad)
    assert Workflow(workflow_type="Ok", max_concurrent_runs=1).max_concurrent_runs == 1


def test_daemon_refuses_a_bad_limit_on_the_wire() -> None:
    wf = Workflow(workflow_type="Wire", max_concurrent_runs=3)

    @wf.start()
    async def wire_start(ctx: Context) -> Any:
        return ctx.next.complete(None)

    definition = wf.definition()
    assert definition["max_concurrent_runs"] == 3
    assert definition_problem(definition) is None
    for bad in (0, "3", 2.5):
        problem = definition_problem({**definition, "max_concurrent_runs": bad})
        assert problem and "max_concurrent_runs" in problem
