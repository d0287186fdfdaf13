"""Queries: a ``@workflow.query()`` handler run on a worker against the run's committed store."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ulid import ULID

from grctl import protocol as p
from grctl.errors import NoWorkerError, QueryFailedError, UnknownQueryError

if TYPE_CHECKING:
    from grctl_daemon.runtime import Runtime


class Queries:
    """The query half of the Runtime (a mixin: see ``runtime/__init__.py``)."""

    async def query(self: Runtime, m: p.QueryWorkflow) -> Any:
        # The committed store only: a query must never see a step's writes that could still be
        # lost (SPEC 3.8).
        run = await self._committed(m.workflow_id, m.run_id)
        tdef = self.tdef(run.workflow_type)
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
        slot = max(slots, key=lambda s: s.free)
        qid = str(ULID())
        fut: asyncio.Future[p.QueryAnswer] = asyncio.get_running_loop().create_future()
        fut.connection_id = slot.connection_id  # type: ignore[attr-defined]
        self.queries[qid] = fut
        try:
            slot.send(
                p.RunQuery(
                    qid,
                    run.workflow_id,
                    run.run_id,
                    run.workflow_type,
                    m.query_name,
                    {k: p.packed(v) for k, v in run.store.items()},
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
            self.queries.pop(qid, None)
        if answer.error:
            raise QueryFailedError(
                f"query {m.query_name!r} raised {answer.error.get('type')}: "
                f"{answer.error.get('message')}",
                workflow_id=run.workflow_id,
                run_id=run.run_id,
                details=answer.error,
            )
        return answer.value

    def query_answered(self: Runtime, m: p.QueryAnswer) -> None:
        fut = self.queries.get(m.query_id)
        if fut is not None and not fut.done():
            fut.set_result(m)
