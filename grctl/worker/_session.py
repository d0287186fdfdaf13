"""One daemon a worker serves: its connection, the steps it dispatched, and its reconnects.

Daemons sharing one database form a cluster; each dispatches only the runs it owns, and only to
the workers connected to it. So a worker keeps one session per member: the seed session (the
daemon it was pointed at) and one for each other member the cluster lists. A step runs and
reports on the session that dispatched it: its dispatch id is that daemon's fencing token, and
another member may hand out the same id for a run that moved to it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

from grctl import _faults as faults
from grctl import protocol as p
from grctl._connection import Connection, Endpoint
from grctl.errors import DaemonUnavailableError, GrctlError, ProtocolError, StaleDispatchError
from grctl.worker import _chain

if TYPE_CHECKING:
    from grctl.worker.worker import Worker

log = logging.getLogger("grctl.worker")

HEARTBEAT_INTERVAL_S = 2.0
RECONNECT_DELAY_S = 0.2
RECONNECT_MAX_DELAY_S = 2.0


class Session:
    """The worker's registration with one daemon, kept up (reconnecting) while it is wanted.

    The seed session is wanted until the worker stops; a member session also ends when the
    cluster stops listing its member (``retire()``). ``running`` holds the steps this daemon
    dispatched, by dispatch id: they are this session's alone, and end with its connection.
    """

    def __init__(self, worker: Worker, endpoint: Endpoint, member: str | None = None) -> None:
        self.worker = worker
        self.endpoint = endpoint
        self.seed = member is None
        # The member this session serves: the list's name for a member session, the Welcome's
        # for the seed (None for a lone daemon).
        self.member = member
        self.conn: Connection | None = None
        self.registered = False
        self.running: dict[str, asyncio.Task[None]] = {}
        # Dispatches whose run was cancelled: their chains run no further step (EndChain).
        self.unchained: set[str] = set()
        self._retired = asyncio.Event()
        self._lost_said = False
        self._ever_registered = False

    def retire(self) -> None:
        """The member is no longer listed: drop its connection and stop its steps."""
        self._retired.set()

    def cancel_steps(self) -> None:
        for t in list(self.running.values()):
            t.cancel()

    def _wanted(self) -> bool:
        return not self.worker._stopping.is_set() and not self._retired.is_set()

    async def serve(self) -> None:
        """Serve this daemon, reconnecting with backoff for as long as the session is wanted.

        The seed raises DaemonUnavailableError when its daemon does not answer the first time
        (a worker pointed at nothing says so at once); a member is tried again until the
        cluster no longer lists it.
        """
        delay = RECONNECT_DELAY_S
        first = True
        while self._wanted():
            reason = ""
            try:
                await self.serve_once()
                delay = RECONNECT_DELAY_S
            except DaemonUnavailableError as exc:
                if first and self.seed:
                    raise
                reason = str(exc)
            first = False
            if not self._wanted():
                break
            self._say_lost(reason)
            await self._pause(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
        if self._retired.is_set():
            log.info("worker %s no longer serves member %s: it left the cluster", *self._who())

    async def serve_once(self) -> None:
        """One connection: hello, register, serve until it closes, the worker stops or the
        member leaves; then stop the steps it dispatched and close it.

        On a graceful stop the steps in flight first get ``shutdown_grace_s`` to finish and
        report. DaemonUnavailableError when the daemon does not answer.
        """
        w = self.worker
        conn = await Connection.open(self.endpoint, "worker", w.name, on_push=self._on_push)
        self.conn = conn
        try:
            if self.seed:
                self.member = conn.member
            if conn.members is not None:  # a lone daemon says nothing of a cluster
                w._members_changed(self.member, conn.members)
            if not self._wanted():
                return
            await conn.request(lambda r: p.RegisterWorker(r, w._definitions(), w.concurrency))
            self._now_registered()
            await self._serve(conn)
        finally:
            self.registered = False
            if self.seed:
                w.registered.clear()
            self.cancel_steps()
            self.running.clear()
            await conn.close()
            self.conn = None

    def _now_registered(self) -> None:
        self.registered = True
        self._ever_registered = True
        self._lost_said = False
        w = self.worker
        if self.seed:
            w.registered.set()
            log.info("worker %s registered %s", w.name, ", ".join(w.workflows))
        else:
            log.info("worker %s also serves member %s at %s", w.name, self.member, self.endpoint)

    async def _serve(self, conn: Connection) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(conn))
        stop = asyncio.create_task(self.worker._stopping.wait())
        retired = asyncio.create_task(self._retired.wait())
        closed = asyncio.create_task(conn.wait_closed())
        try:
            await asyncio.wait({stop, retired, closed}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done() and not retired.done() and not conn.closed and self.running:
                await self._drain(closed)
        finally:
            for t in (heartbeat, stop, retired, closed):
                t.cancel()

    async def _drain(self, closed: asyncio.Task[Any]) -> None:
        """Graceful stop: let the steps in flight finish and report (heart still beating);
        whatever is left after the grace period is dispatched again."""
        grace = self.worker.shutdown_grace_s
        of_member = "" if self.seed else f" of member {self.member}"
        log.info(
            "stopping: waiting up to %gs for %d running step(s)%s",
            grace,
            len(self.running),
            of_member,
        )
        drained = asyncio.ensure_future(asyncio.wait(list(self.running.values())))
        await asyncio.wait({drained, closed}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        drained.cancel()

    def _say_lost(self, reason: str) -> None:
        if self.seed:
            log.warning("lost the daemon; reconnecting")
            return
        if self._lost_said:  # said once per loss; the retries go on quietly
            log.debug("worker %s still cannot reach member %s at %s", *self._who(), self.endpoint)
            return
        self._lost_said = True
        lost = "lost" if self._ever_registered else "cannot reach"
        log.warning(
            "worker %s %s member %s at %s%s; reconnecting while the cluster lists it",
            self.worker.name,
            lost,
            self.member,
            self.endpoint,
            f" ({reason})" if reason else "",
        )

    def _who(self) -> tuple[str, str | None]:
        return self.worker.name, self.member

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` before reconnecting, or less if the worker stops or the member leaves."""
        stop = asyncio.create_task(self.worker._stopping.wait())
        retired = asyncio.create_task(self._retired.wait())
        await asyncio.wait({stop, retired}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        retired.cancel()

    async def _heartbeat(self, conn: Connection) -> None:
        # Beat well inside the daemon's timeout, whatever it is configured to.
        interval = min(HEARTBEAT_INTERVAL_S, conn.heartbeat_timeout_s / 4)
        while not conn.closed:
            await asyncio.sleep(interval)
            try:
                await conn.send(p.Heartbeat())
            except GrctlError:
                return

    def _on_push(self, msg: p.Message) -> None:
        conn = self.conn
        if conn is None:
            return
        if isinstance(msg, p.DispatchStep):
            if not self._wanted():
                return  # not started: it goes to another worker when this one disconnects
            self.running[msg.dispatch_id] = self.worker._spawn(self._execute(conn, msg))
        elif isinstance(msg, p.EndChain):
            if msg.dispatch_id in self.running:
                self.unchained.add(msg.dispatch_id)
        elif isinstance(msg, p.CancelStep):
            t = self.running.pop(msg.dispatch_id, None)
            if t is not None:
                log.info("step dispatch %s stopped by the daemon: %s", msg.dispatch_id, msg.reason)
                t.cancel()
        elif isinstance(msg, p.RunQuery):
            self.worker._spawn(self._answer(conn, msg))
        elif isinstance(msg, p.Members) and not self._retired.is_set():
            self.worker._members_changed(self.member, msg.members)

    async def _execute(self, conn: Connection, d: p.DispatchStep) -> None:
        """Run one dispatched step (and the steps chained after it, ``_chain``); report each
        outcome on the connection it came on."""
        held = [d.dispatch_id]  # the dispatch this task holds: a chained step adopted moves it

        def adopt(old: str, new: str) -> None:
            task = self.running.pop(old, None)
            if task is not None:
                self.running[new] = task
            held[0] = new

        def may_go_on() -> bool:
            return held[0] not in self.unchained

        try:
            await _chain.run(
                self.worker, conn, d, functools.partial(self._report, conn), adopt, may_go_on
            )
        except asyncio.CancelledError:
            return
        finally:
            if self.running.get(held[0]) is asyncio.current_task():
                del self.running[held[0]]
            self.unchained.discard(held[0])

    async def _report(
        self,
        conn: Connection,
        d: p.DispatchStep,
        outcome: dict[str, Any],
        links: list[dict[str, Any]],
        running: str | None,
    ) -> Any:
        """Send one CompleteStep; its reply, or None when it was refused or could not go."""
        if faults.ARMED:
            faults.hit("step_done")
        chain = links or None
        try:
            return await conn.request(
                lambda r: p.CompleteStep(r, d.dispatch_id, **outcome, chain=chain, running=running)
            )
        except StaleDispatchError as exc:
            log.warning("result of %s refused: %s", d.step_name, exc)
        except ProtocolError as exc:
            if chain or running:  # too big with the chain: the step alone, the rest runs again
                return await self._report(conn, d, outcome, [], None)
            # The outcome (store writes and result together) did not fit in one frame, so
            # nothing was sent: fail the step saying why rather than let it time out.
            error = {
                "type": "StoreValueError",
                "message": f"workflow {d.workflow_type!r}, step {d.step_name!r}: {exc}; keep "
                "store values and results small",
                "non_retryable": True,
            }
            try:
                await conn.request(lambda r: p.CompleteStep(r, d.dispatch_id, error=error))
            except GrctlError as again:
                log.warning("could not report step %s: %s", d.step_name, again)
        except GrctlError as exc:
            log.warning("could not report step %s: %s", d.step_name, exc)
        return None

    async def _answer(self, conn: Connection, q: p.RunQuery) -> None:
        answer = await self.worker._answer_query(q, conn)
        try:
            await conn.send(answer)
        except GrctlError:
            pass
