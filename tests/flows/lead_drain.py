"""A step held on a barrier file, to watch a worker drain it on a graceful stop."""

import asyncio
import os
from pathlib import Path

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

drain = Workflow(workflow_type="LeadDrain")


@drain.start()
async def drain_start(ctx: Context) -> Directive:
    folder = Path(os.environ["DRAIN_DIR"])
    (folder / "reached").write_text(str(os.getpid()))
    for _ in range(2000):  # at most 20 s, so nothing can hang forever
        if (folder / "release").exists():
            break
        await asyncio.sleep(0.01)
    return ctx.next.complete(os.getpid())
