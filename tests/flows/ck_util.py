"""Tasks shared by the ck_orders* flows (the versions of one workflow ``grctl check`` compares).

Each task appends ``NAME workflow_id`` to the ledger, so a test sees what ran and how often.
"""

from __future__ import annotations

from flows.gd_util import ledger

from grctl import task


@task
async def reserve(order_id: str) -> str:
    ledger(f"reserve {order_id}")
    return "reserved"


@task
async def fraud_check(order_id: str) -> str:
    ledger(f"fraud_check {order_id}")
    return "clean"


@task
async def charge(order_id: str) -> str:
    ledger(f"charge {order_id}")
    return "charged"
