"""Seed 003 (Tasks), "Basic Usage": the example as written."""

# ruff: noqa: I001, F401
# fmt: off
import asyncio
from grctl.worker.task import task
from grctl.worker.context import Context
from grctl.models import Directive
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")

@task
async def charge_payment(amount: float) -> str:
    # Call your payment API here
    return "txn_abc123"

@task
async def send_confirmation(txn_id: str, email: str) -> None:
    # Send confirmation email
    pass

@order.start()
async def start(ctx: Context, amount: float, email: str) -> Directive:
    txn_id = await charge_payment(amount)
    await send_confirmation(txn_id, email)
    return ctx.next.complete({"txn_id": txn_id})
# fmt: on
