"""The runtime: active runs in memory, decisions applied, commits awaited, effects performed.

Every request is handled in two halves. The first half is synchronous — read the run's state,
ask the engine for a Decision, install the new state in memory, queue the unit for commit — so
requests on one run are strictly ordered by the event loop. The second half waits for the
commit and only then performs effects (dispatch a step, reply, wake result waiters, stream
history): nothing is acknowledged or dispatched before it is durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import msgpack
from ulid import ULID

from grctl import _faults as faults
from grctl import protocol as p
from grctl._signature import binding_error
from grctl.errors import (
    GrctlError,
    InvalidInputError,
    NoWorkerError,
    QueryFailedError,
    StaleDispatchError,
    StorageUnavailableError,
    UnknownEventError,
    UnknownQueryError,
    WorkflowAlreadyRunningError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
    WorkflowTypeNotRegisteredError,
)
from grctl_daemon.config import DaemonConfig
from grctl_daemon.dispatch import Dispatcher, WorkerSlot
from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.state import InboxItem, RunState, TypeDef
from grctl_daemon.storage import base as rec
from grctl_daemon.timers import TimerWheel, now_ms

log = logging.getLogger("grctl.daemon")

MAX_ID_LENGTH = 256
STORAGE_HOLD_MS = 500  # how often a step timer put off by a full disk looks again
RECENT_ENDED_RUNS = 10_000
# A run's whole store travels in each dispatch, so it must leave room in one frame.
MAX_STORE_BYTES = p.MAX_FRAME_BYTES - 1024 * 1024
_VALUE_KEYS = ("input", "payload", "result")


def _ext(blob: bytes | None) -> Any:
    return None if blob is None else msgpack.ExtType(p.VALUE_EXT, blob)


def _blob(value: Any) -> bytes | None:
    """The packed bytes of a wrapped user value from the wire (``None`` stays ``None``)."""
    if isinstance(value, msgpack.ExtType) and value.code == p.VALUE_EXT:
        return value.data
    return msgpack.packb(value, use_bin_type=True)


def _open(blob: bytes | None) -> Any:
    if blob is None:
        return None
    try:
        return msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:  # the peer packed it: its fault, not a daemon bug
        raise InvalidInputError(
            f"a value sent to the daemon is not valid msgpack ({type(exc).__name__}); "
            "pack user values with grctl.protocol.wrap_value"
        ) from None


def _wire_history(workflow_id: str, run_id: str, row: dict[str, Any]) -> dict[str, Any]:
    data = dict(row.get("data") or {})
    for key in _VALUE_KEYS:
        if isinstance(data.get(key), bytes):
            data[key] = _ext(data[key])
    return {**row, "data": data, "workflow_id": workflow_id, "run_id": run_id}


def _check_id(value: str, what: str) -> None:
    if not value or len(value) > MAX_ID_LENGTH or any(ord(c) < 32 for c in value):
        raise InvalidInputError(
            f"{what} must be 1–{MAX_ID_LENGTH} printable characters, got {value[:40]!r}"
        )


class Runtime:
    """Owns the in-memory state of active runs and applies the engine's decisions."""

    def __init__(self, config: DaemonConfig, storage: rec.Storage) -> None:
        self.config = config
        self.storage = storage
        self.boot = str(ULID())[-8:]
        self.started = time.time()
        self.runs: dict[str, RunState] = {}
        self.active: dict[str, str] = {}  # workflow_id → run_id
        self.types: dict[str, TypeDef] = {}
        self.dispatcher = Dispatcher()
        self.timers = TimerWheel(self._on_timer)
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        # Runs that ended in memory but whose end is not durable yet: the database still says
        # they are active, so ``result --wait`` must wait for the commit, not read the row.
        self._ending: set[str] = set()
        self._recent: dict[str, RunState] = {}  # workflow_id → its latest ended run, LRU
        self._followers: dict[str, set[Callable[[list[dict[str, Any]], bool], None]]] = {}
        self._queries: dict[str, asyncio.Future[p.QueryAnswer]] = {}
        self.fatal: asyncio.Event = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Load types and active runs; re-dispatch in-flight steps; re-arm (overdue) timers."""
        for name, definition in (await self.storage.load_types()).items():
            self.types[name] = TypeDef.from_definition(definition)
        for active in await self.storage.load_active():
            state = RunState(**vars(active.run))
            state.store = active.store
            state.records = active.records
            state.inbox = [InboxItem(seq, name, payload) for seq, name, payload in active.inbox]
            state.timers = active.timers
            self._remember(state)
            self._effects(tr.recovered(state))
        self.timers.start()
        log.info("recovered %d active runs, %d workflow types", len(self.runs), len(self.types))

    async def close(self) -> None:
        await self.timers.stop()

    # -- applying decisions ---------------------------------------------------------------------

    def _remember(self, state: RunState) -> None:
        if state.is_active:
            self.runs[state.run_id] = state
            self.active[state.workflow_id] = state.run_id
        else:
            self.runs.pop(state.run_id, None)
            if self.active.get(state.workflow_id) == state.run_id:
                del self.active[state.workflow_id]
            # Reads of a run that just ended are served from memory, so they never race the
            # commit of its end against a read of the database.
            self._recent.pop(state.workflow_id, None)
            self._recent[state.workflow_id] = state
            if len(self._recent) > RECENT_ENDED_RUNS:
                del self._recent[next(iter(self._recent))]

    def apply(self, *decisions: tr.Decision) -> asyncio.Future[None]:
        """Install the decisions' states now, commit their ops as one unit, then do effects."""
        decisions = decisions + self._completion_events(decisions)
        for d in decisions:
            if d.state is not None:
                self._remember(d.state)
                if not d.state.is_active:
                    self._ending.add(d.state.run_id)
        # A step scheduled here is handed to a worker in the same unit, so the hot path costs
        # one commit per step; the worker hears of it only once that commit is durable.
        sends: list[tuple[WorkerSlot, p.DispatchStep]] = []
        for d in decisions:
            for effect in d.effects:
                if isinstance(effect, tr.Dispatch):
                    prepared = self._prepare_dispatch(effect.run_id)
                    if prepared is not None:
                        decisions += (prepared[0],)
                        sends.append(prepared[1:])
        ops: list[rec.Op] = [op for d in decisions for op in d.ops]
        if not ops:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_result(None)
        else:
            fut = self.storage.commit(ops)

        def committed(f: asyncio.Future[None]) -> None:
            for d in decisions:
                if d.state is not None and not d.state.is_active:
                    self._ending.discard(d.state.run_id)
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                if not isinstance(exc, rec.UnitRefused):
                    log.critical("database commit failed; stopping the daemon: %r", exc)
                    self.fatal.set()
                return
            for slot, msg in sends:
                slot.send(msg)
            if sends and faults.ARMED:
                faults.hit("after_dispatch")
            for d in decisions:
                self._effects(d)
                self._publish(d)

        fut.add_done_callback(committed)
        return fut

    def _completion_events(self, decisions: tuple[tr.Decision, ...]) -> tuple[tr.Decision, ...]:
        """A child that ends tells its parent through ``completion_event``, in the same unit."""
        extra: list[tr.Decision] = []
        for d in decisions:
            s = d.state
            if s is None or s.is_active or not s.completion_event:
                continue
            if not any(isinstance(e, tr.RunEnded) for e in d.effects):
                continue
            parent = self.runs.get(s.parent_run_id or "")
            tdef = self.types.get(parent.workflow_type) if parent else None
            if parent is None or tdef is None or s.completion_event not in tdef.events:
                continue
            payload = {
                "workflow_id": s.workflow_id,
                "run_id": s.run_id,
                "status": s.status,
                "result": _open(s.result),
                "error": s.error,
            }
            blob = msgpack.packb(payload, use_bin_type=True)
            sent = tr.event_sent(parent, tdef, s.completion_event, blob, now_ms())
            if sent.error is None:
                self._remember(sent.state)  # type: ignore[arg-type]
                extra.append(sent)
        return tuple(extra)

    def _effects(self, d: tr.Decision) -> None:
        for effect in d.effects:
            if isinstance(effect, tr.ArmTimer):
                self.timers.arm(effect.run_id, effect.kind, effect.due_ms, effect.token)
            elif isinstance(effect, tr.Dispatch):
                self._dispatch(effect.run_id)
            elif isinstance(effect, tr.StopStep):
                slot = self.dispatcher.release(effect.dispatch_id)
                if slot is not None:
                    slot.send(p.CancelStep(effect.dispatch_id, effect.reason))
                    self._drain(slot)
            elif isinstance(effect, tr.RunEnded) and d.state is not None:
                outcome = self.outcome(d.state)
                for fut in self._waiters.pop(effect.run_id, []):
                    if not fut.done():
                        fut.set_result(outcome)

    def _publish(self, d: tr.Decision) -> None:
        if d.state is None:
            return
        subs = self._followers.get(d.state.run_id)
        if not subs:
            return
        rows = [
            _wire_history(
                d.state.workflow_id,
                d.state.run_id,
                {
                    "seq": op.seq,
                    "ts_ms": op.ts_ms,
                    "kind": op.kind,
                    "step_name": op.step_name,
                    "data": op.data,
                },
            )
            for op in d.ops
            if isinstance(op, rec.AppendHistory)
        ]
        ended = not d.state.is_active
        for sub in list(subs):
            sub(rows, ended)

    def _check_writable(self) -> None:
        """Refuse new client work while the disk is full (steps in flight still wait it out)."""
        fault = self.storage.fault
        if fault is None:
            return
        since = time.strftime("%H:%M:%S", time.localtime((self.storage.fault_since_ms or 0) / 1000))
        raise StorageUnavailableError(
            f"the daemon cannot write its database {self.config.db_path} ({fault}, since "
            f"{since}), so it takes no new starts, events, cancels or terminates; nothing "
            "committed is lost. Free space on that disk: the daemon resumes by itself within a "
            "second (grctl daemon status shows it), then retry",
            details={
                "database": str(self.config.db_path),
                "error": fault,
                "since_ms": self.storage.fault_since_ms,
            },
        )

    def _held_by_storage(self, run_id: str, tdef: TypeDef, state: RunState, token: str) -> bool:
        """Time the daemon could not write is not the step's: its worker was waiting on us.

        While the disk is full a step timer is put off; once it is writable again, a step that
        was in flight gets its whole timeout counted from then (a dispatch committed only then
        has its deadline already behind it).
        """
        now = now_ms()
        if self.storage.fault is not None:
            self.timers.arm(run_id, tr.STEP_TIMER, now + STORAGE_HOLD_MS, token)
            return True
        cleared = self.storage.fault_cleared_ms
        if cleared is None:
            return False
        until = cleared + tdef.timeout_ms(state.handler_kind, state.step_name)
        if now >= until:
            return False
        self.timers.arm(run_id, tr.STEP_TIMER, until, token)
        return True

    async def commit(self, *decisions: tr.Decision) -> Any:
        """Apply, wait until durable, return the first decision's reply (or raise its error)."""
        for d in decisions:
            if d.error is not None:
                raise d.error
        await self.apply(*decisions)
        return decisions[0].reply

    # -- dispatch -------------------------------------------------------------------------------

    def _dispatch(self, run_id: str) -> None:
        """Hand the run's scheduled step to a worker now (or queue it)."""
        prepared = self._prepare_dispatch(run_id)
        if prepared is not None:
            self.apply(prepared[0])
            prepared[1].send(prepared[2])
            if faults.ARMED:
                faults.hit("after_dispatch")

    def _prepare_dispatch(
        self, run_id: str
    ) -> tuple[tr.Decision, WorkerSlot, p.DispatchStep] | None:
        """Pick a worker and build the dispatch; ``None`` when nothing to send (or queued)."""
        state = self.runs.get(run_id)
        if state is None or state.status != "running" or state.dispatch_id is not None:
            return None
        if tr.RETRY_TIMER in state.timers:
            return None
        slot = self.dispatcher.pick(state.workflow_type)
        if slot is None:
            self.dispatcher.enqueue(state.workflow_type, run_id)
            return None
        tdef = self.types[state.workflow_type]
        d = tr.dispatched(state, tdef, slot.name, self.boot, now_ms())
        s = d.state
        assert s is not None and s.dispatch_id is not None
        self.dispatcher.assign(slot, s.dispatch_id, run_id)
        self._remember(s)
        msg = p.DispatchStep(
            dispatch_id=s.dispatch_id,
            workflow_id=s.workflow_id,
            run_id=s.run_id,
            workflow_type=s.workflow_type,
            step_name=s.step_name or "",
            handler_kind=s.handler_kind or "step",
            args=_ext(s.step_args),
            store={k: _ext(v) for k, v in s.store.items()},
            records=[_ext(r) for r in s.records],
            attempt=s.attempt,
            timeout_ms=d.reply,
            parent_workflow_id=s.parent_workflow_id,
            parent_run_id=s.parent_run_id,
        )
        return d, slot, msg

    def _drain(self, slot: WorkerSlot) -> None:
        if self.dispatcher.workers.get(slot.connection_id) is not slot:
            # The worker left while the commit was pending: with no other worker free, each
            # run taken from the queue would be queued again behind itself, forever.
            return
        for workflow_type in slot.types:
            queue = self.dispatcher.queued(workflow_type)
            while queue and slot.free > 0:
                run_id = queue.popleft()
                self._dispatch(run_id)

    def worker_joined(self, slot: WorkerSlot, definitions: list[dict[str, Any]]) -> tr.Decision:
        ops: list[rec.Op] = []
        for definition in definitions:
            tdef = TypeDef.from_definition(definition)
            self.types[tdef.workflow_type] = tdef
            ops.append(rec.SaveType(tdef.workflow_type, definition, now_ms()))
        self.dispatcher.add(slot)
        self._drain(slot)
        return tr.Decision(None, ops=ops, reply={"worker": slot.name})

    def worker_left(self, connection_id: str) -> None:
        for run_id, dispatch_id in self.dispatcher.remove(connection_id):
            state = self.runs.get(run_id)
            if state is not None:
                self.apply(tr.worker_lost(state, dispatch_id, now_ms()))
        for qid, fut in list(self._queries.items()):
            if getattr(fut, "connection_id", None) == connection_id and not fut.done():
                fut.set_exception(QueryFailedError("the worker running the query disconnected"))
                self._queries.pop(qid, None)

    # -- lookups --------------------------------------------------------------------------------

    def _tdef(self, workflow_type: str) -> TypeDef:
        tdef = self.types.get(workflow_type)
        if tdef is None:
            known = ", ".join(sorted(self.types)) or "none yet"
            raise WorkflowTypeNotRegisteredError(
                f"workflow type {workflow_type!r} is not registered (known: {known}); start a "
                "worker that defines it: grctl worker MODULE"
            )
        return tdef

    async def _any_run(self, workflow_id: str, run_id: str | None) -> rec.RunRecord:
        current = self.active.get(workflow_id)
        if current is not None and (run_id is None or run_id == current):
            return self.runs[current]
        recent = self._recent.get(workflow_id)
        if recent is not None and (run_id is None or run_id == recent.run_id):
            return recent
        found = await self.storage.find_run(workflow_id, run_id)
        if found is None:
            raise WorkflowNotFoundError(
                f"workflow {workflow_id!r}{f' run {run_id}' if run_id else ''} not found; "
                "list runs with: grctl list",
                workflow_id=workflow_id,
                run_id=run_id,
            )
        return found

    async def _active_run(self, workflow_id: str, run_id: str | None, what: str) -> RunState:
        """The active run (returned at once, without suspending), or why there is none."""
        current = self.active.get(workflow_id)
        if current is not None and (run_id is None or run_id == current):
            return self.runs[current]
        found = await self._any_run(workflow_id, run_id)
        raise WorkflowNotRunningError(
            f"workflow {workflow_id!r} run {found.run_id} already ended ({found.status}); cannot "
            f"{what}. Start a new run with: grctl start {found.workflow_type} --id {workflow_id}",
            workflow_id=workflow_id,
            run_id=found.run_id,
        )

    def _by_dispatch(self, dispatch_id: str) -> RunState:
        state = self.runs.get(dispatch_id.split(".", 1)[0])
        if state is None or state.dispatch_id != dispatch_id:
            raise StaleDispatchError(f"dispatch {dispatch_id} is no longer current; result dropped")
        return state

    # -- client operations ----------------------------------------------------------------------

    def _start_decision(
        self,
        workflow_type: str,
        workflow_id: str,
        workflow_input: Any,
        parent: RunState | None = None,
        completion_event: str | None = None,
    ) -> tr.Decision:
        _check_id(workflow_id, "workflow_id")
        tdef = self._tdef(workflow_type)
        if workflow_id in self.active:
            running = self.runs[self.active[workflow_id]]
            raise WorkflowAlreadyRunningError(
                f"workflow {workflow_id!r} is already running (run {running.run_id}, type "
                f"{running.workflow_type}); wait for it with: grctl result {workflow_id} --wait",
                workflow_id=workflow_id,
                run_id=running.run_id,
            )
        blob = _blob(workflow_input)
        problem = binding_error(tdef.start_params, _open(blob))
        if problem:
            raise InvalidInputError(
                f"input for workflow {workflow_type!r} does not match its start handler "
                f"{tdef.start_name!r}: {problem}",
                workflow_id=workflow_id,
            )
        return tr.start_run(
            tdef,
            workflow_id,
            str(ULID()),
            blob,
            now_ms(),
            parent.workflow_id if parent else None,
            parent.run_id if parent else None,
            completion_event,
        )

    async def start_workflow(self, m: p.StartWorkflow) -> Any:
        d = self._start_decision(m.workflow_type, m.workflow_id, m.workflow_input)
        self._check_writable()
        try:
            return await self.commit(d)
        except rec.UnitRefused:
            raise WorkflowAlreadyRunningError(
                f"workflow {m.workflow_id!r} is already running", workflow_id=m.workflow_id
            ) from None

    def _event_decision(self, state: RunState, event_name: str, payload: Any) -> tr.Decision:
        tdef = self._tdef(state.workflow_type)
        if event_name not in tdef.events:
            known = ", ".join(sorted(tdef.events)) or "none"
            raise UnknownEventError(
                f"workflow type {state.workflow_type!r} has no handler for event {event_name!r} "
                f"(events: {known})",
                workflow_id=state.workflow_id,
                run_id=state.run_id,
            )
        blob = _blob(payload)
        size = len(blob or b"") + sum(len(k) + len(v or b"") for k, v in state.store.items())
        if size > MAX_STORE_BYTES:
            # The payload travels with the store in the handler's dispatch: it must fit too.
            raise InvalidInputError(
                f"payload of event {event_name!r} is {len(blob or b'')} bytes; with the run's "
                f"store that is {size} bytes, over the {MAX_STORE_BYTES}-byte limit of one "
                "dispatch; send a reference to large data instead",
                workflow_id=state.workflow_id,
                run_id=state.run_id,
            )
        problem = binding_error(tdef.events[event_name], _open(blob))
        if problem:
            raise InvalidInputError(
                f"payload of event {event_name!r} does not match its handler: {problem}",
                workflow_id=state.workflow_id,
                run_id=state.run_id,
            )
        return tr.event_sent(state, tdef, event_name, blob, now_ms())

    async def send(self, m: p.SendEvent) -> Any:
        state = await self._active_run(m.workflow_id, m.run_id, f"send {m.event_name!r}")
        self._check_writable()
        return await self.commit(self._event_decision(state, m.event_name, m.payload))

    async def cancel(self, m: p.CancelWorkflow) -> Any:
        state = await self._active_run(m.workflow_id, m.run_id, "cancel it")
        self._check_writable()
        return await self.commit(tr.cancel(state, m.reason, now_ms()))

    async def terminate(self, m: p.TerminateWorkflow) -> Any:
        state = await self._active_run(m.workflow_id, m.run_id, "terminate it")
        self._check_writable()
        return await self.commit(tr.terminate(state, m.reason, now_ms()))

    def outcome(self, run: rec.RunRecord) -> dict[str, Any]:
        return {
            "workflow_id": run.workflow_id,
            "run_id": run.run_id,
            "status": run.status,
            "result": _ext(run.result),
            "error": run.error,
            "reason": run.reason,
        }

    async def result(self, m: p.GetResult) -> Any:
        run = await self._any_run(m.workflow_id, m.run_id)
        # An end that is not durable yet is not told: wait for its commit (milliseconds).
        pending = run.run_id in self._ending
        if pending or (m.wait and run.status in ("running", "waiting")):
            if run.run_id in self.runs or pending:
                fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._waiters.setdefault(run.run_id, []).append(fut)
                return await fut
            run = await self._any_run(m.workflow_id, run.run_id)
        return self.outcome(run)

    async def describe(self, m: p.DescribeWorkflow) -> dict[str, Any]:
        run = await self._any_run(m.workflow_id, m.run_id)
        if isinstance(run, RunState):
            store, timers, worker = run.store, run.timers, run.worker
        else:
            store, timers, worker = await self.storage.read_store(run.run_id), {}, None
        return {
            **self.run_summary(run),
            "worker": worker,
            "store": {k: _ext(v) for k, v in store.items()},
            "timers": [{"kind": k, "due_ms": due} for k, (due, _) in sorted(timers.items())],
        }

    def run_summary(self, run: rec.RunRecord) -> dict[str, Any]:
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
            "input": _ext(run.input),
            "result": _ext(run.result),
            "error": run.error,
            "reason": run.reason,
            "parent_workflow_id": run.parent_workflow_id,
            "parent_run_id": run.parent_run_id,
            "cancel_requested": run.cancel_requested,
            "worker": run.worker if isinstance(run, RunState) else None,
        }

    async def list_runs(self, m: p.ListWorkflows) -> list[dict[str, Any]]:
        limit = max(1, min(int(m.limit), 10_000))
        rows = await self.storage.list_runs(m.status, m.workflow_type, limit)
        return [self.run_summary(self.runs.get(r.run_id, r)) for r in rows]

    async def inbox(self, m: p.GetInbox) -> list[dict[str, Any]]:
        run = await self._any_run(m.workflow_id, m.run_id)
        rows = await self.storage.read_inbox(run.run_id)
        for row in rows:
            row["payload"] = _ext(row["payload"])
        return rows

    async def history(self, m: p.GetHistory, send: Callable[[p.Message], Any]) -> None:
        run = await self._any_run(m.workflow_id, m.run_id)
        wid, rid = run.workflow_id, run.run_id
        live: asyncio.Queue[tuple[list[dict[str, Any]], bool]] = asyncio.Queue()

        def on_rows(rows: list[dict[str, Any]], ended: bool) -> None:
            live.put_nowait((rows, ended))

        following = m.follow and run.run_id in self.runs
        if following:
            self._followers.setdefault(rid, set()).add(on_rows)
        try:
            rows = await self.storage.read_history(rid, m.after_seq)
            last = rows[-1]["seq"] if rows else m.after_seq
            done = not following or rid not in self.runs
            await send(p.HistoryItems(m.req_id, [_wire_history(wid, rid, r) for r in rows], done))
            while not done:
                more, ended = await live.get()
                fresh = [r for r in more if r["seq"] > last]
                if fresh:
                    last = fresh[-1]["seq"]
                done = ended
                await send(p.HistoryItems(m.req_id, fresh, done))
        finally:
            subs = self._followers.get(rid)
            if subs is not None:
                subs.discard(on_rows)
                if not subs:
                    self._followers.pop(rid, None)

    async def query(self, m: p.QueryWorkflow) -> Any:
        run = await self._any_run(m.workflow_id, m.run_id)
        tdef = self._tdef(run.workflow_type)
        if m.query_name not in tdef.queries:
            raise UnknownQueryError(
                f"workflow type {run.workflow_type!r} has no query {m.query_name!r} "
                f"(queries: {', '.join(sorted(tdef.queries)) or 'none'})",
                workflow_id=run.workflow_id,
                run_id=run.run_id,
            )
        slots = self.dispatcher.serves(run.workflow_type)
        if not slots:
            raise NoWorkerError(
                f"no connected worker serves {run.workflow_type!r}, so the query cannot run; "
                "start one with: grctl worker MODULE",
                workflow_id=run.workflow_id,
                run_id=run.run_id,
            )
        store = (
            run.store if isinstance(run, RunState) else await self.storage.read_store(run.run_id)
        )
        slot = max(slots, key=lambda s: s.free)
        qid = str(ULID())
        fut: asyncio.Future[p.QueryAnswer] = asyncio.get_running_loop().create_future()
        fut.connection_id = slot.connection_id  # type: ignore[attr-defined]
        self._queries[qid] = fut
        try:
            slot.send(
                p.RunQuery(
                    qid,
                    run.workflow_id,
                    run.run_id,
                    run.workflow_type,
                    m.query_name,
                    {k: _ext(v) for k, v in store.items()},
                )
            )
            answer = await asyncio.wait_for(fut, self.config.query_timeout_s)
        except TimeoutError:
            raise QueryFailedError(
                f"query {m.query_name!r} got no answer within {self.config.query_timeout_s:g}s",
                workflow_id=run.workflow_id,
                run_id=run.run_id,
            ) from None
        finally:
            self._queries.pop(qid, None)
        if answer.error:
            raise QueryFailedError(
                f"query {m.query_name!r} raised {answer.error.get('type')}: "
                f"{answer.error.get('message')}",
                workflow_id=run.workflow_id,
                run_id=run.run_id,
                details=answer.error,
            )
        return answer.value

    def query_answered(self, m: p.QueryAnswer) -> None:
        fut = self._queries.get(m.query_id)
        if fut is not None and not fut.done():
            fut.set_result(m)

    async def status(self) -> dict[str, Any]:
        size = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                size += os.path.getsize(f"{self.config.db_path}{suffix}")
            except OSError:
                pass
        return {
            "pid": os.getpid(),
            "version": p.PROTOCOL_VERSION,
            "socket": str(self.config.socket_path),
            "database": str(self.config.db_path),
            "database_bytes": size,
            "synchronous": self.config.synchronous,
            "uptime_s": time.time() - self.started,
            "workers": [
                {
                    "name": s.name,
                    "workflow_types": sorted(s.types),
                    "inflight": len(s.inflight),
                    "concurrency": s.capacity,
                    "connected_ms": s.connected_ms,
                }
                for s in self.dispatcher.workers.values()
            ],
            "runs": await self.storage.count_by_status(),
            "commits": {
                "transactions": self.storage.batches,
                "units": self.storage.units,
                "write_s": round(self.storage.write_s, 6),
                "commit_s": round(self.storage.commit_s, 6),
            },
        }

    # -- worker operations ----------------------------------------------------------------------

    # The two messages of the step hot path are answered without a task of their own: the
    # decision is applied at once and the reply goes out when the commit is durable
    # (``Server._answer_hot`` adds that callback). Each returns (durable, reply) or raises a refusal.

    def record(self, m: p.RecordOutcome) -> tuple[asyncio.Future[None], Any]:
        state = self._by_dispatch(m.dispatch_id)
        blob = _blob(m.record)
        d = tr.recorded(state, m.dispatch_id, blob, self._summary(blob), now_ms())
        if d.error is not None:
            raise d.error
        durable = self.apply(d)
        if faults.ARMED:
            durable.add_done_callback(lambda _: faults.hit("after_record"))
        return durable, d.reply

    @staticmethod
    def _summary(blob: bytes | None) -> dict[str, Any]:
        data = _open(blob)
        if not isinstance(data, dict) or not isinstance(data.get("op"), int):
            raise InvalidInputError("a step record must be a map with an integer 'op'")
        summary = {k: data[k] for k in ("op", "kind", "name", "status", "attempt") if k in data}
        if "error" in data:
            summary["error"] = data["error"]
        if data.get("kind") == "sleep" and isinstance(data.get("value"), int):
            summary["wake_ms"] = data["value"]
        return summary

    def complete_step(self, m: p.CompleteStep) -> tuple[asyncio.Future[None], Any]:
        state = self._by_dispatch(m.dispatch_id)
        tdef = self.types[state.workflow_type]
        if m.error is not None or m.directive is None:
            d = tr.step_failed(state, tdef, m.dispatch_id, m.error or {"type": "Error"}, now_ms())
        else:
            directive = dict(m.directive)
            directive["result"] = _blob(directive.get("result"))
            writes = {}
            for key, value in (m.store_writes or {}).items():
                if not isinstance(key, str):
                    raise InvalidInputError("store keys must be strings")
                writes[key] = _blob(value)
            size = sum(len(k) + len(v or b"") for k, v in {**state.store, **writes}.items())
            if size > MAX_STORE_BYTES:
                # Every dispatch carries the whole store: past this it could not travel.
                error = {
                    "type": "StoreValueError",
                    "message": f"step {state.step_name!r} would grow the store of workflow "
                    f"{state.workflow_id!r} to {size} bytes, over the {MAX_STORE_BYTES}-byte "
                    "limit; keep large data outside the workflow and store references to it",
                    "non_retryable": True,
                }
                d = tr.step_failed(state, tdef, m.dispatch_id, error, now_ms())
            else:
                d = tr.step_completed(state, tdef, m.dispatch_id, directive, writes, now_ms())
        if d.error is not None:
            raise d.error
        self.timers.cancel(state.run_id, tr.STEP_TIMER)
        slot = self.dispatcher.release(m.dispatch_id)
        durable = self.apply(d)
        if slot is not None:

            def drain(f: asyncio.Future[None]) -> None:
                if not f.cancelled() and f.exception() is None:
                    self._drain(slot)

            durable.add_done_callback(drain)
        return durable, d.reply

    async def start_child(self, m: p.StartChild) -> Any:
        parent = self._by_dispatch(m.dispatch_id)
        if m.completion_event is not None:
            params = self._tdef(parent.workflow_type).events.get(m.completion_event)
            sample = {"workflow_id": "", "run_id": "", "status": "", "result": None, "error": None}
            if params is None or binding_error(params, sample):
                raise InvalidInputError(
                    f"completion_event {m.completion_event!r} must name an event handler of "
                    f"{parent.workflow_type!r} that accepts workflow_id, run_id, status, result "
                    "and error (or **kwargs)",
                    workflow_id=parent.workflow_id,
                    run_id=parent.run_id,
                )
        child = self._start_decision(
            m.workflow_type, m.workflow_id, m.workflow_input, parent, m.completion_event
        )
        blob = _blob(m.record)
        self._summary(blob)  # refuses a record that is not a map with an 'op'
        record = _open(blob)
        record["value"] = child.reply
        blob = msgpack.packb(record, use_bin_type=True)
        note = self._summary(blob) | {
            "child_workflow_id": m.workflow_id,
            "child_run_id": child.reply["run_id"],
        }
        recd = tr.recorded(parent, m.dispatch_id, blob, note, now_ms())
        return await self.commit(child, recd)

    async def send_to_parent(self, m: p.SendToParent) -> Any:
        child = self._by_dispatch(m.dispatch_id)
        if not child.parent_workflow_id:
            raise InvalidInputError(f"workflow {child.workflow_id!r} has no parent")
        parent_run = self.runs.get(child.parent_run_id or "")
        if parent_run is None:
            raise WorkflowNotRunningError(
                f"parent workflow {child.parent_workflow_id!r} has ended; cannot send "
                f"{m.event_name!r} to it",
                workflow_id=child.parent_workflow_id,
            )
        sent = self._event_decision(parent_run, m.event_name, m.payload)
        blob = _blob(m.record)
        recd = tr.recorded(child, m.dispatch_id, blob, self._summary(blob), now_ms())
        return await self.commit(recd, sent)

    # -- timers ---------------------------------------------------------------------------------

    def _on_timer(self, run_id: str, kind: str, token: str) -> None:
        state = self.runs.get(run_id)
        if state is None or state.timers.get(kind, (0, None))[1] != token:
            return  # void: the run ended, or the step or wait this timer was for is over
        tdef = self.types.get(state.workflow_type)
        if tdef is None:
            return
        if kind == tr.STEP_TIMER and self._held_by_storage(run_id, tdef, state, token):
            return
        d = tr.timer_fired(state, tdef, kind, token, now_ms())
        if d.state is not state or d.ops:
            if faults.ARMED:
                faults.hit("timer_fire")
            self.apply(d)


def refusal(exc: GrctlError, req_id: int | None) -> p.ErrorReply:
    return p.ErrorReply(
        req_id, exc.code, exc.message, exc.workflow_id, exc.run_id, exc.details or None
    )
