"""The messages the decider takes: one small dataclass per thing that can happen to a run.

The runtime builds each with the facts the decision needs (the type definition, the storage's
health, the recorded values), so ``decide.py`` reads them and nothing else.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from grctl_daemon.engine import reset as rs
from grctl_daemon.engine.state import RunState, TypeDef

DEFAULT_MAX_WORKER_LOSSES = 3


@dataclass(frozen=True, slots=True)
class StorageFault:
    """Why the database cannot be written now, as the backend tells it (see Storage.health)."""

    error: str
    since_ms: int
    database: str
    hint: str  # what the operator can do about it


# -- messages -----------------------------------------------------------------------------------
# Requests are imperative, facts past tense. Each carries what the decider must know beyond the
# run's state; ``tdef`` is None when no worker ever registered the type.


@dataclass(slots=True)
class Start:
    """Start a run; the state given is the workflow_id's active run, if the runtime knows one."""

    tdef: TypeDef | None
    workflow_type: str
    workflow_id: str
    run_id: str
    input: bytes | None
    fault: StorageFault | None = None
    parent: RunState | None = None
    parent_tdef: TypeDef | None = None
    completion_event: str | None = None
    known_types: Collection[str] = ()  # the registered types, named when this one is not
    # Where the run lives when not its parent's or its workflow_id's partition: a schedule's
    # runs live in the schedule's, so its owner commits the fire and the next fire time together.
    partition: int | None = None
    run_timeout_ms: int | None = None  # the run fails with RunTimeout when not ended by then


@dataclass(slots=True)
class Send:
    """Send an event; with a key, a second send of it is acknowledged and not stored again.

    ``known_seq`` is the inbox seq the database holds for the key (the runtime looks it up
    only when a key is given); keys not yet committed are in the state's ``event_keys``.
    """

    tdef: TypeDef | None
    event_name: str
    payload: bytes | None
    fault: StorageFault | None = None
    idempotency_key: str | None = None
    known_seq: int | None = None


@dataclass(slots=True)
class SendWithStart:
    """Send to the workflow_id's active run, or start one and send to it in the same unit."""

    start: Start
    send: Send


@dataclass(slots=True)
class Cancel:
    reason: str | None
    fault: StorageFault | None = None


@dataclass(slots=True)
class Terminate:
    reason: str | None
    fault: StorageFault | None = None


@dataclass(slots=True)
class DispatchTo:
    """Hand the run's scheduled step to this worker (a no-op Decision when it is not ready).

    ``chained``: the worker already ran it in place, after the step before it (see
    ``Runtime.complete_step``); the history says so.
    """

    tdef: TypeDef
    worker: str
    chained: bool = False


@dataclass(slots=True)
class Recorded:
    """A task outcome or deterministic value the worker reports for its current step."""

    dispatch_id: str
    record: bytes | None
    note: dict[str, Any] | None = None  # extra history data (a child's ids)


@dataclass(slots=True)
class StepReturned:
    """The step's outcome: a directive and its store writes, or an error."""

    tdef: TypeDef
    dispatch_id: str
    directive: dict[str, Any] | None
    writes: dict[str, bytes]
    error: dict[str, Any] | None = None
    child: RunState | None = None  # the child a wait_for_child names, as the runtime read it
    progress: dict[str, bytes] | None = None  # the last of each name emitted (kept in history)


@dataclass(slots=True)
class TimerFired:
    tdef: TypeDef | None
    kind: str
    token: str
    fault: StorageFault | None = None
    fault_cleared_ms: int | None = None


@dataclass(slots=True)
class WorkerLost:
    tdef: TypeDef
    dispatch_id: str
    max_losses: int = DEFAULT_MAX_WORKER_LOSSES


@dataclass(slots=True)
class ChildEnded:
    """A child run ended; the state given is its parent's."""

    tdef: TypeDef | None
    child: RunState


@dataclass(slots=True)
class Reset:
    """Reset the run to ``plan.to_step`` as run ``new_run_id`` (``dry_run``: only say what)."""

    tdef: TypeDef | None
    plan: rs.ResetPlan
    new_run_id: str
    dry_run: bool = False
    fault: StorageFault | None = None


@dataclass(slots=True)
class ResetStarted:
    """The new run of a reset: the state given is the old run, as the reset left it."""

    plan: rs.ResetPlan
    new_run_id: str


Message = (
    Start
    | Send
    | SendWithStart
    | Cancel
    | Terminate
    | DispatchTo
    | Recorded
    | StepReturned
    | TimerFired
    | WorkerLost
    | ChildEnded
    | Reset
    | ResetStarted
)
