"""``max_concurrent_runs`` in a cluster of several daemons: refused rather than exceeded.

Each member dispatches the runs of its own partitions and counts its own slots, so N per member
would let the type run N times per member. Until slots are shared across members, a worker
declaring a limit is refused by a cluster of two, with a message that says why and what to do.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Daemon, wait_until
from tests.crash.test_cluster import LEASE_S, _balanced, _start_cluster

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def test_a_cluster_of_two_refuses_a_worker_declaring_a_limit(
    daemon: Daemon, other: Daemon, workers: Any
) -> None:
    _start_cluster(daemon, other)
    assert _balanced(daemon, 2)
    w = workers("flows.lim_slots", wait=False)
    code = wait_until(lambda: w.proc.poll() is not None and (w.proc.returncode,), 15 + LEASE_S)
    assert code[0] != 0
    out = w.output()
    assert "max_concurrent_runs (on LimSlots) is not supported by a cluster of several" in out
    assert "run one daemon for these types, or remove the limit" in out
    assert len(daemon.status()["workers"]) == 0
    workers("flows.fp_counter")  # a worker without limits is served as before
