"""The worker loop: register workflow types, take step dispatches, run them, report.

A worker holds one connection to the daemon. It survives a daemon restart by reconnecting and
registering again; the daemon re-dispatches whatever was in flight, and replay makes that safe.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import traceback
from typing import Any

from grctl import _faults as faults
from grctl import protocol as p
from grctl._connection import Connection, Endpoint
from grctl.errors import (
    DaemonUnavailableError,
    GrctlError,
    NonDeterminismError,
    ProtocolError,
    StaleDispatchError,
    StoreValueError,
    WorkflowDefinitionError,
)
from grctl.models.directive import Directive
from grctl.signature import split_args
from grctl.worker._replay import StepRun, current_step
from grctl.worker.context import Context, RunInfo
from grctl.workflow import Workflow

log = logging.getLogger("grctl.worker")

DEFAULT_CONCURRENCY = 100
DEFAULT_SHUTDOWN_GRACE_S = 10.0
HEARTBEAT_INTERVAL_S = 2.0
RECONNECT_DELAY_S = 0.2
RECONNECT_MAX_DELAY_S = 2.0

# Errors a retry cannot mend: the run fails at once whatever the step's retry policy says.
NON_RETRYABLE = (NonDeterminismError, WorkflowDefinitionError, StoreValueError)


class _Env:
    """The StepEnv of one dispatch: every durable call carries its fencing token."""

    def __init__(self, worker: Worker, dispatch: p.DispatchStep) -> None:
        self._worker = worker
        self._dispatch = dispatch

    async def record(self, rec: dict[str, Any]) -> None:
        did = self._dispatch.dispatch_id
        await self._worker._request(lambda r: p.RecordOutcome(r, did, p.wrap_value(rec)))

    async def start_child(
        self,
        rec: dict[str, Any],
        workflow_type: str,
        workflow_id: str,
        workflow_input: Any,
        completion_event: str | None,
    ) -> dict[str, Any]:
        did = self._dispatch.dispatch_id
        return await self._worker._request(
            lambda r: p.StartChild(
                r,
                did,
                p.wrap_value(rec),
                workflow_type,
                workflow_id,
                p.wrap_value(workflow_input),
                completion_event,
            )
        )

    async def send_to_parent(self, rec: dict[str, Any], event_name: str, payload: Any) -> None:
        did = self._dispatch.dispatch_id
        await self._worker._request(
            lambda r: p.SendToParent(r, did, p.wrap_value(rec), event_name, p.wrap_value(payload))
        )

    async def wait_result(self, workflow_id: str, run_id: str | None) -> dict[str, Any]:
        return await self._worker._request(lambda r: p.GetResult(r, workflow_id, run_id, True))


class Worker:
    """Runs the steps of the given workflows for the daemon.

    ``concurrency`` bounds the steps in flight in this process (default 100). The daemon is
    reached as ``Client.connect`` reaches it: on ``socket_path`` (or ``home``'s socket), or over
    TCP at ``address`` with a token and maybe TLS; unset, from GRCTL_SOCKET / GRCTL_HOME,
    GRCTL_ADDRESS, GRCTL_TOKEN and GRCTL_TLS_CA.
    """

    def __init__(
        self,
        workflows: list[Workflow],
        socket_path: str | os.PathLike[str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        name: str | None = None,
        shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S,
        *,
        home: str | os.PathLike[str] | None = None,
        address: str | None = None,
        token: str | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        token_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._workflows: dict[str, Workflow] = {}
        for wf in workflows:
            if not isinstance(wf, Workflow):
                raise TypeError(f"Worker(workflows=[...]) takes Workflow objects, got {wf!r}")
            if wf.workflow_type in self._workflows:
                raise WorkflowDefinitionError(
                    f"two workflows share the workflow_type {wf.workflow_type!r}"
                )
            wf.validate()
            self._workflows[wf.workflow_type] = wf
        self.endpoint = Endpoint.resolve(
            socket_path,
            home=home,
            address=address,
            token=token,
            token_file=token_file,
            tls_ca_file=tls_ca,
        )
        self.concurrency = concurrency
        self.shutdown_grace_s = shutdown_grace_s
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._conn: Connection | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.registered = asyncio.Event()

    @property
    def workflows(self) -> dict[str, Workflow]:
        return dict(self._workflows)

    async def run(self) -> None:
        """Serve until ``stop()``; reconnects when the daemon restarts."""
        delay = RECONNECT_DELAY_S
        first = True
        while not self._stopping.is_set():
            try:
                await self._serve_once()
                delay = RECONNECT_DELAY_S
            except DaemonUnavailableError:
                if first:
                    raise
            first = False
            if self._stopping.is_set():
                break
            log.warning("lost the daemon; reconnecting")
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, RECONNECT_MAX_DELAY_S)

    async def _serve_once(self) -> None:
        conn = await Connection.open(self.endpoint, "worker", self.name, on_push=self._on_push)
        self._conn = conn
        try:
            await conn.request(
                lambda r: p.RegisterWorker(
                    r, [wf.definition() for wf in self._workflows.values()], self.concurrency
                )
            )
            self.registered.set()
            log.info("worker %s registered %s", self.name, ", ".join(self._workflows))
            heartbeat = asyncio.create_task(self._heartbeat(conn))
            stop = asyncio.create_task(self._stopping.wait())
            closed = asyncio.create_task(conn.wait_closed())
            await asyncio.wait({stop, closed}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done() and not conn.closed and self._running:
                # Graceful stop: let the steps in flight finish and report (heart still
                # beating); whatever is left after the grace period is dispatched again.
                log.info(
                    "stopping: waiting up to %gs for %d running step(s)",
                    self.shutdown_grace_s,
                    len(self._running),
                )
                drained = asyncio.ensure_future(asyncio.wait(list(self._running.values())))
                await asyncio.wait(
                    {drained, closed},
                    timeout=self.shutdown_grace_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                drained.cancel()
            for t in (heartbeat, stop, closed):
                t.cancel()
        finally:
            self.registered.clear()
            for t in list(self._running.values()):
                t.cancel()
            self._running.clear()
            await conn.close()
            self._conn = None

    async def stop(self) -> None:
        """Stop taking steps, let running ones finish (``shutdown_grace_s``), then disconnect.

        A step still running after the grace period is stopped; the daemon dispatches it again
        at once, and replay makes that safe. A second ``stop()`` skips the rest of the wait.
        """
        if self._stopping.is_set():
            self.shutdown_grace_s = 0
            for t in list(self._running.values()):
                t.cancel()
        self._stopping.set()

    async def _heartbeat(self, conn: Connection) -> None:
        # Beat well inside the daemon's timeout, whatever it is configured to.
        interval = min(HEARTBEAT_INTERVAL_S, conn.heartbeat_timeout_s / 4)
        while not conn.closed:
            await asyncio.sleep(interval)
            try:
                await conn.send(p.Heartbeat())
            except GrctlError:
                return

    async def _request(self, build: Any) -> Any:
        conn = self._conn
        if conn is None:
            raise DaemonUnavailableError("the worker is not connected to the daemon")
        return await conn.request(build)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _on_push(self, msg: p.Message) -> None:
        if isinstance(msg, p.DispatchStep):
            if self._stopping.is_set():
                return  # not started: it goes to another worker when this one disconnects
            self._running[msg.dispatch_id] = self._spawn(self._execute(msg))
        elif isinstance(msg, p.CancelStep):
            t = self._running.pop(msg.dispatch_id, None)
            if t is not None:
                log.info("step dispatch %s stopped by the daemon: %s", msg.dispatch_id, msg.reason)
                t.cancel()
        elif isinstance(msg, p.RunQuery):
            self._spawn(self._query(msg))

    async def _execute(self, d: p.DispatchStep) -> None:
        try:
            outcome = await self._run_step(d)
        except asyncio.CancelledError:
            return
        finally:
            self._running.pop(d.dispatch_id, None)
        if faults.ARMED:
            faults.hit("step_done")
        try:
            await self._request(lambda r: p.CompleteStep(r, d.dispatch_id, **outcome))
        except StaleDispatchError as exc:
            log.warning("result of %s refused: %s", d.step_name, exc)
        except ProtocolError as exc:
            # The outcome (store writes and result together) did not fit in one frame, so
            # nothing was sent: fail the step saying why rather than let it time out.
            error = {
                "type": "StoreValueError",
                "message": f"workflow {d.workflow_type!r}, step {d.step_name!r}: {exc}; keep "
                "store values and results small",
                "non_retryable": True,
            }
            try:
                await self._request(lambda r: p.CompleteStep(r, d.dispatch_id, error=error))
            except GrctlError as again:
                log.warning("could not report step %s: %s", d.step_name, again)
        except GrctlError as exc:
            log.warning("could not report step %s: %s", d.step_name, exc)

    async def _run_step(self, d: p.DispatchStep) -> dict[str, Any]:
        wf = self._workflows.get(d.workflow_type)
        fn = wf.handler(d.handler_kind, d.step_name) if wf else None
        if wf is None or fn is None:
            return {
                "error": {
                    "type": "WorkflowDefinitionError",
                    "message": f"this worker has no {d.handler_kind} handler {d.step_name!r} "
                    f"for workflow {d.workflow_type!r}; is it running an older version of the module?",
                    "non_retryable": True,
                }
            }
        step = StepRun(d.step_name, d.records, _Env(self, d).record)
        run = RunInfo(
            d.run_id, d.workflow_id, d.workflow_type, d.parent_workflow_id, d.parent_run_id
        )
        ctx = Context(wf, run, d.step_name, d.store, step, _Env(self, d))
        token = current_step.set(step)
        try:
            args, kwargs = split_args(d.args) if d.handler_kind in ("start", "event") else ((), {})
            directive = await fn(ctx, *args, **kwargs)
            if not isinstance(directive, Directive):
                raise WorkflowDefinitionError(
                    f"workflow {d.workflow_type!r}, handler {d.step_name!r} returned "
                    f"{type(directive).__name__}; return a directive such as "
                    "ctx.next.complete(result) or ctx.next.step(fn)"
                )
            step.check_finished()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return {
                "error": {
                    "type": type(exc).__name__,
                    "message": str(exc),
                    "traceback": traceback.format_exc(),
                    "non_retryable": isinstance(exc, NON_RETRYABLE),
                }
            }
        finally:
            current_step.reset(token)
        wire = directive.to_wire()
        wire["result"] = p.wrap_value(directive.result)
        return {"directive": wire, "store_writes": ctx.store.pending_writes}

    async def _query(self, q: p.RunQuery) -> None:
        wf = self._workflows.get(q.workflow_type)
        query = wf.queries.get(q.query_name) if wf else None
        answer: p.QueryAnswer
        if query is None:
            answer = p.QueryAnswer(
                q.query_id,
                error={"type": "UnknownQueryError", "message": f"no query {q.query_name!r}"},
            )
        else:

            async def refuse(_: dict[str, Any]) -> None:
                raise WorkflowDefinitionError(
                    f"query {q.query_name!r} of {q.workflow_type!r} called a task or ctx.now(); "
                    "queries only read the store"
                )

            step = StepRun(q.query_name, [], refuse)
            run = RunInfo(q.run_id, q.workflow_id, q.workflow_type)
            ctx = Context(wf, run, q.query_name, q.store, step, _Env(self, None))  # type: ignore[arg-type]
            try:
                value = await query.fn(ctx)
                answer = p.QueryAnswer(q.query_id, value=p.wrap_value(value))
            except Exception as exc:
                answer = p.QueryAnswer(
                    q.query_id,
                    error={
                        "type": type(exc).__name__,
                        "message": str(exc),
                        "traceback": traceback.format_exc(),
                    },
                )
        if self._conn is not None:
            try:
                await self._conn.send(answer)
            except GrctlError:
                pass
