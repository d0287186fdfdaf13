"""Client and WorkflowHandle: start runs, send events, query, wait, inspect — on the daemon."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from grctl import protocol as p
from grctl._connection import Connection, Endpoint
from grctl._listing import History, Paged
from grctl.codec import not_serialisable
from grctl.duration import run_timeout_ms
from grctl.errors import (
    RunTimeout,
    StoreValueError,
    WorkflowCancelledError,
    WorkflowFailedError,
)
from grctl.models.progress import ProgressEvent
from grctl.models.run import InboxEvent, ResetInfo, RunInfo
from grctl.models.schedule import FireOutcome, ScheduleInfo


class Client:
    """A connection to the daemon; ``async with await Client.connect() as client``."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @classmethod
    async def connect(
        cls,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        home: str | None = None,
        address: str | None = None,
        token: str | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        token_file: str | os.PathLike[str] | None = None,
    ) -> Client:
        """Connect to the daemon on its socket, or over TCP at ``address`` (``HOST:PORT``).

        Unset, the socket comes from GRCTL_SOCKET / GRCTL_HOME, or the address from
        GRCTL_ADDRESS (an explicit socket or home wins over it). Over TCP the daemon wants a
        token (``token``, ``token_file``, else GRCTL_TOKEN) and, if it speaks TLS, the CA that
        signed its certificate (``tls_ca``, else GRCTL_TLS_CA). A wrong token raises
        UnauthorizedError; a malformed address or an unreadable file, ValueError.
        """
        endpoint = Endpoint.resolve(
            socket_path,
            home=home,
            address=address,
            token=token,
            token_file=token_file,
            tls_ca_file=tls_ca,
        )
        return cls(await Connection.open(endpoint, "client"))

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._conn.close()

    async def _call(self, build: Any) -> Any:
        return await self._conn.request(build)

    async def start_workflow(
        self,
        workflow_type: str,
        workflow_id: str,
        workflow_input: Any = None,
        run_timeout: timedelta | None = None,
    ) -> WorkflowHandle:
        """Start a run; raises WorkflowAlreadyRunningError if ``workflow_id`` has an active one.

        With ``run_timeout``, the run fails with ``RunTimeout`` if it has not ended that long
        after its start, whatever it is doing (its running step is stopped on its worker).
        """
        timeout_ms = run_timeout_ms(run_timeout, workflow_id)
        data = await self._call(
            lambda r: p.StartWorkflow(
                r, workflow_type, workflow_id, _wrap(workflow_input, "workflow_input"), timeout_ms
            )
        )
        return WorkflowHandle(self, data["workflow_id"], data["run_id"])

    async def send_with_start(
        self,
        workflow_type: str,
        workflow_id: str,
        event_name: str,
        payload: Any = None,
        input: Any = None,
        idempotency_key: str | None = None,
        run_timeout: timedelta | None = None,
    ) -> WorkflowHandle:
        """Send an event to ``workflow_id``'s active run, starting one first if none is active.

        The start and the event are committed together (both or neither); a concurrent start
        of the same id is not an error: the event goes to whichever run won. The handle's
        ``started`` says whether this call started the run, ``sent`` holds the send's reply
        (``inbox_seq``, and ``duplicate`` when ``idempotency_key`` is given). ``run_timeout``
        applies to the run this call starts, as in ``start_workflow`` (not to an active one).
        """
        timeout_ms = run_timeout_ms(run_timeout, workflow_id)
        data = await self._call(
            lambda r: p.SendWithStart(
                r,
                workflow_type,
                workflow_id,
                event_name,
                _wrap(payload, "payload"),
                _wrap(input, "input"),
                idempotency_key,
                timeout_ms,
            )
        )
        handle = WorkflowHandle(self, data["workflow_id"], data["run_id"])
        handle.started = bool(data.get("started"))
        handle.sent = data
        return handle

    def get_workflow_handle(self, workflow_id: str, run_id: str | None = None) -> WorkflowHandle:
        """A handle to the latest run of ``workflow_id`` (or to ``run_id``); no round trip."""
        return WorkflowHandle(self, workflow_id, run_id)

    def list_workflows(
        self, status: str | None = None, workflow_type: str | None = None, limit: int | None = 100
    ) -> Paged[RunInfo]:
        """Runs, newest first, filtered by status and type; at most ``limit`` (None: all).

        ``await`` it for a list, or ``async for`` over it to get runs as their pages arrive.
        """

        async def page(after: Any, size: int) -> tuple[list[RunInfo], Any]:
            data = await self._call(
                lambda r: p.ListWorkflows(r, status, workflow_type, size, after)
            )
            return [RunInfo.from_wire(row) for row in data["runs"]], data["next"]

        return Paged(page, limit)

    async def prune(
        self,
        older_than: timedelta,
        status: str | None = None,
        workflow_type: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Delete ended runs that ended more than ``older_than`` ago (``dry_run``: only count).

        Returns ``removed`` (how many), ``by_status``, ``by_type`` and the first ``runs``.
        """
        older_than_ms = int(older_than / timedelta(milliseconds=1))
        return await self._call(
            lambda r: p.PruneRuns(r, older_than_ms, status, workflow_type, dry_run)
        )

    # -- schedules --------------------------------------------------------------------------

    async def create_schedule(
        self,
        name: str,
        workflow_type: str,
        cron: str,
        workflow_input: Any = None,
        overlap: str = "skip",
        timezone: str = "UTC",
    ) -> ScheduleInfo:
        """Create a durable schedule that starts a run of ``workflow_type`` at each fire time.

        Each fire starts workflow_id ``NAME-<fire time>`` (UTC, e.g.
        ``nightly-2026-12-05T03:00:00Z``) with ``workflow_input``. ``cron`` has five fields
        (minute hour day-of-month month day-of-week) or six with seconds first; it is read in
        ``timezone`` (an IANA name). ``overlap="skip"`` skips (and counts) a fire while the
        schedule's previous run is still active; ``"allow"`` starts it anyway. A fire missed
        while the daemon was down runs once when it starts again. Raises InvalidInputError for
        a bad expression or zone, WorkflowTypeNotRegisteredError for an unknown type, and
        ScheduleExistsError when the name is taken.
        """
        data = await self._call(
            lambda r: p.CreateSchedule(
                r,
                name,
                workflow_type,
                cron,
                timezone,
                _wrap(workflow_input, "workflow_input"),
                overlap,
            )
        )
        return ScheduleInfo.from_wire(data)

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule, by name."""
        data = await self._call(lambda r: p.ListSchedules(r))
        return [ScheduleInfo.from_wire(row) for row in data["schedules"]]

    async def describe_schedule(self, name: str) -> ScheduleInfo:
        """One schedule, with the status of its last run; ScheduleNotFoundError if none."""
        return ScheduleInfo.from_wire(await self._call(lambda r: p.DescribeSchedule(r, name)))

    async def pause_schedule(self, name: str) -> ScheduleInfo:
        """Stop firing until ``resume_schedule`` (fires due meanwhile are not made up)."""
        return ScheduleInfo.from_wire(await self._call(lambda r: p.PauseSchedule(r, name)))

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Fire again, from the next fire time after now."""
        return ScheduleInfo.from_wire(await self._call(lambda r: p.ResumeSchedule(r, name)))

    async def trigger_schedule(self, name: str) -> FireOutcome:
        """Fire now, once (the overlap rule applies); the next fire time stays as it was."""
        return FireOutcome.from_wire(await self._call(lambda r: p.TriggerSchedule(r, name)))

    async def delete_schedule(self, name: str) -> None:
        """Delete the schedule; the runs it started are left alone."""
        await self._call(lambda r: p.DeleteSchedule(r, name))

    async def daemon_status(self) -> dict[str, Any]:
        """Socket, database, uptime, workers and runs by status."""
        return await self._call(lambda r: p.DaemonStatus(r))

    async def shutdown_daemon(self) -> None:
        """Ask the daemon to stop gracefully (in-flight commits finish)."""
        await self._call(lambda r: p.Shutdown(r))


class WorkflowHandle:
    """One workflow_id (and optionally one run): send, query, result, cancel, describe, history."""

    def __init__(self, client: Client, workflow_id: str, run_id: str | None = None) -> None:
        self._client = client
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.started = False  # set by Client.send_with_start: whether it started this run
        self.sent: dict[str, Any] | None = None  # and its send's reply

    def __repr__(self) -> str:
        return f"WorkflowHandle(workflow_id={self.workflow_id!r}, run_id={self.run_id!r})"

    async def send(
        self, event_name: str, payload: Any = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Append an event to the run's inbox; acknowledged once it is durable.

        With ``idempotency_key``, a second send with the same key to the same run (a retry) is
        acknowledged with the first one's ``inbox_seq`` and ``duplicate: True``, and not stored
        again. Returns ``inbox_seq``, ``workflow_id``, ``run_id`` (and ``duplicate``).
        """
        return await self._client._call(
            lambda r: p.SendEvent(
                r,
                self.workflow_id,
                event_name,
                _wrap(payload, "payload"),
                self.run_id,
                idempotency_key,
            )
        )

    async def query(self, query_name: str) -> Any:
        """Run a query handler against the run's committed store."""
        return await self._client._call(
            lambda r: p.QueryWorkflow(r, self.workflow_id, query_name, self.run_id)
        )

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to end and return its result.

        Raises WorkflowFailedError or WorkflowCancelledError for runs that did not complete,
        and TimeoutError when ``timeout`` seconds pass first.
        """
        if timeout is None:
            data = await self._client._call(
                lambda r: p.GetResult(r, self.workflow_id, self.run_id, True)
            )
            return outcome_value(data)
        # The daemon ends the wait at the timeout (ResultTimeoutError is a TimeoutError); the
        # local deadline, a little later, covers a daemon that cannot answer.
        timeout_ms = max(0, int(timeout * 1000))
        call = self._client._call(
            lambda r: p.GetResult(r, self.workflow_id, self.run_id, True, timeout_ms)
        )
        data = await asyncio.wait_for(call, timeout + _TIMEOUT_SLACK_S)
        return outcome_value(data)

    async def cancel(self, reason: str | None = None) -> None:
        """Let the running step finish, then end the run ``cancelled``."""
        await self._client._call(
            lambda r: p.CancelWorkflow(r, self.workflow_id, self.run_id, reason)
        )

    async def terminate(self, reason: str | None = None) -> None:
        """End the run now and stop its step on the worker."""
        await self._client._call(
            lambda r: p.TerminateWorkflow(r, self.workflow_id, self.run_id, reason)
        )

    async def reset(self, to_step: str, dry_run: bool = False) -> ResetInfo:
        """Start a new run of this workflow_id at ``to_step``, with the store as it was
        committed when that step last began in this run (the latest, unless the handle names
        one) and the arguments it began with. An active run is terminated in the same commit.
        ``dry_run`` changes nothing and says what the reset would do. Refused
        (InvalidInputError) when the step is unknown or never began in the run.
        """
        data = await self._client._call(
            lambda r: p.ResetWorkflow(r, self.workflow_id, to_step, self.run_id, dry_run)
        )
        return ResetInfo.from_wire(data)

    async def describe(self) -> RunInfo:
        """Status, current step and attempt, worker, store, timers, result or error."""
        data = await self._client._call(
            lambda r: p.DescribeWorkflow(r, self.workflow_id, self.run_id)
        )
        return RunInfo.from_wire(data)

    def inbox(self) -> Paged[InboxEvent]:
        """The run's inbox in arrival order: ``await`` it for a list, or ``async for`` over it."""

        async def page(after: Any, size: int) -> tuple[list[InboxEvent], Any]:
            data = await self._client._call(
                lambda r: p.GetInbox(r, self.workflow_id, self.run_id, after or 0, size)
            )
            return [InboxEvent.from_wire(row) for row in data["events"]], data["next"]

        return Paged(page, None)

    async def inspect(self, after_op: int = -1, limit: int = p.PAGE_ROWS) -> dict[str, Any]:
        """What ``grctl check`` reads of a run: where it stands and a page of its step's records.

        A map with ``handler_kind``, ``step_name``, ``wait_timeout_step``, ``records`` (the
        in-flight step's operations after ``after_op``: ``{op, kind, name}``), ``next`` (the
        ``after_op`` of the next page, None after the last), ``pending_events`` (names
        waiting in the inbox) and ``deployed`` (the steps, events and queries of the type as
        its workers last registered it, or None).
        """
        return await self._client._call(
            lambda r: p.InspectRun(r, self.workflow_id, self.run_id, after_op, limit)
        )

    def history(self, follow: bool = False, after_seq: int = 0, progress: bool = False) -> History:
        """``await handle.history()`` for a list; ``async for ev in handle.history(follow=True)``.

        With ``follow`` and ``progress``, the run's live progress events (``ProgressEvent``)
        come in among its history events, as ``grctl history --follow`` shows them.
        """
        return History(self, follow, after_seq, progress)

    async def stream(self) -> AsyncIterator[ProgressEvent]:
        """The run's progress events (``ctx.emit``) as its steps emit them, until it ends.

        Coming in mid-step, it begins with the latest event of each name that step emitted
        (earlier steps' are in the history); the stream of an ended run ends at once. A reader
        slower than the steps misses older events, never a name's latest (``ev.dropped``).
        """
        chunks = self._client._conn.stream(
            lambda r: p.GetHistory(
                r, self.workflow_id, self.run_id, follow=True, progress=True, only_progress=True
            )
        )
        try:
            async for chunk in chunks:
                for row in chunk:
                    if row.get("seq") is None:
                        yield ProgressEvent.from_wire(row)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


_TIMEOUT_SLACK_S = 5.0


def _wrap(value: Any, what: str) -> Any:
    try:
        return p.wrap_value(value)
    except Exception:
        raise StoreValueError(
            not_serialisable(value, what, "use strings, numbers, lists, dicts, booleans or None")
        ) from None


def outcome_value(data: dict[str, Any]) -> Any:
    """The result of an ended run, or its failure raised as a typed error."""
    status = data["status"]
    wid, rid = data.get("workflow_id"), data.get("run_id")
    if status == "completed":
        return data.get("result")
    if status == "failed":
        error = data.get("error") or {}
        cls = RunTimeout if error.get("type") == "RunTimeout" else WorkflowFailedError
        raise cls(
            f"workflow {wid!r} failed: {error.get('type', 'Error')}: {error.get('message', '')}",
            workflow_id=wid,
            run_id=rid,
            details=error,
        )
    reason = data.get("reason")
    raise WorkflowCancelledError(
        f"workflow {wid!r} was {status}{f': {reason}' if reason else ''}",
        workflow_id=wid,
        run_id=rid,
        details={"status": status, "reason": reason},
    )
