"""What a client reads: describe, list, inbox, history (followed live), a run's result, inspect.

Every read answers from committed state: the database, or for a run with units in flight the
state its last durable unit left (``RunCache.committed``), never a decision that could still be
lost. Followers and result waiters are told from the commit's callback, after the fact; the
progress events a follower may ask for (``runtime/progress.py``) are the one exception: a
report of a running step, relayed as it comes and never state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from grctl import codec
from grctl import protocol as p
from grctl.errors import InvalidInputError, ResultTimeoutError
from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.children import waited_child_ids
from grctl_daemon.engine.state import RunState
from grctl_daemon.storage import base as rec

if TYPE_CHECKING:
    from grctl_daemon.runtime import Runtime

_VALUE_KEYS = ("input", "payload", "result", "args", "value")
_VALUE_MAPS = ("writes", "store")
# Told the new history rows of a run and whether it ended; or (None, error) when it must stop
# (the run's partition went to another daemon).
Follower = Callable[[list[dict[str, Any]] | None, Any], None]
# A page holds at most p.PAGE_ROWS rows and stops early past PAGE_BYTES of user values, so a
# reply stays well under the frame limit whatever the runs carry.
PAGE_BYTES = 4 * 1024 * 1024
_ROW_BYTES = 256  # what a row costs beside its user values, roughly


def _value_bytes(row: dict[str, Any]) -> int:
    """Roughly what a row weighs on the wire (its user values as bytes or as wrapped values)."""
    data = row.get("data")
    values = data.values() if isinstance(data, dict) else row.values()
    return _ROW_BYTES + sum(
        sum(map(codec.wrapped_size, v.values())) if isinstance(v, dict) else codec.wrapped_size(v)
        for v in values
    )


def _run_bytes(run: rec.RunRecord) -> int:
    return _ROW_BYTES + len(run.input or b"") + len(run.result or b"")


def page_split(rows: list[Any], size: Callable[[Any], int] = _value_bytes) -> list[list[Any]]:
    """``rows`` cut into pages of at most PAGE_ROWS rows and about PAGE_BYTES (one row at least)."""
    pages: list[list[Any]] = []
    page: list[Any] = []
    total = 0
    for row in rows:
        cost = size(row)
        if page and (len(page) >= p.PAGE_ROWS or total + cost > PAGE_BYTES):
            pages.append(page)
            page, total = [], 0
        page.append(row)
        total += cost
    if page:
        pages.append(page)
    return pages


class Reads:
    """The read half of the Runtime (a mixin: see ``runtime/__init__.py``)."""

    @staticmethod
    def wire_history(workflow_id: str, run_id: str, row: dict[str, Any]) -> dict[str, Any]:
        data = dict(row.get("data") or {})
        for key in _VALUE_KEYS:
            if isinstance(data.get(key), bytes):
                data[key] = p.packed(data[key])
        for key in _VALUE_MAPS:  # a step's store writes, a reset's store
            if isinstance(data.get(key), dict):
                data[key] = {k: p.packed(v) for k, v in data[key].items()}
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
        self.latest.pop(state.run_id, None)  # progress of a step the end cut short
        outcome = self.outcome(state)
        for fut in self.waiters.pop(state.run_id, []):
            if not fut.done():
                fut.set_result(outcome)
        self._unwatch(state.run_id)

    def stop_watching(self: Runtime, run_id: str, exc: Exception) -> None:
        """End the result waits and followed histories of a run with ``exc``."""
        for fut in self.waiters.pop(run_id, []):
            if not fut.done():
                fut.set_exception(exc)
        for follower in list(self.followers.pop(run_id, ())):
            follower(None, exc)
        self.watched.pop(run_id, None)

    def _unwatch(self: Runtime, run_id: str) -> None:
        if run_id not in self.waiters and run_id not in self.followers:
            self.watched.pop(run_id, None)

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
            self.watched[run.run_id] = run.partition
            try:
                if m.timeout_ms is None:
                    return await fut
                return await asyncio.wait_for(fut, max(0, m.timeout_ms) / 1000)
            except TimeoutError:
                raise ResultTimeoutError(
                    f"workflow {run.workflow_id!r} did not end within {m.timeout_ms / 1000:g} s",
                    workflow_id=run.workflow_id,
                    run_id=run.run_id,
                ) from None
            finally:
                if fut in waiting:
                    waiting.remove(fut)
                if not waiting and self.waiters.get(run.run_id) is waiting:
                    del self.waiters[run.run_id]
                    self._unwatch(run.run_id)
        return self.outcome(run)

    async def describe(self: Runtime, m: p.DescribeWorkflow) -> dict[str, Any]:
        run = await self._committed(m.workflow_id, m.run_id)
        return {
            **self.run_summary(run),
            "store": {k: p.packed(v) for k, v in run.store.items()},
            "timers": [{"kind": k, "due_ms": due} for k, (due, _) in sorted(run.timers.items())],
            "run_deadline_ms": run.timers.get(tr.RUN_TIMER, (None, None))[0],
            "waiting_for_slot": self.slot_wait(run.run_id, run.workflow_type),
            "waiting_for_child": waited_child_ids(run),
        }

    def slot_wait(self: Runtime, run_id: str, workflow_type: str) -> dict[str, Any] | None:
        """Where a run of a limited type stands in its type's queue, if it waits for a slot."""
        lim = self.dispatcher.limits.get(workflow_type)
        if lim is None or lim.limit is None:
            return None
        ahead = self.dispatcher.queued(workflow_type).position(run_id)
        if ahead is None:
            return None
        return {"limit": lim.limit, "executing": len(lim.holders), "ahead": ahead}

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
            # Only for an active run: False tells "no connected worker serves its type", so it
            # does not look like it is moving (a dict lookup per worker: listings stay cheap).
            "served": (
                self.dispatcher.served(run.workflow_type)
                if run.status in ("running", "waiting")
                else None
            ),
        }

    async def list_workflows(self: Runtime, m: p.ListWorkflows) -> dict[str, Any]:
        """One page of runs, newest first, and the cursor of the next (None after the last)."""
        before = None
        if m.after is not None:
            if (
                len(m.after) != 2
                or not isinstance(m.after[0], int)
                or not isinstance(m.after[1], str)
            ):
                raise InvalidInputError("'after' must be the 'next' of the previous page")
            before = (m.after[0], m.after[1])
        limit = max(1, min(int(m.limit), p.PAGE_ROWS))
        rows = await self.storage.list_workflows(m.status, m.workflow_type, limit + 1, before)
        page = page_split(rows[:limit], _run_bytes)[0] if rows else []
        last = page[-1] if len(rows) > len(page) else None
        return {
            "runs": [self.run_summary(r) for r in page],
            "next": None if last is None else [last.created_ms, last.run_id],
        }

    async def inbox(self: Runtime, m: p.GetInbox) -> dict[str, Any]:
        """One page of the run's inbox, and the seq to ask after for the next (None at the end)."""
        run = await self._committed(m.workflow_id, m.run_id)
        limit = max(1, min(int(m.limit), p.PAGE_ROWS))
        rows = await self.storage.read_inbox(run.run_id, m.after_seq, limit + 1)
        page = page_split(rows[:limit])[0] if rows else []
        for row in page:
            row["payload"] = p.packed(row["payload"])
        return {
            "events": page,
            "next": page[-1]["seq"] if len(rows) > len(page) else None,
        }

    async def inspect(self: Runtime, m: p.InspectRun) -> dict[str, Any]:
        """For ``grctl check``: where the run stands, its step's records (a page), its type."""
        run = await self._committed(m.workflow_id, m.run_id)
        limit = max(1, min(int(m.limit), p.PAGE_ROWS))
        ops: dict[int, dict[str, Any]] = {}
        more = False
        for blob in run.records:
            data = codec.unpack(blob)
            op = data.get("op") if isinstance(data, dict) else None
            if not isinstance(op, int) or op <= m.after_op or op in ops:
                continue  # a task's retries are records of one operation
            if len(ops) == limit:
                more = True
                break
            row = {"op": op, "kind": str(data.get("kind", "")), "name": str(data.get("name", ""))}
            if row["kind"] == "patched":
                row["value"] = bool(data.get("value", True))
            ops[op] = row
        records = sorted(ops.values(), key=lambda r: r["op"])
        tdef = self.types.get(run.workflow_type)
        deployed = None
        if tdef is not None:
            deployed = {
                "steps": sorted(tdef.steps),
                "events": sorted(tdef.events),
                "queries": sorted(tdef.queries),
            }
        return {
            "workflow_id": run.workflow_id,
            "run_id": run.run_id,
            "workflow_type": run.workflow_type,
            "status": run.status,
            "step_name": run.step_name,
            "handler_kind": run.handler_kind,
            "wait_timeout_step": run.wait_timeout_step,
            "records": records,
            "next": records[-1]["op"] if more and records else None,
            "pending_events": sorted({item.event_name for item in run.inbox}),
            "deployed": deployed,
        }

    async def history(self: Runtime, m: p.GetHistory, send: Callable[[p.Message], Any]) -> None:
        run = await self._committed(m.workflow_id, m.run_id)
        wid, rid = run.workflow_id, run.run_id
        live: asyncio.Queue[tuple[list[dict[str, Any]] | None, Any]] = asyncio.Queue()
        wake = asyncio.Event()

        def on_rows(rows: list[dict[str, Any]] | None, ended: Any) -> None:
            live.put_nowait((rows, ended))
            wake.set()

        following = m.follow and run.is_active
        progress = None  # the follower's unread progress events (``runtime/progress.py``)
        if following:
            self.followers.setdefault(rid, set()).add(on_rows)
            self.watched[rid] = run.partition
            if m.progress or m.only_progress:
                progress = self.listen(rid, wake)
        try:
            last = m.after_seq
            while not m.only_progress:  # what is committed, a page at a time
                rows = await self.storage.read_history(rid, last, p.PAGE_ROWS)
                more = len(rows) == p.PAGE_ROWS
                if rows:
                    last = rows[-1]["seq"]
                pages = page_split(rows) or [[]]
                for n, page in enumerate(pages, 1):
                    # Following began while the run was active (as committed): its end, durable
                    # later, reaches ``live`` even if it is already in these rows.
                    done = not more and not following and n == len(pages)
                    wire = [self.wire_history(wid, rid, r) for r in page]
                    await send(p.HistoryItems(m.req_id, wire, done))
                if not more:
                    break
            if m.only_progress and not following:
                await send(p.HistoryItems(m.req_id, [], True))
            done = not following
            while not done:
                if live.empty() and not (progress is not None and progress.rows):
                    wake.clear()
                    await wake.wait()
                # Emitted before what commits next; more may come while a send waits.
                while progress is not None and progress.rows:
                    await send(p.HistoryItems(m.req_id, progress.take()))
                if live.empty():
                    continue
                more_rows, ended = live.get_nowait()
                if more_rows is None:  # handed over: the rest is followed at the new owner
                    ended.details["after_seq"] = last
                    raise ended
                fresh = [] if m.only_progress else [r for r in more_rows if r["seq"] > last]
                if fresh:
                    last = fresh[-1]["seq"]
                done = ended
                if not fresh and not done:
                    continue
                pages = page_split(fresh) or [[]]
                for n, page in enumerate(pages, 1):
                    await send(p.HistoryItems(m.req_id, page, done and n == len(pages)))
        finally:
            if progress is not None:
                self.unlisten(rid, progress)
            subs = self.followers.get(rid)
            if subs is not None:
                subs.discard(on_rows)
                if not subs:
                    self.followers.pop(rid, None)
                    self._unwatch(rid)
