"""Workflows tests/daemon/test_events.py runs: idempotent events and send-with-start."""

from __future__ import annotations

from flows.gd_util import ledger

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

cart = Workflow(workflow_type="EvCart")


@cart.start()
async def cart_start(ctx: Context, owner: str = "nobody") -> Directive:
    ctx.store.put("owner", owner)
    return ctx.next.wait_for_event()


@cart.event()
async def add(ctx: Context, item: str) -> Directive:
    items = await ctx.store.get("items") or []
    ctx.store.put("items", [*items, item])
    ledger(f"{ctx.run.wf_id} add {item}")
    return ctx.next.wait_for_event()


@cart.event()
async def checkout(ctx: Context) -> Directive:
    return ctx.next.complete(
        {"owner": await ctx.store.get("owner"), "items": await ctx.store.get("items") or []}
    )
