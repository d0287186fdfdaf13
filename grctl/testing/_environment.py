"""WorkflowEnvironment: the real daemon runtime and a real worker in the test's own event loop.

Theory of operation. ``open`` builds what ``grctl daemon start`` builds (the runtime around the
real decider, SQLite storage in a temporary directory, the socket server on a Unix socket in
that directory) and a ``Worker`` for the given workflows, all as tasks of the running loop, and
a ``Client`` on the same socket. The process's clock (``grctl._clock``) becomes a
``SkippingClock``: real time plus what was skipped, read by the daemon's durable timers (wait
timeouts, step deadlines, run timeouts, schedules), by ``ctx.now`` and by the sleeps of
``ctx.sleep`` and task retry backoff.

Time moves in two ways. ``skip`` jumps it; while something awaits a run's result (a waiter is
registered with the runtime), a background task jumps it to the next due timer or sleeper
whenever the engine is *settled*. Settled means: no run being read, decided or committed, no
runtime task pending, nothing due now, and every dispatched step blocked on the clock (asleep
in ``ctx.sleep`` or a task's retry backoff). A step that works (or waits for anything but the
clock) holds time still, so its step timeout never fires because of a jump; it still fires
after the real timeout, as in production.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from grctl import _clock
from grctl.client import Client, WorkflowHandle
from grctl.errors import TestEnvironmentError
from grctl.models import HistoryEvent, RunInfo
from grctl.workflow import Workflow

SETTLE_POLL_S = 0.001  # how often a skip looks at the engine while it settles
IDLE_POLL_S = 0.002  # how often the background skipper looks for a result being awaited
STILL_TURNS = 10  # turns of the loop the engine must stay settled before time may jump


class WorkflowEnvironment:
    """The real engine in the test's process, with a clock that skips (SPEC 8).

    ``async with WorkflowEnvironment(workflows=[order]) as env:`` starts a private daemon
    runtime (a temporary SQLite database, removed on exit) and a worker that serves
    ``workflows``. ``start``, ``send``, ``query``, ``result``, ``describe`` and ``history``
    work as on the ``Client`` and ``WorkflowHandle`` (``env.client`` is a real client, and
    ``start`` returns a real handle). ``await env.skip(timedelta(hours=1))`` jumps time, and
    while a result is awaited time jumps by itself to the next timer whenever nothing runs,
    so a 24 h wait timeout or a retry backoff ends at once.

    One environment at a time per process: the clock it installs is the process's clock.

    Args:
        workflows: the Workflow objects the environment's worker serves (tasks they call work
            as in production).
        resources: replacements for resource factories (``{factory: replacement}``), for
            steps and tasks that declare ``Annotated[T, Resource(factory)]``; passed to the
            worker as ``Worker(resources=...)``.
        concurrency: steps the worker runs at once (as ``Worker(concurrency=...)``).
    """

    def __init__(
        self,
        workflows: Iterable[Workflow],
        *,
        resources: Mapping[Any, Any] | None = None,
        concurrency: int = 100,
    ) -> None:
        self.workflows = list(workflows)
        for wf in self.workflows:
            if not isinstance(wf, Workflow):
                raise TestEnvironmentError(
                    f"WorkflowEnvironment(workflows=[...]) takes Workflow objects, got {wf!r}; "
                    "pass the object made by Workflow(workflow_type=...)"
                )
        self.resources = dict(resources or {})
        self.concurrency = concurrency
        self.clock = _clock.SkippingClock()
        self._client: Client | None = None
        self._dir: Path | None = None
        self._parts: Any = None  # grctl_daemon.embedded.InProcessDaemon
        self._worker: Any = None
        self._worker_task: asyncio.Task[None] | None = None
        self._skipper: asyncio.Task[None] | None = None
        self._skipping = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> WorkflowEnvironment:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Start the runtime, the worker and the client; returns once the worker registered."""
        # The daemon is imported here only: the rest of ``grctl`` never imports it.
        from grctl.worker.worker import Worker
        from grctl_daemon.embedded import InProcessDaemon

        if self._dir is not None:
            raise TestEnvironmentError("this WorkflowEnvironment is open already")
        if _clock.installed() is not None:
            raise TestEnvironmentError(
                "another WorkflowEnvironment is open in this process; close it first (one "
                "environment at a time: its clock is the process's clock)"
            )
        _clock.install(self.clock)
        self._dir = Path(tempfile.mkdtemp(prefix="grctl-env-"))
        try:
            self._parts = InProcessDaemon(self._dir, self.clock)
            await self._parts.start()
            self._client = await Client.connect(self._parts.socket_path)
            self._worker = Worker(
                self.workflows,
                socket_path=self._parts.socket_path,
                concurrency=self.concurrency,
                name="grctl-testing",
                resources=self.resources,
            )
            self._worker_task = asyncio.ensure_future(self._worker.run())
            registered = asyncio.ensure_future(self._worker.registered.wait())
            await asyncio.wait({registered, self._worker_task}, return_when=asyncio.FIRST_COMPLETED)
            if not registered.done():
                registered.cancel()
                self._worker_task.result()  # the worker's own error (a bad definition…)
                raise TestEnvironmentError("the test worker stopped before it registered")
            self._skipper = asyncio.ensure_future(self._skip_while_awaited())
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the worker (steps in flight are abandoned), the runtime, and delete the files."""
        if self._skipper is not None:
            self._skipper.cancel()
            self._skipper = None
        if self._worker is not None:
            await self._worker.stop()
            await self._worker.stop()  # a second stop skips the grace: nothing waits for them
        if self._worker_task is not None:
            try:
                await self._worker_task
            except Exception:  # noqa: BLE001 - its error was raised by open, or does not matter
                pass
            self._worker_task = None
        self._worker = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._parts is not None:
            await self._parts.stop()
            self._parts = None
        if _clock.installed() is self.clock:
            _clock.install(None)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def abandon(self) -> None:
        """Forget an environment whose event loop is gone: its database, clock and files."""
        if self._parts is not None:
            self._parts.abandon()
        self._skipper = self._worker_task = self._worker = self._client = self._parts = None
        if _clock.installed() is self.clock:
            _clock.install(None)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- the client's verbs ---------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The environment's ``Client`` (everything the client does works on it)."""
        if self._client is None:
            raise TestEnvironmentError(
                "the WorkflowEnvironment is not open; use: async with WorkflowEnvironment(...) "
                "as env"
            )
        return self._client

    def handle(self, workflow_id: str, run_id: str | None = None) -> WorkflowHandle:
        """A handle on ``workflow_id`` (its latest run, or ``run_id``)."""
        return self.client.get_workflow_handle(workflow_id, run_id)

    async def start(
        self,
        workflow: Workflow | str,
        workflow_id: str,
        workflow_input: Any = None,
        run_timeout: timedelta | None = None,
    ) -> WorkflowHandle:
        """Start a run of ``workflow`` (the Workflow object or its workflow_type)."""
        workflow_type = workflow.workflow_type if isinstance(workflow, Workflow) else workflow
        return await self.client.start_workflow(
            workflow_type, workflow_id, workflow_input, run_timeout=run_timeout
        )

    async def send(self, workflow_id: str, event_name: str, payload: Any = None) -> dict[str, Any]:
        """Append an event to the run's inbox, as ``handle.send``."""
        return await self.handle(workflow_id).send(event_name, payload)

    async def query(self, workflow_id: str, query_name: str) -> Any:
        """Run a query handler against the run's committed store."""
        return await self.handle(workflow_id).query(query_name)

    async def result(self, workflow_id: str, timeout: float | None = None) -> Any:
        """Wait for the run's end; time skips to each timer while nothing else can happen.

        ``timeout`` is in real seconds, as on ``handle.result``.
        """
        return await self.handle(workflow_id).result(timeout=timeout)

    async def describe(self, workflow_id: str) -> RunInfo:
        """Status, current step, store, timers, result or error of the latest run."""
        return await self.handle(workflow_id).describe()

    async def history(self, workflow_id: str) -> list[HistoryEvent]:
        """The latest run's history so far."""
        return await self.handle(workflow_id).history()

    # -- time -----------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The environment's current time (UTC): real time plus what was skipped."""
        return datetime.fromtimestamp(self.clock.now_us() / 1_000_000, tz=UTC)

    async def skip(self, duration: timedelta) -> None:
        """Jump time by ``duration``, firing each timer and waking each sleeper in due order.

        Before each jump the engine settles (see the module docstring): steps that are working
        finish first, so none times out because of the jump. Returns once the engine settled
        after the last jump, so what the timers started has run (or is asleep).
        """
        ms = int(duration / timedelta(milliseconds=1))
        if ms < 0:
            raise TestEnvironmentError(f"skip({duration!r}): time only moves forward")
        parts = self._open_parts()
        async with self._skipping:
            target = self.clock.now_ms() + ms
            while True:
                await self._settled(parts)
                now = self.clock.now_ms()
                due = parts.next_due()
                if due is None or due > target:
                    self.clock.skip(target - now)
                    await self._settled(parts)
                    return
                self.clock.skip(due - now)

    def _open_parts(self) -> Any:
        if self._parts is None:
            raise TestEnvironmentError(
                "the WorkflowEnvironment is not open; use: async with WorkflowEnvironment(...) "
                "as env"
            )
        return self._parts

    async def _settled(self, parts: Any) -> None:
        while not await self._still(parts):
            await asyncio.sleep(SETTLE_POLL_S)

    @staticmethod
    async def _still(parts: Any) -> bool:
        """Settled now and through ``STILL_TURNS`` turns of the loop.

        A message between two parts of the environment (a child's result on its way to the
        step that awaits it, a step's request on its way to the daemon) is on the socket, seen
        by neither side, for a few turns of the loop: a jump then would pass the timers that
        the message is about to make moot (the step's own deadline).
        """
        for _ in range(STILL_TURNS):
            if not parts.settled():
                return False
            await asyncio.sleep(0)
        return parts.settled()

    async def _skip_while_awaited(self) -> None:
        parts = self._parts
        while True:
            await asyncio.sleep(IDLE_POLL_S)
            if not parts.awaited() or self._skipping.locked():
                continue
            if not await self._still(parts) or self._skipping.locked():
                continue  # (a skip may have begun while it looked)
            due = parts.next_due()
            if due is not None:
                self.clock.skip(due - self.clock.now_ms())
