"""An echo flow for tests/daemon/test_access.py: hands back whatever start input and event
payload it got, untouched, with their Python type names.

At import it writes ``imported-<pid>`` into ``$FZ_MARKER_DIR`` (when set), so a test can tell
which processes imported workflow code: workers must, the daemon never.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

if os.environ.get("FZ_MARKER_DIR"):
    Path(os.environ["FZ_MARKER_DIR"], f"imported-{os.getpid()}").write_text(str(os.getpid()))

echo = Workflow(workflow_type="FzEcho")


@echo.start()
async def echo_start(ctx: Context, value: Any = None) -> Directive:
    ctx.store.put("start", value)
    ctx.store.put("start_type", type(value).__name__)
    return ctx.next.wait_for_event()


@echo.event()
async def give(ctx: Context, value: Any = None) -> Directive:
    return ctx.next.complete(
        {
            "start": await ctx.store.get("start"),
            "start_type": await ctx.store.get("start_type"),
            "event": value,
            "event_type": type(value).__name__,
        }
    )
