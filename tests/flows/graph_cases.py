"""Workflows for ``grctl graph``: every transition kind the worker's check reads."""

from datetime import timedelta

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

shipping = Workflow(workflow_type="GraphShipping")
child = Workflow(workflow_type="GraphChild")


@shipping.start()
async def begin(ctx: Context, parcel: str) -> Directive:
    if not parcel:
        return ctx.next.fail("no parcel")
    await ctx.start("GraphChild", f"{parcel}-label", completion_event="labelled")
    return ctx.next.step(pack)


@shipping.step()
async def pack(ctx: Context) -> Directive:
    return ctx.next.wait_for_event(timeout=timedelta(hours=1), timeout_step_name="give_up")


@shipping.step()
async def give_up(ctx: Context) -> Directive:
    return ctx.next.fail("nobody picked the parcel up")


@shipping.step()
async def ship(ctx: Context) -> Directive:
    return ctx.next.complete({"shipped": True})


@shipping.event(name="labelled")
async def on_label(ctx: Context) -> Directive:
    chosen = ship if await ctx.store.get("express") else "pack"
    return ctx.next.step(chosen)


@shipping.event()
async def picked_up(ctx: Context) -> Directive:
    return ctx.next.step("ship")


@shipping.query()
async def where(ctx: Context) -> str | None:
    return await ctx.store.get("where")


@child.start()
async def print_label(ctx: Context) -> Directive:
    return ctx.next.complete("label.pdf")
