"""A step's way back to the daemon: the durable calls of ``StepEnv``, with their fencing token."""

from __future__ import annotations

import asyncio
from typing import Any

from grctl import protocol as p
from grctl._connection import Connection
from grctl.errors import WorkflowDefinitionError


class Env:
    """The StepEnv of one dispatch: every durable call carries its fencing token, and goes back
    on the connection the dispatch came on (the daemon that issued the token).

    Two kinds of step may not act yet, and wait at their first durable call (and before a
    task runs: ``handed_over``):

    - one run in place after another (a chain, see ``_chain``) has no token yet: it waits for
      ``adopted``, which the chain resolves with the token once the daemon has committed the
      steps before it and handed this one over;
    - one handed out ``early`` (``DispatchStep.early``) asks ``Settle`` once, answered when
      the unit that dispatched it is durable.
    """

    def __init__(
        self,
        conn: Connection,
        dispatch_id: str | None,
        adopted: asyncio.Future[str] | None = None,
        early: bool = False,
    ) -> None:
        self._conn = conn
        self._dispatch_id = dispatch_id
        self._adopted = adopted
        self._early = early

    @property
    def held_back(self) -> bool:
        """Not free to act yet: run in place and not handed over, or handed out early."""
        return self._early or (self._dispatch_id is None and self._adopted is not None)

    async def handed_over(self) -> None:
        await self._token()

    async def _token(self) -> str:
        if self._dispatch_id is None:
            if self._adopted is None:
                raise WorkflowDefinitionError(
                    "queries only read the store: no task, child, event or progress"
                )
            self._dispatch_id = await self._adopted
        if self._early:
            did = self._dispatch_id
            await self._conn.request(lambda r: p.Settle(r, did))
            self._early = False
        return self._dispatch_id

    async def record(self, rec: dict[str, Any]) -> None:
        did = await self._token()
        await self._conn.request(lambda r: p.RecordOutcome(r, did, p.wrap_value(rec)))

    async def start_child(
        self,
        rec: dict[str, Any],
        workflow_type: str,
        workflow_id: str,
        workflow_input: Any,
        completion_event: str | None,
        run_timeout_ms: int | None = None,
    ) -> dict[str, Any]:
        did = await self._token()
        return await self._conn.request(
            lambda r: p.StartChild(
                r,
                did,
                p.wrap_value(rec),
                workflow_type,
                workflow_id,
                p.wrap_value(workflow_input),
                completion_event,
                run_timeout_ms,
            )
        )

    async def send_to_parent(self, rec: dict[str, Any], event_name: str, payload: Any) -> None:
        did = await self._token()
        await self._conn.request(
            lambda r: p.SendToParent(r, did, p.wrap_value(rec), event_name, p.wrap_value(payload))
        )

    async def wait_result(self, workflow_id: str, run_id: str | None) -> dict[str, Any]:
        await self._token()  # a chained step waits for nothing before it is adopted
        return await self._conn.request(lambda r: p.GetResult(r, workflow_id, run_id, True))

    async def emit(self, name: str, data: Any, ts_ms: int) -> None:
        """One progress event, one way: the daemon neither answers nor commits it."""
        await self._conn.send(p.Progress(await self._token(), name, data, ts_ms))
