"""Partitions changing hands: what the runtime does when it gains or hands over runs.

A daemon alone owns every partition and none of this happens. In a cluster (several daemons on
one PostgreSQL database, ``storage/postgres_cluster.py``) the storage tells the runtime:

- ``gained``: partitions it now holds. Their runs with a step to run are queued for workers
  (read back as workers take them) and their timers and schedules armed, as at start-up.
- ``releasing``: partitions it hands over (rebalancing). From then on requests for their runs
  are refused with ``not_owner`` (the server forwards them to the new owner); steps in flight
  on workers may still report for a moment (``HANDOVER_WAIT``), then every unit queued is made
  durable, and their runs leave memory. Result waits and followed histories of those runs end
  with ``not_owner`` too, and the server carries them on at the new owner.

Workers are told about the other members (``protocol.Members``) so that each registers with
every daemon, and each daemon reaches workers for the runs it owns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from grctl import protocol as p
from grctl.errors import NotOwnerError
from grctl_daemon.engine import transitions as tr
from grctl_daemon.storage import base as rec
from grctl_daemon.timers import now_ms

if TYPE_CHECKING:
    from grctl_daemon.runtime import Runtime

log = logging.getLogger("grctl.daemon")

READY_SCAN_PAGE = 1000
HANDOVER_POLL_S = 0.05  # while steps of partitions being handed over finish on workers


class Ownership:
    """The ownership half of the Runtime (a mixin: see ``runtime/__init__.py``)."""

    def owns(self: Runtime, partition: int) -> bool:
        return partition in self.storage.owned and partition not in self.leaving

    def not_owner(self: Runtime, partition: int, **ids: Any) -> NotOwnerError:
        return NotOwnerError(
            f"partition {partition} is owned by another daemon of the cluster",
            details={"partition": partition},
            **ids,
        )

    def check_owned(self: Runtime, partition: int, workflow_id: str | None = None) -> None:
        if not self.owns(partition):
            raise self.not_owner(partition, workflow_id=workflow_id)

    # -- gaining --------------------------------------------------------------------------------

    async def gained(self: Runtime, partitions: set[int]) -> None:
        self.leaving -= partitions
        for t in await self.storage.due_timers(0, self.timers.horizon_ms, frozenset(partitions)):
            self.timers.arm(t.run_id, t.kind, t.due_ms, t.token)
        await self.arm_schedules(frozenset(partitions))
        self.spawn(self.scan_ready(frozenset(partitions)))
        self.publish()

    async def scan_ready(self: Runtime, partitions: frozenset[int] | None = None) -> None:
        """Queue every run with a step to run (in flight when its owner stopped, or queued)."""
        after, queued = "", 0
        while True:
            page = await self.storage.ready_runs(after, READY_SCAN_PAGE, partitions)
            for run_id, workflow_type in page:
                # A cached one is handled, unless a request read it in since the takeover
                # (reads do not dispatch): then it waits here too.
                state = self.cache.get(run_id)
                if state is None or tr.ready(state):
                    self.dispatcher.enqueue(workflow_type, run_id)
                    queued += 1
            self.drain_all()
            if len(page) < READY_SCAN_PAGE:
                break
            after = page[-1][0]
        if queued:
            log.info("queued %d runs with a step to run", queued)

    # -- handing over ---------------------------------------------------------------------------

    async def releasing(self: Runtime, partitions: set[int]) -> None:
        self.leaving |= partitions  # no new request, step or timer of theirs is decided on
        deadline = time.monotonic() + self.config.lease_timeout_s / 4
        while time.monotonic() < deadline and self._in_flight(partitions):
            await asyncio.sleep(HANDOVER_POLL_S)
        # Out of memory, so a late step result is stale; then a barrier: units commit in
        # order, so once this empty one is durable so is every unit of theirs.
        for state in list(self.cache.states()):
            if state.partition in partitions:
                if state.dispatch_id is not None:
                    self.dispatcher.release(state.dispatch_id)
                self.cache.forget(state.run_id)
        await self.storage.commit([])
        for run_id, partition in list(self.watched.items()):
            if partition in partitions:
                self.stop_watching(run_id, self.not_owner(partition))
        self.publish()

    def _in_flight(self: Runtime, partitions: set[int]) -> bool:
        return any(
            s.partition in partitions and s.dispatch_id is not None for s in self.cache.states()
        )

    # -- what workers and daemon status see of the cluster --------------------------------------

    def publish(self: Runtime) -> None:
        """Tell the other members what we serve; tell our workers who the other members are."""
        self.storage.status_info = {"workers": len(self.dispatcher.workers), "pid": self.pid}
        others = self.other_members()
        if others != self.pushed_members:
            self.pushed_members = others
            for slot in list(self.dispatcher.workers.values()):
                slot.send(p.Members(others))

    def other_members(self: Runtime) -> list[dict[str, Any]]:
        return [m.wire() for m in self.storage.members() if m.name != self.storage.holder]

    async def watch_members(self: Runtime) -> None:
        while True:
            await asyncio.sleep(self.config.lease_timeout_s / 3)
            self.publish()

    def cluster_status(self: Runtime) -> dict[str, Any] | None:
        members = self.storage.members()
        if not members:
            return None
        return {
            "member": self.storage.holder,
            "partitions": rec.PARTITIONS,
            "members": [
                {
                    "name": m.name,
                    "host": m.host,
                    "address": m.address,
                    "socket": m.socket,
                    "partitions": len(m.partitions),
                    "lease_left_ms": m.lease_left_ms,
                    "joined_ms": m.joined_ms,
                    # Ours as of now; the others' as of their last renewal.
                    "workers": len(self.dispatcher.workers)
                    if m.name == self.storage.holder
                    else m.info.get("workers"),
                    "pid": m.info.get("pid"),
                    "self": m.name == self.storage.holder,
                }
                for m in members
            ],
            "as_of_ms": now_ms(),
        }
