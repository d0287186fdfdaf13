"""Seed 002 (Context): the deterministic functions, the logger and ``ctx.run``, as written.

Every documented step is verbatim. ``start`` jumps to the step named by ``first``; the steps the
snippets transition to (``run_experiment``, ``save_record``, ``retry_payment``) complete with
what they find. ``wait_briefly`` is ``wait_and_retry`` with a 200 ms sleep (the documented five
minutes would keep a test waiting), ``sleep_past_timeout`` sleeps longer than its step timeout
(time asleep does not count against it), and ``probe`` reports the types ctx returns.
"""

# ruff: noqa: E402, I001
import logging
import uuid
from datetime import UTC

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

order = Workflow(workflow_type="ProcessOrder")


@order.start()
async def start(ctx: Context, order_id: str, first: str) -> Directive:
    ctx.store.put("order_id", order_id)
    return ctx.next.step(first)


# fmt: off
from datetime import datetime

@order.step()
async def record_timestamp(ctx: Context) -> Directive:
    created_at = await ctx.now()  # datetime, UTC
    ctx.store.put("created_at", created_at.isoformat())
    return ctx.next.complete("done")

@order.step()
async def assign_variant(ctx: Context) -> Directive:
    roll = await ctx.random()
    variant = "A" if roll < 0.5 else "B"
    ctx.store.put("variant", variant)
    return ctx.next.step(run_experiment)

@order.step()
async def create_record(ctx: Context) -> Directive:
    record_id = await ctx.uuid4()
    ctx.store.put("record_id", str(record_id))
    return ctx.next.step(save_record)

from datetime import timedelta

@order.step()
async def wait_and_retry(ctx: Context) -> Directive:
    await ctx.sleep(timedelta(minutes=5))
    return ctx.next.step(retry_payment)

@order.step()
async def process(ctx: Context) -> Directive:
    ctx.logger.info("Processing order %s", await ctx.store.get("order_id"))
    return ctx.next.complete("done")

@order.step()
async def log_run(ctx: Context) -> Directive:
    ctx.logger.info("run_id=%s wf_id=%s", ctx.run.id, ctx.run.wf_id)
    return ctx.next.complete("done")
# fmt: on


@order.step()
async def run_experiment(ctx: Context) -> Directive:
    return ctx.next.complete({"variant": await ctx.store.get("variant")})


@order.step()
async def save_record(ctx: Context) -> Directive:
    return ctx.next.complete({"record_id": await ctx.store.get("record_id")})


@order.step()
async def retry_payment(ctx: Context) -> Directive:
    return ctx.next.complete("retried")


@order.step()
async def wait_briefly(ctx: Context) -> Directive:
    await ctx.sleep(timedelta(milliseconds=200))
    return ctx.next.step(retry_payment)


@order.step(timeout=timedelta(milliseconds=500))
async def sleep_past_timeout(ctx: Context) -> Directive:
    await ctx.sleep(timedelta(milliseconds=800))
    return ctx.next.complete("slept")


@order.step()
async def probe(ctx: Context) -> Directive:
    now = await ctx.now()
    roll = await ctx.random()
    record_id = await ctx.uuid4()
    slept = await ctx.sleep(timedelta(milliseconds=1))
    try:
        await ctx.store.get("never_set", str)
        typed_missing = "no error"
    except KeyError as exc:
        typed_missing = f"KeyError {exc}"
    return ctx.next.complete(
        {
            "now": [type(now).__name__, now.tzinfo is UTC, isinstance(now, datetime)],
            "now_iso": now.isoformat(),
            "random": [type(roll).__name__, roll],
            "uuid4": [isinstance(record_id, uuid.UUID), record_id.version, str(record_id)],
            "sleep": repr(slept),
            "get_missing": await ctx.store.get("never_set"),
            "get_missing_typed": typed_missing,
            "run": [ctx.run.id, ctx.run.wf_id, ctx.run.wf_type],
            "run_types": [type(v).__name__ for v in (ctx.run.id, ctx.run.wf_id, ctx.run.wf_type)],
            "logger": [
                isinstance(ctx.logger, logging.LoggerAdapter),
                all(
                    callable(getattr(ctx.logger, m))
                    for m in ("debug", "info", "warning", "error", "exception")
                ),
            ],
        }
    )
