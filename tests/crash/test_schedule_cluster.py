"""A schedule in a cluster (two daemons on one PostgreSQL): its partition's owner alone fires it.

Created through the member that does not own it (the request is forwarded), fired every second
for a few seconds: each fire time has exactly one run. When that owner stops, the other member
takes the partition over and the schedule goes on firing there.
"""

from __future__ import annotations

from collections import Counter

import pytest

from grctl_daemon.storage.base import partition_of
from tests.conftest import wait_until
from tests.crash.test_cluster import _balanced, _member, _start_cluster

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def _runs(d, name):
    return Counter(
        w
        for (w,) in d.rows("SELECT workflow_id FROM runs WHERE workflow_id LIKE ?", (f"{name}-%",))
    )


def test_a_schedule_fires_once_per_fire_time_in_a_cluster_and_moves_on_takeover(
    daemon, other, workers
):
    _start_cluster(daemon, other)
    workers("flows.sc_jobs")
    wait_until(lambda: other.status()["workers"], 10, message="the worker reaching member two")
    owned_by_other = {
        p for (p,) in daemon.rows("SELECT id FROM partitions WHERE holder = ?", (_member(other),))
    }
    name = next(f"cl{n}" for n in range(1000) if partition_of(f"cl{n}") in owned_by_other)
    # Sent to the member that does not own it: forwarded to the owner.
    daemon.call(lambda c: c.create_schedule(name, "ScQuick", "* * * * * *", overlap="allow"))
    wait_until(lambda: len(_runs(daemon, name)) >= 4, 15, message="four fires")
    assert set(_runs(daemon, name).values()) == {1}  # one run per fire time, not one per member
    info = other.call(lambda c: c.describe_schedule(name))
    assert info.last_workflow_id is not None

    before = len(_runs(daemon, name))
    assert other.stop() == 0  # its partitions go to the first member, which arms the schedule
    wait_until(lambda: _balanced(daemon, 1), 30, message="one member holding every partition")
    wait_until(lambda: len(_runs(daemon, name)) >= before + 2, 15, message="fires after takeover")
    daemon.call(lambda c: c.delete_schedule(name))
    assert set(_runs(daemon, name).values()) == {1}
