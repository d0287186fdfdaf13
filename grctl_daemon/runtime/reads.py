"""What a client reads: describe, list, inbox, history (followed live), a run's result.

Every read answers from committed state: the database, or for a run with units in flight the
state its last durable unit left (``RunCache.committed``), never a decision that could still be
lost. Followers and result waiters are told from the commit's callback, after the fact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from grctl import protocol as p
from grctl_daemon.engine.state import RunState
from grctl_daemon.storage import base as rec

if TYPE_CHECKING:
    from grctl_daemon.runtime import Runtime

_VALUE_KEYS = ("input", "payload", "result")
Follower = Callable[[list[dict[str, Any]], bool], None]


class Reads:
    """The read half of the Runtime (a mixin: see ``runtime/__init__.py``)."""

    @staticmethod
    def wire_history(workflow_id: str, run_id: str, row: dict[str, Any]) -> dict[str, Any]:
        data = dict(row.get("data") or {})
        for key in _VALUE_KEYS:
            if isinstance(data.get(key), bytes):
                data[key] = p.packed(data[key])
        return {**row, "data": data, "workflow_id": workflow_id, "run_id": run_id}

    @staticmethod
    def outcome(run: rec.RunRecord) -> dict[str, Any]:
        return {
            "workflow_id": run.workflow_id,
            "run_id": run.run_id,
            "status": run.status,
            "result": p.packed(run.result),
            "error": run.error,
            "reason": run.reason,
        }

    def run_ended(self: Runtime, state: RunState) -> None:
        outcome = self.outcome(state)
        for fut in self.waiters.pop(state.run_id, []):
            if not fut.done():
                fut.set_result(outcome)

    async def _committed(self: Runtime, workflow_id: str, run_id: str | None) -> RunState:
        """The run as committed; one whose start is not durable yet is waited for."""
        state = await self.find(workflow_id, run_id)
        committed = self.cache.committed(state)
        while committed is None:  # acknowledged within milliseconds, or refused
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.spawn(self._when_durable(fut))
            await fut
            state = await self.find(workflow_id, state.run_id)
            committed = self.cache.committed(state)
        return committed

    async def _when_durable(self: Runtime, fut: asyncio.Future[None]) -> None:
        # Units commit in order: an empty one queued now is durable after every earlier one.
        try:
            await self.storage.commit([])
        finally:
            if not fut.done():
                fut.set_result(None)

    async def result(self: Runtime, m: p.GetResult) -> Any:
        run = await self._committed(m.workflow_id, m.run_id)
        if m.wait and run.is_active:
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            waiting = self.waiters.setdefault(run.run_id, [])
            waiting.append(fut)
            try:
                return await fut
            finally:
                if fut in waiting:
                    waiting.remove(fut)
                if not waiting and self.waiters.get(run.run_id) is waiting:
                    del self.waiters[run.run_id]
        return self.outcome(run)

    async def describe(self: Runtime, m: p.DescribeWorkflow) -> dict[str, Any]:
        run = await self._committed(m.workflow_id, m.run_id)
        return {
            **self.run_summary(run),
            "store": {k: p.packed(v) for k, v in run.store.items()},
            "timers": [{"kind": k, "due_ms": due} for k, (due, _) in sorted(run.timers.items())],
        }

    def run_summary(self: Runtime, run: rec.RunRecord) -> dict[str, Any]:
        current = self.cache.get(run.run_id)
        return {
            "workflow_id": run.workflow_id,
            "run_id": run.run_id,
            "workflow_type": run.workflow_type,
            "status": run.status,
            "created_ms": run.created_ms,
            "updated_ms": run.updated_ms,
            "ended_ms": run.ended_ms,
            "step_name": run.step_name,
            "attempt": run.attempt,
            "input": p.packed(run.input),
            "result": p.packed(run.result),
            "error": run.error,
            "reason": run.reason,
            "parent_workflow_id": run.parent_workflow_id,
            "parent_run_id": run.parent_run_id,
            "cancel_requested": run.cancel_requested,
            "worker": current.worker if current is not None else None,
        }

    async def list_runs(self: Runtime, m: p.ListWorkflows) -> list[dict[str, Any]]:
        limit = max(1, min(int(m.limit), 10_000))
        rows = await self.storage.list_runs(m.status, m.workflow_type, limit)
        return [self.run_summary(r) for r in rows]

    async def inbox(self: Runtime, m: p.GetInbox) -> list[dict[str, Any]]:
        run = await self._committed(m.workflow_id, m.run_id)
        rows = await self.storage.read_inbox(run.run_id)
        for row in rows:
            row["payload"] = p.packed(row["payload"])
        return rows

    async def history(self: Runtime, m: p.GetHistory, send: Callable[[p.Message], Any]) -> None:
        run = await self._committed(m.workflow_id, m.run_id)
        wid, rid = run.workflow_id, run.run_id
        live: asyncio.Queue[tuple[list[dict[str, Any]], bool]] = asyncio.Queue()

        def on_rows(rows: list[dict[str, Any]], ended: bool) -> None:
            live.put_nowait((rows, ended))

        following = m.follow and run.is_active
        if following:
            self.followers.setdefault(rid, set()).add(on_rows)
        try:
            rows = await self.storage.read_history(rid, m.after_seq)
            last = rows[-1]["seq"] if rows else m.after_seq
            # Following began while the run was active (as committed): its end, durable
            # later, reaches ``live`` even if it is already in these rows.
            done = not following
            await send(
                p.HistoryItems(m.req_id, [self.wire_history(wid, rid, r) for r in rows], done)
            )
            while not done:
                more, ended = await live.get()
                fresh = [r for r in more if r["seq"] > last]
                if fresh:
                    last = fresh[-1]["seq"]
                done = ended
                await send(p.HistoryItems(m.req_id, fresh, done))
        finally:
            subs = self.followers.get(rid)
            if subs is not None:
                subs.discard(on_rows)
                if not subs:
                    self.followers.pop(rid, None)
