"""Poison steps: steps that SIGKILL their own worker (tests/crash/test_fault_paths.py).

Each execution first notes ``poison PID WORKFLOW_ID STEP`` in the ledger, so the test counts the
workers a step took down.

- ``FpPoison``: its step kills every worker that runs it (no retry policy).
- ``FpPoisonRetried``: the same step with ``RetryPolicy(max_attempts=2)``.
- ``FpFlaky``: two steps, each killing its worker on its first two executions only and then
  completing: with the default limit of 3 losses *in a row*, the run completes.
"""

from __future__ import annotations

import os
import signal

from flows.fp_util import count, note

from grctl.models import Directive
from grctl.models.directive import RetryPolicy
from grctl.worker.context import Context
from grctl.workflow import Workflow

RETRY_DELAY_MS = 100


async def _handed_over(ctx: Context) -> None:
    """Each step first makes a durable call: a step its worker ran in place after the one
    before (chained) is handed to it there, so a loss counts against this step. A worker lost
    in the middle of a chain is tests/daemon/test_chain.py's."""
    await ctx.now()


def _die(ctx: Context, step: str) -> None:
    note("poison", ctx.run.wf_id, step)
    os.kill(os.getpid(), signal.SIGKILL)


poison = Workflow(workflow_type="FpPoison")


@poison.start()
async def fp_poison_start(ctx: Context) -> Directive:
    return ctx.next.step(fp_poison_step)


@poison.step()
async def fp_poison_step(ctx: Context) -> Directive:
    await _handed_over(ctx)
    _die(ctx, "fp_poison_step")
    return ctx.next.complete("survived")  # not reached


retried = Workflow(workflow_type="FpPoisonRetried")


@retried.start()
async def fp_retried_start(ctx: Context) -> Directive:
    return ctx.next.step(fp_retried_step)


@retried.step(retry_policy=RetryPolicy(max_attempts=2, initial_delay_ms=RETRY_DELAY_MS))
async def fp_retried_step(ctx: Context) -> Directive:
    await _handed_over(ctx)
    _die(ctx, "fp_retried_step")
    return ctx.next.complete("survived")  # not reached


flaky = Workflow(workflow_type="FpFlaky")


@flaky.start()
async def fp_flaky_start(ctx: Context) -> Directive:
    return ctx.next.step(fp_flaky_one)


@flaky.step()
async def fp_flaky_one(ctx: Context) -> Directive:
    await _handed_over(ctx)
    if count("poison", ctx.run.wf_id, "fp_flaky_one") < 2:
        _die(ctx, "fp_flaky_one")
    return ctx.next.step(fp_flaky_two)


@flaky.step()
async def fp_flaky_two(ctx: Context) -> Directive:
    await _handed_over(ctx)
    if count("poison", ctx.run.wf_id, "fp_flaky_two") < 2:
        _die(ctx, "fp_flaky_two")
    return ctx.next.complete("survived")
