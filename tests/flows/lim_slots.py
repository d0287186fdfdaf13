"""A flow with ``max_concurrent_runs`` for tests/daemon/test_limits.py.

``LimSlots``: its start handler appends ``begin WORKFLOW_ID PID`` to the ledger, waits at barrier
``go-WORKFLOW_ID``, appends ``end WORKFLOW_ID PID`` and completes. The limit comes from the
worker's environment (``LIM_N``), so one test can start workers that declare different limits.
"""

from __future__ import annotations

import os

from flows.gd_util import hold, ledger

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

slots = Workflow(workflow_type="LimSlots", max_concurrent_runs=int(os.environ.get("LIM_N", "2")))


@slots.start()
async def lim_slots_start(ctx: Context) -> Directive:
    ledger(f"begin {ctx.run.wf_id} {os.getpid()}")
    await hold(f"go-{ctx.run.wf_id}")
    ledger(f"end {ctx.run.wf_id} {os.getpid()}")
    return ctx.next.complete({"done": ctx.run.wf_id})
