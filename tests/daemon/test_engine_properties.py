"""Property tests of the pure engine: random message sequences through a model of the runtime.

``EngineModel`` is a small mirror of ``grctl_daemon.runtime.Runtime``: it installs each
Decision's state, prepares dispatches the way ``Runtime.apply`` does (the real ``Dispatcher``
picks the worker), commits the ops to ``Db`` — an in-memory mirror of the SQLite tables and
their primary keys — then performs the effects (timers go on a heap like ``TimerWheel``, which
never removes a disarmed timer). A restart throws away everything in memory and rebuilds the
runs from ``Db`` the way ``Runtime.recover`` does, with a new boot id.

Hypothesis drives it with random sequences of: run starts, worker connects and losses, step
results (good with every directive kind, raising, timing out), task records and sleeps, late
results from fenced-off dispatches, duplicate result frames, events (while waiting or not),
the clock moving (timers fire in due order, stale ones included), stale timer firings,
cancels, terminates and daemon restarts.

After every message it checks: at most one step of a run is in flight and only its current
dispatch is held by a worker; inbox events are consumed in arrival order, each once, and the
handler gets that event; a run that ended stays ended and is never dispatched again; stale and
duplicate results change nothing; the database holds exactly the in-memory state of every
active run (so a restart loses nothing); and every engine call is deterministic and leaves its
input untouched.

Budget: the ``grctl-engine`` profile runs 200 examples of up to 40 messages (about 6–7 thousand
messages, each followed by every invariant) in 6–8 s of CPU; GRCTL_ENGINE_EXAMPLES and
GRCTL_ENGINE_STEPS raise it for a longer hunt. The test fails if the run did not reach each
situation it is about (a restart, a stale result, a retry, a wait timeout…).
"""

from __future__ import annotations

import copy
import heapq
import os
from collections import Counter
from dataclasses import fields
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from grctl.errors import StaleDispatchError, WorkflowNotRunningError
from grctl.models.directive import RetryPolicy
from grctl_daemon.dispatch import Dispatcher, WorkerSlot
from grctl_daemon.engine import transitions as tr
from grctl_daemon.engine.state import InboxItem, RunState, StepSpec, TypeDef
from grctl_daemon.storage import base as rec
from tests.daemon.test_engine import T0
from tests.daemon.test_engine import TDEF as TABLE_TDEF

settings.register_profile(
    "grctl-engine",
    max_examples=int(os.environ.get("GRCTL_ENGINE_EXAMPLES", "200")),
    stateful_step_count=int(os.environ.get("GRCTL_ENGINE_STEPS", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# The table tests' type, with a back-off long enough for other messages to land inside it.
TDEF = TypeDef(
    workflow_type=TABLE_TDEF.workflow_type,
    start_name=TABLE_TDEF.start_name,
    start_params=TABLE_TDEF.start_params,
    steps={
        **TABLE_TDEF.steps,
        "flaky": StepSpec("flaky", 1_000, RetryPolicy(max_attempts=3, initial_delay_ms=400)),
    },
    events=TABLE_TDEF.events,
    queries=TABLE_TDEF.queries,
)
ACTIVE = ("running", "waiting")
TERMINAL = ("completed", "failed", "cancelled", "terminated")
# Timers the database keeps (a step timer is re-armed by the next dispatch instead).
DURABLE_TIMERS = getattr(
    tr, "DURABLE_TIMERS", frozenset({tr.STEP_TIMER, tr.WAIT_TIMER, tr.RETRY_TIMER})
)
RUN_FIELDS = [f.name for f in fields(rec.RunRecord)]
MAX_RUNS = 4
MAX_WORKERS = 3
MAX_RESTARTS = 2  # per example; more only crowd out the other rules

# Weighted by repetition: runs should live long enough to wait, queue events and retry.
_STEP = {"kind": "step", "step_name": "charge"}
_FLAKY = {"kind": "step", "step_name": "flaky"}
_WAIT = {"kind": "wait_for_event"}
_WAIT_T = {"kind": "wait_for_event", "timeout_ms": 300, "timeout_step_name": "expired"}
DIRECTIVES = st.sampled_from(
    [
        *[_WAIT, _FLAKY, _STEP, _WAIT_T] * 3,
        {"kind": "wait_for_event", "timeout_ms": 3_000, "timeout_step_name": "flaky"},
        {"kind": "step", "step_name": "expired"},
        {"kind": "step", "step_name": "nope"},  # not a registered step
        {"kind": "wait_for_event", "timeout_ms": 300, "timeout_step_name": "ghost"},
        {"kind": "complete", "result": b"\xa2ok"},
        {"kind": "fail", "error": {"type": "Declined", "message": "no"}},
        {"kind": "teleport"},  # an unknown directive
    ]
)
WRITES = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.binary(max_size=3), max_size=2)
ERRORS = st.sampled_from(
    [
        *[{"type": "ConnectionError", "message": "boom"}] * 3,  # retried per the policy
        {"type": "KeyError", "message": "sku"},
        {"type": "StoreValueError", "message": "bad value", "non_retryable": True},
    ]
)
SUMMARIES = st.sampled_from(
    [
        {"op": 0, "kind": "task", "status": "ok"},
        {"op": 0, "kind": "task", "status": "failed", "attempt": 1},
        {"op": 0, "kind": "now"},
        {"op": 0, "kind": "sleep", "sleep_ms": 500},
    ]
)
CLOCK_STEPS = st.sampled_from([1, 11, 40, 150, 350, 1_100, 2_100, 10_100])
EVENTS = st.sampled_from(["approve", "note"])

STATS: Counter[str] = Counter()


# -- the database, as the SQLite backend applies ops ----------------------------------------


def _row(run: rec.RunRecord) -> dict[str, Any]:
    return {name: copy.deepcopy(getattr(run, name)) for name in RUN_FIELDS}


class Db:
    """The tables ``storage.sqlite._apply`` writes, with their primary keys enforced."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.store: dict[str, dict[str, bytes]] = {}
        self.history: dict[str, list[tuple[int, str, str | None]]] = {}
        self.inbox: dict[str, dict[int, list[Any]]] = {}
        self.records: dict[str, dict[tuple[int, int], bytes]] = {}
        self.timers: dict[str, dict[str, tuple[int, str]]] = {}
        self.marked: list[tuple[str, int]] = []  # (run_id, inbox seq) in commit order

    def commit(self, ops: list[rec.Op]) -> None:
        for op in ops:
            match op:
                case rec.InsertRun(run):
                    assert run.run_id not in self.runs
                    assert not any(
                        r["workflow_id"] == run.workflow_id and r["status"] in ACTIVE
                        for r in self.runs.values()
                    ), "runs_one_active"
                    self.runs[run.run_id] = _row(run)
                case rec.SaveRun(run):
                    assert run.run_id in self.runs, "SaveRun of a run never inserted"
                    self.runs[run.run_id] = _row(run)
                case rec.PutStore(run_id, writes):
                    self.store.setdefault(run_id, {}).update(writes)
                case rec.AppendHistory(run_id, seq, _ts, kind, step_name, _data):
                    rows = self.history.setdefault(run_id, [])
                    assert seq == len(rows) + 1, f"history seq {seq} after {len(rows)} rows"
                    rows.append((seq, kind, step_name))
                case rec.AddInbox(run_id, seq, event_name, payload, _arrived):
                    box = self.inbox.setdefault(run_id, {})
                    assert seq not in box, "inbox primary key"
                    box[seq] = [event_name, payload, "pending"]
                case rec.MarkInbox(run_id, seq, state, _step_name):
                    item = self.inbox[run_id][seq]
                    assert item[2] == "pending", f"inbox seq {seq} of {run_id} marked twice"
                    item[2] = state
                    self.marked.append((run_id, seq))
                case rec.AddRecord(run_id, step_seq, n, record):
                    recs = self.records.setdefault(run_id, {})
                    assert (step_seq, n) not in recs, "step_records primary key"
                    recs[(step_seq, n)] = record
                case rec.ClearRecords(run_id):
                    self.records.pop(run_id, None)
                case rec.SetTimer(run_id, kind, due_ms, token):
                    self.timers.setdefault(run_id, {})[kind] = (due_ms, token)
                case rec.ClearTimer(run_id, None):
                    self.timers.pop(run_id, None)
                case rec.ClearTimer(run_id, kind):
                    self.timers.get(run_id, {}).pop(kind, None)
                case _:
                    raise AssertionError(f"unexpected op {op!r}")

    def load_active(self) -> list[RunState]:
        """What ``Runtime.recover`` rebuilds from ``storage.load_active``."""
        states = []
        for run_id, row in sorted(self.runs.items(), key=lambda kv: kv[1]["created_ms"]):
            if row["status"] not in ACTIVE:
                continue
            state = RunState(**copy.deepcopy(row))
            state.store = dict(self.store.get(run_id, {}))
            recs = self.records.get(run_id, {})
            state.records = [recs[k] for k in sorted(recs) if k[0] == state.step_seq]
            state.inbox = [
                InboxItem(seq, name, payload)
                for seq, (name, payload, st_) in sorted(self.inbox.get(run_id, {}).items())
                if st_ == "pending"
            ]
            state.timers = dict(self.timers.get(run_id, {}))
            states.append(state)
        return states


# -- every engine call goes through here -----------------------------------------------------


def _norm(d: tr.Decision) -> tuple[Any, ...]:
    error = None if d.error is None else (type(d.error), d.error.message)
    return (d.state, d.ops, d.effects, d.reply, error)


def decide(fn: Any, *args: Any) -> tr.Decision:
    """Call the engine twice on equal inputs: same Decision, and its input left untouched."""
    before = copy.deepcopy(args)
    d = fn(*args)
    assert args == before, f"{fn.__name__} mutated its input"
    again = fn(*copy.deepcopy(before))
    assert _norm(d) == _norm(again), f"{fn.__name__} is not deterministic"
    STATS[f"engine.{fn.__name__}"] += 1
    return d


def assert_unchanged(d: tr.Decision, state: RunState, error: type | None) -> None:
    if error is None:
        assert d.error is None
    else:
        assert isinstance(d.error, error), d.error
    assert d.state is state and d.ops == [] and d.effects == []


# -- the model runtime -----------------------------------------------------------------------


class EngineModel:
    """``Runtime`` without sockets, asyncio or SQLite: same order of install, commit, effects."""

    def __init__(self) -> None:
        self.now = T0
        self.boots = 0
        self.boot = "boot0000"
        self.db = Db()
        self.runs: dict[str, RunState] = {}  # active runs, by run_id
        self.ended: dict[str, RunState] = {}
        self.dispatcher = Dispatcher()
        self.wheel: list[tuple[int, str, str, str]] = []
        self.armed: list[tuple[str, str, str]] = []  # every (run_id, kind, token) ever armed
        self.issued: dict[str, str] = {}  # every dispatch_id ever sent → run_id
        self.accepted: dict[str, list[tuple[int, str, bytes | None]]] = {}
        self.consumed: dict[str, list[int]] = {}
        self.last_result: tuple[str, str, Any] | None = None
        self.n_runs = 0
        self.n_conns = 0

    # the runtime's halves: install, commit, effects

    def remember(self, state: RunState) -> None:
        if state.is_active:
            assert state.run_id not in self.ended, f"ended run {state.run_id} became active"
            self.runs[state.run_id] = state
        else:
            self.runs.pop(state.run_id, None)
            self.ended[state.run_id] = state

    def apply(self, *decisions: tr.Decision) -> None:
        for d in decisions:
            assert d.error is None, d.error
            if d.state is not None:
                self.remember(d.state)
        sends: list[tuple[WorkerSlot, dict[str, Any]]] = []
        for d in decisions:
            for effect in d.effects:
                if isinstance(effect, tr.Dispatch):
                    prepared = self.prepare_dispatch(effect.run_id)
                    if prepared is not None:
                        decisions += (prepared[0],)
                        sends.append(prepared[1:])
        ops = [op for d in decisions for op in d.ops]
        marked = len(self.db.marked)
        self.db.commit(ops)
        for run_id, seq in self.db.marked[marked:]:
            self.consumed.setdefault(run_id, []).append(seq)
        for slot, msg in sends:
            slot.send(msg)
        for d in decisions:
            self.effects(d)

    def effects(self, d: tr.Decision) -> None:
        for effect in d.effects:
            if isinstance(effect, tr.ArmTimer):
                heapq.heappush(
                    self.wheel, (effect.due_ms, effect.run_id, effect.kind, effect.token)
                )
                self.armed.append((effect.run_id, effect.kind, effect.token))
            elif isinstance(effect, tr.Dispatch):
                self.dispatch(effect.run_id)
            elif isinstance(effect, tr.StopStep):
                slot = self.dispatcher.release(effect.dispatch_id)
                if slot is not None:
                    STATS["step stopped on its worker"] += 1
                    self.drain(slot)

    def dispatch(self, run_id: str) -> None:
        prepared = self.prepare_dispatch(run_id)
        if prepared is not None:
            self.apply(prepared[0])
            prepared[1].send(prepared[2])

    def prepare_dispatch(self, run_id: str) -> tuple[tr.Decision, WorkerSlot, dict] | None:
        state = self.runs.get(run_id)
        if state is None or state.status != "running" or state.dispatch_id is not None:
            return None
        if tr.RETRY_TIMER in state.timers:
            return None
        slot = self.dispatcher.pick(state.workflow_type)
        if slot is None:
            self.dispatcher.enqueue(state.workflow_type, run_id)
            return None
        d = decide(tr.dispatched, state, TDEF, slot.name, self.boot, self.now)
        s = d.state
        assert s is not None and s.dispatch_id is not None
        self.dispatcher.assign(slot, s.dispatch_id, run_id)
        self.remember(s)
        msg = {
            "dispatch_id": s.dispatch_id,
            "run_id": run_id,
            "step_name": s.step_name,
            "handler_kind": s.handler_kind,
            "args": s.step_args,
            "records": list(s.records),
            "attempt": s.attempt,
        }
        return d, slot, msg

    def drain(self, slot: WorkerSlot) -> None:
        for workflow_type in slot.types:
            queue = self.dispatcher.queued(workflow_type)
            while queue and slot.free > 0:
                self.dispatch(queue.popleft())

    def on_send(self, msg: dict[str, Any]) -> None:
        """A DispatchStep reaches a worker: the run must be active and the dispatch current."""
        run_id = msg["run_id"]
        assert run_id not in self.ended, f"ended run {run_id} got a dispatch"
        state = self.runs[run_id]
        assert state.dispatch_id == msg["dispatch_id"] and state.status == "running"
        assert msg["dispatch_id"] not in self.issued, "a fencing token was reused"
        self.issued[msg["dispatch_id"]] = run_id
        if msg["handler_kind"] == "event":
            seq = self.consumed[run_id][-1]
            name, payload, _ = self.db.inbox[run_id][seq]
            assert (msg["step_name"], msg["args"]) == (name, payload), "the handler got its event"
        STATS["dispatches"] += 1

    # worker operations, as Runtime.record / complete_step do them

    def by_dispatch(self, dispatch_id: str) -> RunState | None:
        state = self.runs.get(dispatch_id.split(".", 1)[0])
        if state is None or state.dispatch_id != dispatch_id:
            return None
        return state

    def complete_step(self, dispatch_id: str, outcome: tuple[str, Any, Any]) -> None:
        state = self.by_dispatch(dispatch_id)
        assert state is not None
        kind, a, b = outcome
        if kind == "failed":
            d = decide(tr.step_failed, state, TDEF, dispatch_id, a, self.now)
        else:
            d = decide(tr.step_completed, state, TDEF, dispatch_id, a, b, self.now)
        slot = self.dispatcher.release(dispatch_id)
        self.apply(d)
        if slot is not None:
            self.drain(slot)

    def fire_due(self) -> None:
        """``TimerWheel``: pop every due entry in order, stale ones included."""
        while self.wheel and self.wheel[0][0] <= self.now:
            _, run_id, kind, token = heapq.heappop(self.wheel)
            state = self.runs.get(run_id)
            STATS["timer firings"] += 1
            if state is None:
                continue
            d = decide(tr.timer_fired, state, TDEF, kind, token, self.now)
            if d.state is not state or d.ops:
                STATS[f"timer {kind} acted"] += 1
                self.apply(d)
            else:
                STATS["timer void"] += 1

    def restart(self) -> None:
        """The daemon dies and starts again: memory, workers and the timer heap are gone."""
        self.boots += 1
        self.boot = f"boot{self.boots:04d}"
        self.runs = {}
        self.dispatcher = Dispatcher()
        self.wheel = []
        for state in self.db.load_active():
            self.remember(state)
            self.effects(decide(tr.recovered, state))


# -- the state machine -----------------------------------------------------------------------


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.m = EngineModel()

    @initialize()
    def begin(self) -> None:
        """Every example starts with a worker serving one run; rules add the rest."""
        STATS["examples"] += 1
        self.worker_connects()
        self.start_run()

    def _slot(self) -> WorkerSlot:
        self.m.n_conns += 1
        n = self.m.n_conns
        return WorkerSlot(f"c{n}", f"w{n}", frozenset({TDEF.workflow_type}), 1, None, self.m.now)

    def _inflight(self) -> list[str]:
        return sorted(did for slot in self.m.dispatcher.workers.values() for did in slot.inflight)

    # clients

    @precondition(lambda self: self.m.n_runs < MAX_RUNS)
    @rule()
    def start_run(self) -> None:
        m = self.m
        m.n_runs += 1
        d = decide(
            tr.start_run, TDEF, f"order-{m.n_runs}", f"RUN{m.n_runs}", b"\x81\xa1n\x01", m.now
        )
        m.accepted[f"RUN{m.n_runs}"] = []
        m.apply(d)
        STATS["starts"] += 1

    @precondition(lambda self: self.m.runs or self.m.ended)
    @rule(data=st.data(), name=EVENTS, payload=st.binary(max_size=2))
    def send_event(self, data: st.DataObject, name: str, payload: bytes) -> None:
        m = self.m
        run_id = data.draw(st.sampled_from(sorted([*m.runs, *m.ended])), label="run")
        if run_id in m.ended:
            ended = m.ended[run_id]
            assert_unchanged(
                decide(tr.event_sent, ended, TDEF, name, payload, m.now),
                ended,
                WorkflowNotRunningError,
            )
            STATS["refused: event to an ended run"] += 1
            return
        state = m.runs[run_id]
        was_waiting = state.status == "waiting"
        d = decide(tr.event_sent, state, TDEF, name, payload, m.now)
        assert d.error is None
        m.accepted[run_id].append((d.reply["inbox_seq"], name, payload))
        m.apply(d)
        STATS["events to a waiting run" if was_waiting else "events queued"] += 1

    @precondition(lambda self: self.m.runs or self.m.ended)
    @rule(data=st.data(), terminate=st.booleans())
    def cancel_or_terminate(self, data: st.DataObject, terminate: bool) -> None:
        m = self.m
        run_id = data.draw(st.sampled_from(sorted([*m.runs, *m.ended])), label="run")
        fn = tr.terminate if terminate else tr.cancel
        if run_id in m.ended:
            ended = m.ended[run_id]
            d = decide(fn, ended, "r", m.now)
            assert_unchanged(d, ended, WorkflowNotRunningError)
            STATS[f"refused: {fn.__name__} of an ended run"] += 1
            return
        d = decide(fn, m.runs[run_id], "r", m.now)
        m.apply(d)
        STATS[f"{fn.__name__}"] += 1

    # workers

    @precondition(lambda self: len(self.m.dispatcher.workers) < MAX_WORKERS)
    @rule()
    def worker_connects(self) -> None:
        m = self.m
        slot = self._slot()
        slot.send = m.on_send
        m.dispatcher.add(slot)
        m.drain(slot)
        STATS["worker connects"] += 1

    @precondition(lambda self: self.m.dispatcher.workers)
    @rule(data=st.data())
    def worker_lost(self, data: st.DataObject) -> None:
        m = self.m
        conn = data.draw(st.sampled_from(sorted(m.dispatcher.workers)), label="worker")
        for run_id, dispatch_id in m.dispatcher.remove(conn):
            state = m.runs.get(run_id)
            if state is not None:
                m.apply(decide(tr.worker_lost, state, dispatch_id, m.now))
                STATS["worker lost with a step"] += 1

    @precondition(lambda self: any(s.inflight for s in self.m.dispatcher.workers.values()))
    @rule(data=st.data(), directive=DIRECTIVES, writes=WRITES)
    def step_returns(self, data: st.DataObject, directive: dict, writes: dict) -> None:
        did = data.draw(st.sampled_from(self._inflight()), label="dispatch")
        self.m.complete_step(did, ("completed", dict(directive), writes))
        self.m.last_result = (did, "completed", (dict(directive), writes))
        STATS[f"step returned {directive['kind']}"] += 1

    # Two more ways to return, so that runs go on more often than they end.
    @precondition(lambda self: any(s.inflight for s in self.m.dispatcher.workers.values()))
    @rule(data=st.data(), directive=st.sampled_from([_WAIT, _WAIT_T]), writes=WRITES)
    def step_waits(self, data: st.DataObject, directive: dict, writes: dict) -> None:
        self.step_returns(data, directive, writes)

    @precondition(lambda self: any(s.inflight for s in self.m.dispatcher.workers.values()))
    @rule(data=st.data(), directive=st.sampled_from([_STEP, _FLAKY]), writes=WRITES)
    def step_moves_on(self, data: st.DataObject, directive: dict, writes: dict) -> None:
        self.step_returns(data, directive, writes)

    @precondition(lambda self: any(s.inflight for s in self.m.dispatcher.workers.values()))
    @rule(data=st.data(), error=ERRORS)
    def step_raises(self, data: st.DataObject, error: dict) -> None:
        did = data.draw(st.sampled_from(self._inflight()), label="dispatch")
        self.m.complete_step(did, ("failed", error, None))
        self.m.last_result = (did, "failed", error)
        STATS["step raised"] += 1

    @precondition(lambda self: any(s.inflight for s in self.m.dispatcher.workers.values()))
    @rule(data=st.data(), summary=SUMMARIES)
    def step_records(self, data: st.DataObject, summary: dict) -> None:
        m = self.m
        did = data.draw(st.sampled_from(self._inflight()), label="dispatch")
        state = m.by_dispatch(did)
        assert state is not None, "every dispatch a worker holds is current"
        summary = dict(summary)
        if summary["kind"] == "sleep":
            summary["wake_ms"] = m.now + summary.pop("sleep_ms")
        blob = f"rec{len(state.records)}".encode()
        m.apply(decide(tr.recorded, state, did, blob, summary, m.now))
        m.last_result = (did, "recorded", (blob, summary))
        STATS[f"recorded {summary['kind']}"] += 1

    # what must change nothing

    @precondition(lambda self: self.m.issued)
    @rule(data=st.data(), directive=DIRECTIVES, error=ERRORS)
    def late_result_from_a_fenced_off_dispatch(
        self, data: st.DataObject, directive: dict, error: dict
    ) -> None:
        m = self.m
        current = {s.dispatch_id for s in m.runs.values()}
        stale = sorted(set(m.issued) - current)
        if not stale:
            return
        did = data.draw(st.sampled_from(stale), label="stale dispatch")
        assert m.by_dispatch(did) is None, "the runtime refuses it before the engine"
        run_id = m.issued[did]
        state = m.runs.get(run_id) or m.ended[run_id]
        for d in (
            decide(tr.step_completed, state, TDEF, did, dict(directive), {"k": b"v"}, m.now),
            decide(tr.step_failed, state, TDEF, did, error, m.now),
            decide(tr.recorded, state, did, b"late", {"op": 0, "kind": "now"}, m.now),
        ):
            assert_unchanged(d, state, StaleDispatchError)
        d = decide(tr.worker_lost, state, did, m.now)
        assert_unchanged(d, state, None)
        STATS["late results refused"] += 1

    @precondition(lambda self: self.m.last_result is not None)
    @rule()
    def duplicate_result_frame(self) -> None:
        m = self.m
        assert m.last_result is not None
        did, kind, args = m.last_result
        run_id = m.issued[did]
        state = m.runs.get(run_id) or m.ended[run_id]
        if state.dispatch_id == did:
            assert kind == "recorded", "a step's result ends its dispatch"
            return  # a record does not end the dispatch: a second record is a new one
        assert m.by_dispatch(did) is None
        if kind == "completed":
            d = decide(tr.step_completed, state, TDEF, did, dict(args[0]), args[1], m.now)
        elif kind == "failed":
            d = decide(tr.step_failed, state, TDEF, did, args, m.now)
        else:
            d = decide(tr.recorded, state, did, args[0], args[1], m.now)
        assert_unchanged(d, state, StaleDispatchError)
        STATS["duplicate frames refused"] += 1

    @precondition(lambda self: self.m.runs or self.m.ended)
    @rule(data=st.data(), kind=st.sampled_from([tr.STEP_TIMER, tr.WAIT_TIMER, tr.RETRY_TIMER]))
    def stale_timer_fires(self, data: st.DataObject, kind: str) -> None:
        """A timer of this run and kind that is no longer current (or never was) fires late."""
        m = self.m
        run_id = data.draw(st.sampled_from(sorted([*m.runs, *m.ended])), label="run")
        state = m.runs.get(run_id) or m.ended[run_id]
        current = state.timers.get(kind, (None, None))[1] if state.is_active else None
        tokens = sorted({t for r, k, t in m.armed if r == run_id and k == kind} - {current})
        token = data.draw(st.sampled_from([*tokens, "0", f"{run_id}.9.9.boot9999"]), label="token")
        if token == current:
            return
        d = decide(tr.timer_fired, state, TDEF, kind, token, m.now + 60_000)
        assert_unchanged(d, state, None)
        STATS["stale timer firings"] += 1

    # time and restarts

    @rule(ms=CLOCK_STEPS)
    def clock_moves(self, ms: int) -> None:
        self.m.now += ms
        self.m.fire_due()

    @precondition(lambda self: self.m.wheel)
    @rule()
    def clock_reaches_the_next_timer(self) -> None:
        self.m.now = max(self.m.now, self.m.wheel[0][0])
        self.m.fire_due()

    @precondition(lambda self: self.m.boots < MAX_RESTARTS)
    @rule()
    def daemon_restarts(self) -> None:
        self.m.restart()
        STATS["restarts"] += 1

    # invariants

    @invariant()
    def at_most_one_step_in_flight_per_run(self) -> None:
        STATS["messages checked"] += 1
        m = self.m
        held: dict[str, list[str]] = {}
        for slot in m.dispatcher.workers.values():
            assert len(slot.inflight) <= slot.capacity
            for did, run_id in slot.inflight.items():
                held.setdefault(run_id, []).append(did)
        for run_id, dids in held.items():
            assert run_id in m.runs, f"ended run {run_id} still held by a worker"
            assert dids == [m.runs[run_id].dispatch_id], (run_id, dids)
        for run_id, state in m.runs.items():
            if state.dispatch_id is not None:
                assert held.get(run_id) == [state.dispatch_id], "the current dispatch is held"
                assert state.status == "running"

    @invariant()
    def ended_runs_stay_ended(self) -> None:
        m = self.m
        for run_id, state in m.ended.items():
            assert run_id not in m.runs
            assert state.status in TERMINAL and state.dispatch_id is None
            assert m.db.runs[run_id]["status"] == state.status
            assert not m.db.records.get(run_id) and not m.db.timers.get(run_id)
            last_seq, last_kind, _ = m.db.history[run_id][-1]
            assert (last_seq, last_kind) == (state.history_seq, f"workflow_{state.status}"), (
                "nothing is recorded for a run after its end"
            )

    @invariant()
    def inbox_is_fifo_each_event_once(self) -> None:
        m = self.m
        for run_id, accepted in m.accepted.items():
            seqs = [seq for seq, _, _ in accepted]
            assert seqs == list(range(1, len(seqs) + 1)), "arrival order numbers the inbox"
            consumed = m.consumed.get(run_id, [])
            assert consumed == seqs[: len(consumed)], f"consumed out of order: {consumed}"
            pending = [
                (seq, name, payload)
                for seq, (name, payload, st_) in sorted(m.db.inbox.get(run_id, {}).items())
                if st_ == "pending"
            ]
            assert pending == accepted[len(consumed) :], "nothing dropped, nothing twice"
            state = m.runs.get(run_id)
            if state is not None:
                assert [(i.seq, i.event_name, i.payload) for i in state.inbox] == pending
                if state.status == "waiting":
                    assert not state.inbox, "a waiting run takes a queued event at once"

    @invariant()
    def the_database_holds_every_active_run_as_memory_does(self) -> None:
        m = self.m
        active_in_db = {rid for rid, row in m.db.runs.items() if row["status"] in ACTIVE}
        assert active_in_db == set(m.runs)
        for run_id, state in m.runs.items():
            assert m.db.runs[run_id] == _row(state), run_id
            assert m.db.store.get(run_id, {}) == state.store
            durable = {k: v for k, v in state.timers.items() if k in DURABLE_TIMERS}
            assert m.db.timers.get(run_id, {}) == durable
            recs = m.db.records.get(run_id, {})
            assert [recs[k] for k in sorted(recs) if k[0] == state.step_seq] == state.records
            assert all(k[0] == state.step_seq for k in recs), "records of an older execution"
            assert m.db.history[run_id][-1][0] == state.history_seq

    @invariant()
    def a_scheduled_step_is_dispatched_queued_or_backing_off(self) -> None:
        m = self.m
        queued = m.dispatcher.queued(TDEF.workflow_type)
        for run_id, state in m.runs.items():
            if state.status != "running" or state.dispatch_id is not None:
                continue
            assert run_id in queued or tr.RETRY_TIMER in state.timers, (
                f"run {run_id} is running with no dispatch, no queue entry and no back-off"
            )
            if tr.RETRY_TIMER in state.timers:
                due, token = state.timers[tr.RETRY_TIMER]
                assert (due, run_id, tr.RETRY_TIMER, token) in m.wheel, "back-off timer armed"
            assert (state.step_name in TDEF.steps) or state.handler_kind in ("start", "event")
        for run_id, state in m.runs.items():
            if state.status == "waiting" and tr.WAIT_TIMER in state.timers:
                due, token = state.timers[tr.WAIT_TIMER]
                assert (due, run_id, tr.WAIT_TIMER, token) in m.wheel, "wait timer armed"


def test_random_message_sequences_keep_every_invariant():
    STATS.clear()
    run_state_machine_as_test(EngineMachine, settings=settings.get_profile("grctl-engine"))
    print("\nengine property run:", dict(sorted(STATS.items())))
    # The run must have reached the situations it is about, or it proves nothing.
    for what in (
        "restarts",
        "late results refused",
        "duplicate frames refused",
        "stale timer firings",
        "timer void",
        "timer wait acted",
        "timer retry acted",
        "timer step acted",
        "events queued",
        "events to a waiting run",
        "worker lost with a step",
        "terminate",
        "cancel",
        "refused: event to an ended run",
        "step stopped on its worker",
    ):
        assert STATS[what] > 0, f"no example reached: {what} ({dict(STATS)})"
    assert STATS["examples"] >= 50
