"""A workflow tests/daemon/test_bad_input.py feeds bad input to; ``mode`` picks the mistake."""

from __future__ import annotations

from datetime import timedelta

from grctl.models import Directive
from grctl.protocol import MAX_FRAME_BYTES
from grctl.worker.context import Context
from grctl.workflow import Workflow

bad = Workflow(workflow_type="GdBad")


@bad.start()
async def bad_start(ctx: Context, mode: str) -> Directive:
    ctx.store.put("started", True)
    if mode == "unserialisable":
        ctx.store.put("when", object())
    if mode == "bad_result":
        return ctx.next.complete({1, 2})
    if mode == "forgot_await":
        ctx.store.put("stamp", {"at": ctx.now()})  # a forgotten await
    if mode == "oversized_store":
        ctx.store.put("blob", b"x" * (MAX_FRAME_BYTES + 1))
    if mode == "oversized_total":
        ctx.store.put("half", b"x" * (MAX_FRAME_BYTES // 2 + 1))
        ctx.store.put("other_half", b"y" * (MAX_FRAME_BYTES // 2 + 1))
    if mode == "oversized_result":
        return ctx.next.complete(b"x" * (MAX_FRAME_BYTES + 1))
    if mode == "unregistered_step":
        return ctx.next.step("not_a_" + "step")
    if mode == "unregistered_timeout_step":
        return ctx.next.wait_for_event(
            timeout=timedelta(seconds=1), timeout_step_name="not_a_" + "step"
        )
    if mode == "finish":
        return ctx.next.step(bad_finish)
    if mode == "growing_store":
        return ctx.next.step(bad_grow)
    return ctx.next.wait_for_event()


@bad.step()
async def bad_grow(ctx: Context) -> Directive:
    # Each step's writes fit in a frame; together they outgrow what a dispatch can carry.
    parts = await ctx.store.get("parts") or 0
    ctx.store.put(f"part{parts}", b"x" * (4 * 1024 * 1024))
    ctx.store.put("parts", parts + 1)
    return ctx.next.step(bad_grow)


@bad.step()
async def bad_finish(ctx: Context) -> Directive:
    return ctx.next.complete("finished")


@bad.event()
async def approve(ctx: Context, amount: int) -> Directive:
    ctx.store.put("amount", amount)
    return ctx.next.wait_for_event()
