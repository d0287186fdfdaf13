"""Flows for paged replies and released waits (tests/daemon/test_paging.py).

- ``PgMailbox``: its start step sleeps for an hour, so every event sent to it stays pending in
  the inbox and is recorded in the history (the test terminates it).
- ``PgListed``: waits for a ``stop`` event; many of them make a long listing.
- ``PgEcho``: completes with its input (big ones make replies over the frame limit).
- ``PgQuick``: completes at once (many queued runs drained by a small worker).
"""

from __future__ import annotations

import asyncio

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

mailbox = Workflow(workflow_type="PgMailbox")


@mailbox.start()
async def pg_mailbox_start(ctx: Context) -> Directive:
    await asyncio.sleep(3600)
    return ctx.next.complete(None)


@mailbox.event()
async def item(ctx: Context, n: int, blob: str) -> Directive:
    return ctx.next.complete({"n": n})


listed = Workflow(workflow_type="PgListed")


@listed.start()
async def pg_listed_start(ctx: Context) -> Directive:
    return ctx.next.wait_for_event()


@listed.event()
async def stop(ctx: Context) -> Directive:
    return ctx.next.complete(None)


echo = Workflow(workflow_type="PgEcho")


@echo.start()
async def pg_echo_start(ctx: Context, blob: str) -> Directive:
    return ctx.next.complete({"blob": blob})


quick = Workflow(workflow_type="PgQuick")


@quick.start()
async def pg_quick_start(ctx: Context) -> Directive:
    return ctx.next.complete(None)
