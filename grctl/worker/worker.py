"""The worker loop: register workflow types, take step dispatches, run them, report.

A worker holds one connection to the daemon it is given, and, when that daemon is a member of
a cluster (several daemons on one database), one to each other member (see ``_session``). It
survives a daemon restart by reconnecting and registering again; the daemon re-dispatches
whatever was in flight, and replay makes that safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import traceback
from typing import Any

from grctl import protocol as p
from grctl._connection import Connection, Endpoint
from grctl.errors import (
    GrctlError,
    InvalidProgressError,
    NonDeterminismError,
    StoreValueError,
    WorkflowDefinitionError,
)
from grctl.models.child import ChildResult
from grctl.models.directive import Directive
from grctl.resources import Factory, Resource, Resources
from grctl.signature import split_args
from grctl.worker import _chain
from grctl.worker._env import Env
from grctl.worker._replay import StepRun, current_step
from grctl.worker._session import Session
from grctl.worker.context import Context, RunInfo
from grctl.workflow import Workflow

log = logging.getLogger("grctl.worker")

DEFAULT_CONCURRENCY = 100
DEFAULT_SHUTDOWN_GRACE_S = 10.0

# Errors a retry cannot mend: the run fails at once whatever the step's retry policy says.
NON_RETRYABLE = (
    NonDeterminismError,
    WorkflowDefinitionError,
    StoreValueError,
    InvalidProgressError,
)


class Worker:
    """Runs the steps of the given workflows for the daemon.

    The daemon is reached as ``Client.connect`` reaches it: on ``socket_path`` (or ``home``'s
    socket), or over TCP at ``address`` with a token and maybe TLS; unset, from GRCTL_SOCKET /
    GRCTL_HOME, GRCTL_ADDRESS, GRCTL_TOKEN and GRCTL_TLS_CA. When that daemon is a member of a
    cluster, the worker also registers with every other member it lists (each dispatches only
    the runs it owns), on its Unix socket or TCP address (``Endpoint.for_member``).

    ``concurrency`` bounds the steps in flight (default 100) that each daemon gives this worker:
    it is registered as is with every member, and each paces itself by it. So in a cluster of N
    members the process may run up to N × ``concurrency`` steps at once.

    ``resources`` swaps Resource factories on this worker: ``{make_pool: make_fake_pool}``
    makes every ``Resource(make_pool)`` parameter of its steps, tasks and queries get what
    ``make_fake_pool`` makes (tests use it). Cached resources are torn down when ``run()``
    returns.
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
        resources: dict[Factory, Factory] | None = None,
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
        self.chain_budget_s = _chain.chain_budget_s(os.environ.get("GRCTL_CHAIN_BUDGET_MS"))
        self.resources = Resources(resources)
        self.shutdown_grace_s = shutdown_grace_s
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.registered = asyncio.Event()  # set while the seed session is registered
        self._seed = Session(self, self.endpoint)
        self._sessions: dict[str, Session] = {}  # the other members', by member name
        self._session_tasks: set[asyncio.Task[None]] = set()
        self._listed: set[str] = set()  # the members the latest list names, its sender included
        self._unreachable: set[str] = set()  # members already warned of

    @property
    def workflows(self) -> dict[str, Workflow]:
        return dict(self._workflows)

    @property
    def members_connected(self) -> set[str]:
        """The cluster members this worker is registered with now (the seed's included); empty
        for a lone daemon."""
        sessions = [self._seed, *self._sessions.values()]
        return {s.member for s in sessions if s.registered and s.member is not None}

    async def run(self) -> None:
        """Serve until ``stop()``; reconnects when the daemon restarts.

        Raises DaemonUnavailableError when the daemon does not answer at first. The sessions
        with the other members of its cluster end when this returns.
        """
        try:
            await self._seed.serve()
        finally:
            await self._end_sessions()
            await self.resources.aclose()

    async def stop(self) -> None:
        """Stop taking steps, let running ones finish (``shutdown_grace_s``), then disconnect.

        This holds for every member served. A step still running after the grace period is
        stopped; its daemon dispatches it again at once, and replay makes that safe. A second
        ``stop()`` skips the rest of the wait.
        """
        if self._stopping.is_set():
            self.shutdown_grace_s = 0
            for session in [self._seed, *self._sessions.values()]:
                session.cancel_steps()
        self._stopping.set()

    def _members_changed(self, sender: str | None, members: list[Any]) -> None:
        """A Welcome or a Members push named the other live members: serve each of them.

        The latest list wins, with its ``sender`` (a member does not list itself). Every listed
        member but the seed's own gets a session; a session whose member is no longer listed
        ends.
        """
        if self._stopping.is_set():
            return
        infos = {m["name"]: m for m in members if isinstance(m, dict) and m.get("name")}
        self._listed = set(infos) | ({sender} if sender else set())
        for name in list(self._sessions):
            if not self._serves(name):
                self._sessions.pop(name).retire()
        for name, info in infos.items():
            if self._serves(name):
                self._serve_member(name, info)

    def _serves(self, name: str) -> bool:
        return name in self._listed and name != self._seed.member

    def _serve_member(self, name: str, info: dict[str, Any]) -> None:
        """Start the member's session, or point the one it has at where it is listed now."""
        endpoint = self._member_endpoint(name, info)
        if endpoint is None:
            return
        session = self._sessions.get(name)
        if session is not None:
            session.endpoint = endpoint  # taken at its next reconnect
            return
        session = self._sessions[name] = Session(self, endpoint, name)
        task = asyncio.create_task(session.serve(), name=f"grctl-member-{name}")
        self._session_tasks.add(task)
        task.add_done_callback(lambda t: self._session_ended(name, session, t))

    def _member_endpoint(self, name: str, info: dict[str, Any]) -> Endpoint | None:
        """Where this worker reaches the member; None (said once) when it cannot."""
        try:
            endpoint = self.endpoint.for_member(info)
        except ValueError as exc:
            endpoint, why = None, str(exc)
        else:
            why = (
                f"it listens on no TCP address and its socket is not on this host (it is on "
                f"{info.get('host')!r}); start that daemon with --listen HOST:PORT"
            )
        if endpoint is None and name not in self._unreachable:
            self._unreachable.add(name)
            log.warning("worker %s cannot reach cluster member %s: %s", self.name, name, why)
        return endpoint

    def _session_ended(self, name: str, session: Session, task: asyncio.Task[None]) -> None:
        """Forget a finished member session; the next list that names its member starts anew."""
        self._session_tasks.discard(task)
        if self._sessions.get(name) is session:
            del self._sessions[name]
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            log.error(
                "worker %s stopped serving member %s: %s",
                self.name,
                name,
                exc,
                exc_info=None if isinstance(exc, GrctlError) else exc,
            )

    async def _end_sessions(self) -> None:
        """Let the member sessions drain (a graceful stop), then stop whatever is left."""
        tasks = set(self._session_tasks)
        if tasks and self._stopping.is_set():
            await asyncio.wait(tasks, timeout=self.shutdown_grace_s)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _definitions(self) -> list[dict[str, Any]]:
        return [wf.definition() for wf in self._workflows.values()]

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def _run_step(
        self, d: p.DispatchStep, conn: Connection, env: Env | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Run one dispatched step: its outcome as CompleteStep's fields (the error it raised),
        and the store as the step leaves it (None when the step failed). ``env``: a chained
        step's (``_chain``), which waits for its token."""
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
            }, None
        if env is None:
            env = Env(conn, d.dispatch_id, early=d.early)
        step = StepRun(d.step_name, d.records, env.record)
        step.resources = self.resources
        step.emitter = env.emit
        if env.held_back:
            step.handed_over = env.handed_over
        wanted = wf.resources.get(fn) if wf.resources else None
        scope: contextlib.AsyncExitStack | None = None
        run = RunInfo(
            d.run_id, d.workflow_id, d.workflow_type, d.parent_workflow_id, d.parent_run_id
        )
        ctx = Context(wf, run, d.step_name, d.store, step, env)
        token = current_step.set(step)
        try:
            if d.handler_kind in ("start", "event"):
                args, kwargs = split_args(d.args)
            elif d.args is None:
                args, kwargs = (), {}
            else:  # the target of a wait_for_child, given the child's outcome
                param = wf.child_params.get(d.step_name, ("child", True))[0]
                args, kwargs = (), {param: ChildResult.from_wire(d.args)}
            if wanted is not None:
                scope = contextlib.AsyncExitStack()
                args, kwargs = _with_resources(fn, wanted, args, kwargs)
                kwargs |= await self.resources.fill(wanted, scope)
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
            store = None
            outcome: dict[str, Any] = {
                "error": {
                    "type": type(exc).__name__,
                    "message": str(exc),
                    "traceback": traceback.format_exc(),
                    "non_retryable": isinstance(exc, NON_RETRYABLE),
                }
            }
        else:
            wire = directive.to_wire()
            wire["result"] = p.wrap_value(directive.result)
            outcome = {"directive": wire, "store_writes": ctx.store.pending_writes}
            store = ctx.store.after
        finally:
            current_step.reset(token)
            if scope is not None:
                await _teardown(scope, d.step_name)
        if step.progress is not None:  # the step emitted: the last of each name goes along
            outcome["progress"] = step.progress
        return outcome, store

    async def _answer_query(self, q: p.RunQuery, conn: Connection) -> p.QueryAnswer:
        """Run a query handler on the store the daemon sent; its answer (or the error)."""
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
            ctx = Context(wf, run, q.query_name, q.store, step, Env(conn, None))
            wanted = wf.resources.get(query.fn) if wf.resources else None
            try:
                if wanted is None:
                    value = await query.fn(ctx)
                else:
                    async with contextlib.AsyncExitStack() as scope:
                        value = await query.fn(ctx, **await self.resources.fill(wanted, scope))
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
        return answer


def _with_resources(
    fn: Any, wanted: dict[str, Resource], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Input given as one positional value goes to the one parameter that is not a Resource
    (the daemon bound it so), wherever the Resource parameters stand."""
    if not args:
        return args, kwargs
    names = [n for n in list(inspect.signature(fn).parameters)[1:] if n not in wanted]
    if not names:
        return args, kwargs
    return (), {**kwargs, names[0]: args[0]}


async def _teardown(scope: contextlib.AsyncExitStack, step_name: str) -> None:
    """End a step's ``cache=False`` resources; a teardown that raises is logged, not fatal."""
    try:
        await scope.aclose()
    except Exception:
        log.exception("tearing down the resources of step %s failed", step_name)
