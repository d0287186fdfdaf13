"""Workflows tests/daemon/test_bad_input_e2e.py drives: a bystander and a run of bad input.

``BiBystander`` is started before each piece of bad input and finished after it: its result,
``n + add``, shows the daemon kept serving it and lost nothing it had committed.
``BiBad`` makes, at run time, the mistake its ``mode`` names (the static checks of a module
cannot see these: the names are built at run time).
"""

from __future__ import annotations

from datetime import timedelta

from grctl.errors import StoreValueError
from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

bystander = Workflow(workflow_type="BiBystander")
bad = Workflow(workflow_type="BiBad")


@bystander.start()
async def stand_by(ctx: Context, n: int) -> Directive:
    ctx.store.put("n", n)
    return ctx.next.wait_for_event()


@bystander.event()
async def finish(ctx: Context, add: int) -> Directive:
    n = await ctx.store.get("n", int)
    return ctx.next.complete(n + add)


@bad.start()
async def bad_begin(ctx: Context, mode: str) -> Directive:
    ctx.store.put("begun", True)
    if mode == "put_caught":
        # The error comes from put itself, naming the key, so the step can still decide.
        try:
            ctx.store.put("when", object())
        except StoreValueError as exc:
            return ctx.next.complete({"code": exc.code, "message": str(exc)})
        return ctx.next.complete("put accepted an object")
    if mode == "put":
        ctx.store.put("when", {1, 2})
    if mode == "result":
        return ctx.next.complete({"when": object()})
    if mode == "unregistered_step":
        return ctx.next.step("not_a_" + "step")
    if mode == "unregistered_timeout_step":
        return ctx.next.wait_for_event(
            timeout=timedelta(seconds=1), timeout_step_name="not_a_" + "step"
        )
    return ctx.next.complete(mode)


@bad.step()
async def bad_registered(ctx: Context) -> Directive:
    return ctx.next.complete("never reached")
