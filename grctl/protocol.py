"""The wire: length-prefixed msgpack frames and the message classes both sides speak.

A frame is a 4-byte big-endian length followed by one msgpack map ``{"kind": ..., **fields}``
(the bytes are ``grctl.codec``'s).
The first frame on every connection is a ``Hello`` carrying ``PROTOCOL_VERSION``; the daemon
answers ``Welcome`` or an ``ErrorReply`` and closes. Requests carry a ``req_id`` the reply
repeats. Every message is a small dataclass, encoded in one pass here and nowhere else.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from grctl import codec
from grctl.codec import (  # the value helpers every message carries, re-exported for the wire
    MAX_FRAME_BYTES,
    VALUE_EXT,
    FrameReader,
    open_value,
    packed,
    unwrap,
    wrap_value,
)
from grctl.errors import ProtocolError

__all__ = [
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "VALUE_EXT",
    "FrameReader",
    "Message",
    "decode",
    "encode",
    "open_value",
    "packed",
    "read_message",
    "unwrap",
    "wrap_value",
]

# 3: progress (the ``progress`` message, its fields on history and steps); 4: chained steps
# (``DispatchStep.chain``, ``CompleteStep.chain`` and ``running``)
PROTOCOL_VERSION = 4


@dataclass
class Message:
    """Base of every wire message; ``kind`` names it on the wire."""

    kind: ClassVar[str] = ""


MESSAGES: dict[str, type[Message]] = {}


def message(kind: str):
    """Register a message class under its wire ``kind``."""

    def wrap(cls: type[Message]) -> type[Message]:
        cls.kind = kind
        MESSAGES[kind] = cls
        cls._field_checks = tuple((f.name, _CHECKS.get(f.type)) for f in dataclasses.fields(cls))
        return cls

    return wrap


_CHECKS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "str | None": (str, type(None)),
    "int": (int,),
    "int | None": (int, type(None)),
    "bool": (bool,),
    "dict[str, Any]": (dict,),
    "dict[str, Any] | None": (dict, type(None)),
    "list[Any]": (list,),
    "list[dict[str, Any]]": (list,),
    "list[Any] | None": (list, type(None)),
}
# Listings travel in pages of at most this many rows (a reply stays far below the frame limit).
PAGE_ROWS = 500


# -- handshake and replies ------------------------------------------------------------------


@message("hello")
@dataclass
class Hello(Message):
    protocol_version: int
    role: str  # "client", "worker", or "daemon" (a cluster member forwarding a request)
    name: str = ""
    pid: int = 0
    token: str | None = None  # required on TCP connections, ignored on the Unix socket

    def __repr__(self) -> str:  # never print the token
        return f"Hello({self.protocol_version}, {self.role!r}, {self.name!r}, {self.pid})"


@message("welcome")
@dataclass
class Welcome(Message):
    protocol_version: int
    daemon_version: str
    connection_id: str
    heartbeat_timeout_ms: int = 10_000  # a worker silent this long is taken as lost
    # In a cluster (several daemons on one PostgreSQL): this daemon's member name, and the
    # other members a worker must also serve (see ``Members``); None for a lone daemon.
    member: str | None = None
    members: list[Any] | None = None


@message("reply")
@dataclass
class Reply(Message):
    req_id: int
    data: Any = None


@message("error")
@dataclass
class ErrorReply(Message):
    req_id: int | None
    code: str
    message: str
    workflow_id: str | None = None
    run_id: str | None = None
    details: dict[str, Any] | None = None


# -- client requests -------------------------------------------------------------------------


@message("start_workflow")
@dataclass
class StartWorkflow(Message):
    req_id: int
    workflow_type: str
    workflow_id: str
    workflow_input: Any = None
    run_timeout_ms: int | None = None  # fail the run with RunTimeout when not ended by then


@message("send")
@dataclass
class SendEvent(Message):
    """Reply: ``inbox_seq``, ``workflow_id``, ``run_id``; with a key also ``duplicate``
    (True: an event with this key was sent to the run before, and ``inbox_seq`` is its)."""

    req_id: int
    workflow_id: str
    event_name: str
    payload: Any = None
    run_id: str | None = None
    idempotency_key: str | None = None


@message("send_with_start")
@dataclass
class SendWithStart(Message):
    """Send to the workflow_id's active run, or start one of ``workflow_type`` and send to it
    in one commit. Reply: as ``send``'s, and ``started`` (whether this request started it)."""

    req_id: int
    workflow_type: str
    workflow_id: str
    event_name: str
    payload: Any = None
    workflow_input: Any = None
    idempotency_key: str | None = None
    run_timeout_ms: int | None = None  # for the run this request starts, if it starts one


@message("query")
@dataclass
class QueryWorkflow(Message):
    req_id: int
    workflow_id: str
    query_name: str
    run_id: str | None = None


@message("cancel")
@dataclass
class CancelWorkflow(Message):
    req_id: int
    workflow_id: str
    run_id: str | None = None
    reason: str | None = None


@message("terminate")
@dataclass
class TerminateWorkflow(Message):
    req_id: int
    workflow_id: str
    run_id: str | None = None
    reason: str | None = None


@message("reset")
@dataclass
class ResetWorkflow(Message):
    """A new run of ``workflow_id`` at ``to_step`` with the store as it was when it last began."""

    req_id: int
    workflow_id: str
    to_step: str
    run_id: str | None = None
    dry_run: bool = False


@message("describe")
@dataclass
class DescribeWorkflow(Message):
    req_id: int
    workflow_id: str
    run_id: str | None = None


@message("history")
@dataclass
class GetHistory(Message):
    """The run's history rows from ``after_seq``; with ``follow``, live until the run ends.

    ``progress`` adds the run's live progress events (``ctx.emit``) to a followed stream, as
    rows of kind ``progress`` with no ``seq`` (see ``Progress``); ``only_progress`` leaves the
    committed rows out (``handle.stream()``): the stream then carries progress and its end.
    """

    req_id: int
    workflow_id: str
    run_id: str | None = None
    follow: bool = False
    after_seq: int = 0
    progress: bool = False
    only_progress: bool = False


# -- schedules (a schedule lives in the partition of its name: its owner answers) -----------


@message("create_schedule")
@dataclass
class CreateSchedule(Message):
    req_id: int
    name: str
    workflow_type: str
    cron: str
    timezone: str = "UTC"
    workflow_input: Any = None
    overlap: str = "skip"


@message("list_schedules")
@dataclass
class ListSchedules(Message):
    req_id: int


@message("describe_schedule")
@dataclass
class DescribeSchedule(Message):
    req_id: int
    name: str


@message("pause_schedule")
@dataclass
class PauseSchedule(Message):
    req_id: int
    name: str


@message("resume_schedule")
@dataclass
class ResumeSchedule(Message):
    req_id: int
    name: str


@message("trigger_schedule")
@dataclass
class TriggerSchedule(Message):
    req_id: int
    name: str


@message("delete_schedule")
@dataclass
class DeleteSchedule(Message):
    req_id: int
    name: str


@message("history_items")
@dataclass
class HistoryItems(Message):
    """A page of a history stream; ``done`` closes it (the run ended or it was not followed)."""

    req_id: int
    events: list[dict[str, Any]]
    done: bool = False


@message("result")
@dataclass
class GetResult(Message):
    """The run's outcome; with ``wait``, once it ends (or ``timeout_ms`` passes: a timeout error)."""

    req_id: int
    workflow_id: str
    run_id: str | None = None
    wait: bool = False
    timeout_ms: int | None = None


@message("list")
@dataclass
class ListWorkflows(Message):
    """One page of runs, newest first: ``{"runs": [...], "next": cursor or None}``.

    ``after`` is the ``next`` of the previous page (where that page stopped).
    """

    req_id: int
    status: str | None = None
    workflow_type: str | None = None
    limit: int = 100
    after: list[Any] | None = None


@message("inbox")
@dataclass
class GetInbox(Message):
    """One page of the inbox in arrival order: ``{"events": [...], "next": seq or None}``."""

    req_id: int
    workflow_id: str
    run_id: str | None = None
    after_seq: int = 0
    limit: int = PAGE_ROWS


@message("inspect")
@dataclass
class InspectRun(Message):
    """What ``grctl check`` needs beyond describe, a page of step records at a time.

    The reply: the run's ``handler_kind``, ``step_name``, ``wait_timeout_step``, the in-flight
    step's ``records`` after op ``after_op`` as ``{op, kind, name}`` (one per operation; a
    ``patched`` record keeps its ``value``), ``next`` (the op to ask after, None at the end),
    ``pending_events`` (the names of the events waiting in its inbox) and ``deployed``: the
    events, queries and steps of the type as its workers registered it.
    """

    req_id: int
    workflow_id: str
    run_id: str | None = None
    after_op: int = -1
    limit: int = PAGE_ROWS


@message("abandon")
@dataclass
class Abandon(Message):
    """The client gave up on request ``req_id`` (a wait timed out, a stream was left)."""

    abandoned: int


@message("prune")
@dataclass
class PruneRuns(Message):
    """Delete ended runs that ended more than ``older_than_ms`` ago (``dry_run``: only count).

    Replies ``{"removed", "dry_run", "before_ms", "by_status", "by_type", "runs"}``; ``runs``
    lists the first of them (the counts cover all).
    """

    req_id: int
    older_than_ms: int
    status: str | None = None
    workflow_type: str | None = None
    dry_run: bool = False


@message("status")
@dataclass
class DaemonStatus(Message):
    req_id: int


@message("shutdown")
@dataclass
class Shutdown(Message):
    req_id: int


# -- worker ↔ daemon -------------------------------------------------------------------------


@message("register_worker")
@dataclass
class RegisterWorker(Message):
    """A worker's workflow definitions (see ``Workflow.definition()``) and its capacity."""

    req_id: int
    workflows: list[dict[str, Any]]
    concurrency: int = 100


@message("members")
@dataclass
class Members(Message):
    """Pushed to workers when the cluster changes: every other live member, as in ``Welcome``.

    Each is ``{"name", "host", "socket", "address"}``: its member name, its host name, its Unix
    socket path (reachable on that host) and its TCP address (``HOST:PORT``, or None). A worker
    registers with every member, so each daemon reaches workers for the runs it owns.
    """

    members: list[Any]


@message("heartbeat")
@dataclass
class Heartbeat(Message):
    pass


@message("dispatch_step")
@dataclass
class DispatchStep(Message):
    """Run one step: everything the worker needs travels here, so a step is one round trip.

    ``dispatch_id`` is the fencing token: only the latest dispatch of a step may report.
    ``records`` are the outcomes the step already recorded (tasks, ``ctx.now()``…), for replay.
    """

    dispatch_id: str
    workflow_id: str
    run_id: str
    workflow_type: str
    step_name: str
    handler_kind: str  # start, step, event
    args: Any
    store: dict[str, Any]
    records: list[Any]
    attempt: int
    timeout_ms: int
    parent_workflow_id: str | None = None
    parent_run_id: str | None = None
    # How many steps of this run the worker may run in place after this one before it reports
    # (``grctl.worker._chain``); 0: report this step alone.
    chain: int = 0
    # Handed out before the unit that dispatched it is durable: before its first task or other
    # durable call the worker asks ``Settle`` and waits for the answer (that commit is durable).
    early: bool = False


@message("record")
@dataclass
class RecordOutcome(Message):
    """Make one task outcome or deterministic value durable before the step goes on."""

    req_id: int
    dispatch_id: str
    record: Any


@message("start_child")
@dataclass
class StartChild(Message):
    req_id: int
    dispatch_id: str
    record: Any
    workflow_type: str
    workflow_id: str
    workflow_input: Any = None
    completion_event: str | None = None
    run_timeout_ms: int | None = None  # the child fails with RunTimeout when not ended by then


@message("send_to_parent")
@dataclass
class SendToParent(Message):
    req_id: int
    dispatch_id: str
    record: Any
    event_name: str
    payload: Any = None


@message("complete_step")
@dataclass
class CompleteStep(Message):
    """A step ended: either a directive with its store writes, or the error it raised."""

    req_id: int
    dispatch_id: str
    directive: dict[str, Any] | None = None
    store_writes: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    # The last progress value of each name the step emitted (kept in the history); None if none.
    progress: dict[str, Any] | None = None
    # The steps the worker then ran in place (``DispatchStep.chain``), in order: each a map of
    # ``step_name`` and this message's outcome fields. Committed with this one, as one unit.
    chain: list[Any] | None = None
    # The step the worker runs in place now and asks to keep: the reply's ``adopted`` is its
    # dispatch (``dispatch_id``, ``attempt``, ``timeout_ms``), or None if the run went elsewhere.
    running: str | None = None


@message("progress")
@dataclass
class Progress(Message):
    """A progress event of a running step (``ctx.emit``): one way, no reply, no commit.

    The daemon hands it to the run's followers (holding the latest of each name for followers
    to come until the step ends); a stale ``dispatch_id`` (the step moved on) is dropped. The
    last of each name travels again in ``CompleteStep.progress``, and is committed with it.
    """

    dispatch_id: str
    name: str
    data: Any = None
    ts_ms: int = 0


@message("cancel_step")
@dataclass
class CancelStep(Message):
    dispatch_id: str
    reason: str = ""


@message("settle")
@dataclass
class Settle(Message):
    """A step handed out early (``DispatchStep.early``) is about to act: answered once the unit
    that dispatched it is durable (at once if it is already)."""

    req_id: int
    dispatch_id: str


@message("end_chain")
@dataclass
class EndChain(Message):
    """The run of this dispatch was cancelled: the worker runs no more steps in place after
    the one it runs now (``DispatchStep.chain``). One way, no reply."""

    dispatch_id: str


@message("run_query")
@dataclass
class RunQuery(Message):
    query_id: str
    workflow_id: str
    run_id: str
    workflow_type: str
    query_name: str
    store: dict[str, Any]


@message("query_answer")
@dataclass
class QueryAnswer(Message):
    query_id: str
    value: Any = None
    error: dict[str, Any] | None = None


# -- encoding (the bytes themselves are grctl.codec's) ----------------------------------------


def encode(msg: Message) -> bytes:
    """One message → one frame (header included)."""
    return codec.frame({"kind": msg.kind, **msg.__dict__}, msg.kind)


def decode(body: bytes, open_values: bool = False) -> Message:
    """One frame body → its message, checking kind, fields and their types."""
    try:
        data = codec.unpack(body, open_values)
    except Exception as exc:
        raise ProtocolError(f"frame is not valid msgpack: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise ProtocolError("frame is not a map with a 'kind'")
    kind = data.pop("kind")
    cls = MESSAGES.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message kind {kind!r}")
    for name, allowed in cls._field_checks:
        if allowed is not None and name in data and not isinstance(data[name], allowed):
            raise ProtocolError(f"field {name!r} of {kind!r} has the wrong type")
        if name in data and allowed == (int,) and isinstance(data[name], bool):
            raise ProtocolError(f"field {name!r} of {kind!r} has the wrong type")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ProtocolError(f"bad fields for {kind!r}: {exc}") from None


async def read_message(
    reader: asyncio.StreamReader, open_values: bool = False, limit: int = MAX_FRAME_BYTES
) -> Message | None:
    """Read one frame; ``None`` at a clean end of stream. Raises ProtocolError on a bad frame."""
    body = await codec.read_frame(reader, limit)
    return None if body is None else decode(body, open_values)
