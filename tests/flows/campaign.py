"""The fault walk's workflow: steps, tasks with retries, events, a wait timeout and a child.

``CampaignOrder(order_id)``:
1. ``start`` reserves stock with a task that fails on its first attempt (retried by its policy),
   starts the child ``CampaignShipment`` (its end comes back as the ``shipped`` event) and waits.
2. ``item`` events (the test sends n = 1, 2, 3) append to the store; ``shipped`` keeps the
   parcel. Once all four have arrived the run goes on to ``charge``.
3. ``charge`` raises on its very first execution (the step's retry policy runs it again), then
   charges with a task and waits for a ``confirm`` event that never comes: the wait's timeout
   runs ``expire``, which completes the run.

Every task appends ``NAME KEY TOKEN PID`` to the ledger (the file env ``LEDGER`` names) and
returns its fresh random token, so a test can tell which execution's outcome was recorded and
that no execution came after it. Failed first tries append ``NAME_try KEY - PID``.
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path

from grctl.models import Directive
from grctl.models.directive import RetryPolicy
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

ITEMS = (1, 2, 3)
QUICK_RETRY = RetryPolicy(max_attempts=3, initial_delay_ms=20, jitter=0.0)

order = Workflow(workflow_type="CampaignOrder")
shipment = Workflow(workflow_type="CampaignShipment")


def note(name: str, key: str, token: str = "-") -> int:
    """Append one ledger line; returns how many ``name key`` lines the ledger now holds."""
    path = Path(os.environ["LEDGER"])
    with open(path, "a") as f:
        f.write(f"{name} {key} {token} {os.getpid()}\n")
    prefix = f"{name} {key} "
    return sum(1 for line in path.read_text().splitlines() if line.startswith(prefix))


def _done(name: str, key: str) -> str:
    token = uuid.uuid4().hex[:12]
    note(name, key, token)
    return token


@task(retry_policy=QUICK_RETRY)
async def reserve(order_id: str) -> str:
    if note("reserve_try", order_id) == 1:
        raise ConnectionError("the warehouse is busy")
    return _done("reserve", order_id)


@task
async def pack(order_id: str) -> str:
    return _done("pack", order_id)


@task
async def charge_card(order_id: str, amount: int) -> str:
    return _done("charge", order_id)


@order.start()
async def start(ctx: Context, order_id: str) -> Directive:
    ctx.store.put("reserve", await reserve(order_id))
    ctx.store.put("items", [])
    await ctx.start(
        "CampaignShipment",
        f"{ctx.run.wf_id}-ship",
        {"order_id": order_id},
        completion_event="shipped",
    )
    return ctx.next.wait_for_event()


async def _next(ctx: Context) -> Directive:
    items = await ctx.store.get("items")
    if len(items) == len(ITEMS) and await ctx.store.get("parcel") is not None:
        return ctx.next.step(charge)
    return ctx.next.wait_for_event()


@order.event()
async def item(ctx: Context, n: int) -> Directive:
    ctx.store.put("items", [*await ctx.store.get("items"), n])
    return await _next(ctx)


@order.event()
async def shipped(
    ctx: Context, workflow_id: str, run_id: str, status: str, result=None, error=None
) -> Directive:
    ctx.store.put("parcel", result["parcel"])
    ctx.store.put("pack", result["token"])
    return await _next(ctx)


@order.event()
async def confirm(ctx: Context) -> Directive:
    return ctx.next.complete("confirmed early")


@order.step(retry_policy=QUICK_RETRY)
async def charge(ctx: Context) -> Directive:
    order_id = ctx.run.wf_id
    if note("charge_step_try", order_id) == 1:
        raise RuntimeError("the card service is down")
    amount = sum(await ctx.store.get("items"))
    ctx.store.put("charge", await charge_card(order_id, amount))
    ctx.store.put("amount", amount)
    return ctx.next.wait_for_event(timeout=timedelta(milliseconds=300), timeout_step_name="expire")


@order.step()
async def expire(ctx: Context) -> Directive:
    return ctx.next.complete(
        {
            "items": await ctx.store.get("items"),
            "amount": await ctx.store.get("amount"),
            "parcel": await ctx.store.get("parcel"),
            "tokens": {name: await ctx.store.get(name) for name in ("reserve", "pack", "charge")},
        }
    )


@shipment.start()
async def ship(ctx: Context, order_id: str) -> Directive:
    token = await pack(order_id)
    return ctx.next.complete({"parcel": f"P-{order_id}", "token": token})
