"""Workflows the crash tests run: side effects go to a ledger, victims stop at barriers.

The ledger (the file env ``LEDGER`` names) gets one line per side effect, ``OP PID [VALUE…]``,
so a test counts how often each operation really ran, and in which process, and compares that
with the run's history. ``await hold(name)`` is a barrier: the first execution to reach it writes
``NAME.reached`` (holding its pid) next to the ledger and waits for ``NAME.release``; every later
execution (the replay after the victim died) passes straight through. A held execution gives up
after ``HOLD_DEADLINE_S``, so a broken test cannot leave a worker hanging, and one that is
cancelled (its worker lost the daemon) writes ``NAME.cancelled``.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

from grctl.models import Directive
from grctl.models.directive import RetryPolicy
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

HOLD_DEADLINE_S = 20.0
POLL_S = 0.01


def ledger_path() -> Path:
    return Path(os.environ["LEDGER"])


def note(op: str, *values: str) -> int:
    """Append ``OP PID VALUES…`` to the ledger; returns how many ``OP`` lines it now holds."""
    path = ledger_path()
    with open(path, "a") as f:
        f.write(" ".join([op, str(os.getpid()), *values]) + "\n")
    return sum(1 for line in path.read_text().splitlines() if line.split(" ", 1)[0] == op)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def hold(name: str) -> None:
    """Stop the first execution that gets here until the test releases ``name``."""
    folder = ledger_path().parent
    reached = folder / f"{name}.reached"
    if reached.exists():
        return
    _write_atomically(reached, str(os.getpid()))
    deadline = time.monotonic() + HOLD_DEADLINE_S
    try:
        while not (folder / f"{name}.release").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"barrier {name!r} was not released within {HOLD_DEADLINE_S}s")
            await asyncio.sleep(POLL_S)
    except asyncio.CancelledError:
        _write_atomically(folder / f"{name}.cancelled", str(os.getpid()))
        raise


# -- completed tasks are not run again; uncommitted store writes vanish -------------------------

durable = Workflow(workflow_type="CrashDurableTasks")


@task
async def task_a() -> int:
    note("A")
    return os.getpid()


@task
async def task_b() -> int:
    note("B")
    await hold("b")
    return os.getpid()


@durable.start()
async def durable_start(ctx: Context) -> Directive:
    earlier = await ctx.store.get("half_done")
    ctx.store.put("half_done", os.getpid())
    a = await task_a()
    b = await task_b()
    return ctx.next.complete({"a": a, "b": b, "earlier": earlier})


# -- ctx.now/random/uuid4 replay the recorded values ---------------------------------------------

values = Workflow(workflow_type="CrashValues")


@values.start()
async def values_start(ctx: Context) -> Directive:
    now = (await ctx.now()).isoformat()
    rnd = await ctx.random()
    uid = str(await ctx.uuid4())
    note("values", now, repr(rnd), uid)
    await hold("values")
    return ctx.next.complete({"now": now, "random": rnd, "uuid": uid})


# -- task retries resume at the recorded attempt ----------------------------------------------


class FlakyError(Exception):
    """What the flaky task raises on its first two calls."""


@task(retry_policy=RetryPolicy(max_attempts=5, initial_delay_ms=50))
async def flaky() -> int:
    call = note("flaky")
    if call <= 2:
        raise FlakyError(f"call {call} fails")
    if call == 3:
        await hold("flaky")
    return call


retries = Workflow(workflow_type="CrashRetries")


@retries.start()
async def retries_start(ctx: Context) -> Directive:
    return ctx.next.complete({"call": await flaky()})


# -- a recorded terminal failure is raised again on replay, the task is not called ---------------


class PaymentDeclined(Exception):
    """A terminal task failure (no retry policy)."""


@task
async def declined_charge(amount: int) -> str:
    note("charge", str(amount))
    raise PaymentDeclined(f"card declined for {amount}")


terminal = Workflow(workflow_type="CrashTerminalFailure")


@terminal.start()
async def terminal_start(ctx: Context) -> Directive:
    try:
        await declined_charge(42)
        message = "not declined"
    except PaymentDeclined as exc:
        message = str(exc)
        note("caught")
    await hold("terminal")
    return ctx.next.complete({"caught": message})


# -- replay that diverges from the record fails the step -----------------------------------------


@task
async def pick(choice: str) -> str:
    note("pick", choice)
    return choice


@task
async def pick_other(choice: str) -> str:
    note("pick_other", choice)
    return choice


divergent = Workflow(workflow_type="CrashDivergent")


@divergent.start()
async def divergent_start(ctx: Context) -> Directive:
    # Workflow code must not read the outside world like this: the test changes the file between
    # the crash and the replay to make the replay diverge.
    choice = (ledger_path().parent / "choice.txt").read_text().strip()
    value = await (pick_other(choice) if choice == "other-task" else pick(choice))
    await hold("divergent")
    return ctx.next.complete(value)


# -- a lost worker's step goes to another worker ---------------------------------------------------


@task
async def before_hold() -> int:
    note("before")
    return os.getpid()


@task
async def after_hold() -> int:
    note("after")
    return os.getpid()


stall = Workflow(workflow_type="CrashStall")


@stall.start()
async def stall_start(ctx: Context) -> Directive:
    first = await before_hold()
    await hold("stall")
    last = await after_hold()
    return ctx.next.complete({"first": first, "last": last})


@task
async def quick() -> int:
    note("quick")
    return os.getpid()


quick_flow = Workflow(workflow_type="CrashQuick")


@quick_flow.start()
async def quick_start(ctx: Context) -> Directive:
    return ctx.next.complete({"pid": await quick()})


# -- a multi-step run the daemon is killed in the middle of ---------------------------------------


@task
async def reserve(order_id: str) -> str:
    note("reserve")
    return f"res-{order_id}"


@task
async def charge(order_id: str) -> str:
    note("charge")
    return f"txn-{order_id}"


@task
async def make_label(order_id: str, carrier: str) -> str:
    note("make_label")
    return f"{carrier}-{order_id}"


pipeline = Workflow(workflow_type="CrashPipeline")


@pipeline.start()
async def pipeline_start(ctx: Context, order_id: str) -> Directive:
    ctx.store.put("order_id", order_id)
    ctx.store.put("reserved", await reserve(order_id))
    return ctx.next.step(pipeline_charge)


@pipeline.step()
async def pipeline_charge(ctx: Context) -> Directive:
    order_id = await ctx.store.get("order_id", str)
    ctx.store.put("txn", await charge(order_id))
    ctx.store.put("charged_at", (await ctx.now()).isoformat())
    return ctx.next.wait_for_event()


@pipeline.event()
async def ship(ctx: Context, carrier: str) -> Directive:
    order_id = await ctx.store.get("order_id", str)
    label = await make_label(order_id, carrier)
    return ctx.next.complete(
        {
            "reserved": await ctx.store.get("reserved"),
            "txn": await ctx.store.get("txn"),
            "label": label,
        }
    )


# -- an overdue wait timer fires when the daemon starts again -------------------------------------

patience = Workflow(workflow_type="CrashPatience")


@patience.start()
async def patience_start(ctx: Context) -> Directive:
    return ctx.next.wait_for_event(
        timeout=timedelta(seconds=3), timeout_step_name="patience_gave_up"
    )


@patience.event()
async def nudge(ctx: Context) -> Directive:
    return ctx.next.complete("nudged")


@patience.step()
async def patience_gave_up(ctx: Context) -> Directive:
    note("gave_up")
    return ctx.next.complete("gave up")


# -- an acknowledged event survives a daemon kill -----------------------------------------------

inbox = Workflow(workflow_type="CrashInbox")


@inbox.start()
async def inbox_start(ctx: Context) -> Directive:
    await hold("inbox")
    return ctx.next.wait_for_event()


@inbox.event()
async def ping(ctx: Context, n: int) -> Directive:
    note("ping", str(n))
    return ctx.next.complete({"ping": n})
