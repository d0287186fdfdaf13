"""Seed 003 (Tasks), "Parallel Tasks": ``asyncio.gather`` and ``asyncio.TaskGroup``, as written.

``notify`` is verbatim. Each task notes its start, yields, then notes its end, so the ledger
shows whether the tasks of one group overlapped.
"""

import asyncio

from flows.seed_ledger import note

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")


async def _work(name: str, *detail: str) -> None:
    note(f"{name}:start", *detail)
    await asyncio.sleep(0.02)
    note(f"{name}:end", *detail)


@task
async def send_email(email: str, order_id: str) -> None:
    await _work("send_email", email, order_id)


@task
async def update_crm(order_id: str) -> None:
    await _work("update_crm", order_id)


@task
async def log_analytics(order_id: str) -> None:
    await _work("log_analytics", order_id)


@order.start()
async def start(ctx: Context, order_id: str, email: str) -> Directive:
    ctx.store.put("order_id", order_id)
    ctx.store.put("email", email)
    return ctx.next.step(notify)


# fmt: off
@order.step()
async def notify(ctx: Context) -> Directive:
    order_id = await ctx.store.get("order_id")
    email = await ctx.store.get("email")

    # gather
    await asyncio.gather(
        send_email(email, order_id),
        update_crm(order_id),
        log_analytics(order_id),
    )

    # or TaskGroup for structured concurrency
    async with asyncio.TaskGroup() as tg:
        tg.create_task(send_email(email, order_id))
        tg.create_task(update_crm(order_id))

    return ctx.next.complete("done")
# fmt: on
