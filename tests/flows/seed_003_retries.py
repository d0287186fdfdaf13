"""Seed 003 (Tasks), "Retries" and "Retryable and Non-Retryable Errors".

The three documented tasks are verbatim (their bodies are ``...``, so they return None); the
``flaky_*`` tasks carry the same policies and fail as a plan says: ``"key:N:ErrorName"`` fails
the first N attempts with ErrorName, each attempt noted in the SEED_LEDGER file under ``key``.
``start`` runs every ``[task, plan]`` pair it is given and records how each call ended, then
``call_documented`` calls the verbatim tasks.
"""

# ruff: noqa: E402, I001
from flows.seed_ledger import note

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow

# fmt: off
from grctl.models.directive import RetryPolicy

@task(retry_policy=RetryPolicy(
    max_attempts=5,
    initial_delay_ms=500,
    backoff_multiplier=2.0,
    max_delay_ms=30_000,
))
async def call_external_api(url: str) -> dict:
    # This will be retried up to 5 times on failure
    ...

# Only retry these specific errors
@task(retry_policy=RetryPolicy(
    max_attempts=3,
    retryable_errors=["TimeoutError", "ConnectionError"],
))
async def fetch_data(url: str) -> dict:
    ...

# Retry everything except these errors
@task(retry_policy=RetryPolicy(
    max_attempts=3,
    non_retryable_errors=["ValueError", "AuthenticationError"],
))
async def process_record(record_id: str) -> dict:
    ...
# fmt: on


class AuthenticationError(Exception):
    """The error the seed names as non-retryable; defined here since it is not a builtin."""


ERRORS: dict[str, type[Exception]] = {
    "TimeoutError": TimeoutError,
    "ConnectionError": ConnectionError,
    "ValueError": ValueError,
    "KeyError": KeyError,
    "AuthenticationError": AuthenticationError,
}


def follow_plan(plan: str) -> dict:
    key, fail_times, error = plan.split(":")
    attempt = note(key)
    if attempt <= int(fail_times):
        raise ERRORS[error](f"{key} attempt {attempt} failed")
    return {"key": key, "attempts": attempt}


@task(
    retry_policy=RetryPolicy(
        max_attempts=5, initial_delay_ms=500, backoff_multiplier=2.0, max_delay_ms=30_000
    )
)
async def flaky_external_api(plan: str) -> dict:
    return follow_plan(plan)


@task(
    retry_policy=RetryPolicy(max_attempts=3, retryable_errors=["TimeoutError", "ConnectionError"])
)
async def flaky_fetch_data(plan: str) -> dict:
    return follow_plan(plan)


@task(
    retry_policy=RetryPolicy(
        max_attempts=3, non_retryable_errors=["ValueError", "AuthenticationError"]
    )
)
async def flaky_process_record(plan: str) -> dict:
    return follow_plan(plan)


@task
async def flaky_no_policy(plan: str) -> dict:
    return follow_plan(plan)


TASKS = {
    "external_api": flaky_external_api,
    "fetch_data": flaky_fetch_data,
    "process_record": flaky_process_record,
    "no_policy": flaky_no_policy,
}

retries = Workflow(workflow_type="TaskRetries")


@retries.start()
async def start(ctx: Context, calls: list) -> Directive:
    outcomes = []
    for task_key, plan in calls:
        try:
            outcomes.append(["ok", await TASKS[task_key](plan)])
        except Exception as exc:
            outcomes.append(["raised", type(exc).__name__, str(exc)])
    ctx.store.put("outcomes", outcomes)
    return ctx.next.step(call_documented)


@retries.step()
async def call_documented(ctx: Context) -> Directive:
    documented = [
        await call_external_api("https://api.example.com/orders"),
        await fetch_data("https://api.example.com/data"),
        await process_record("record-1"),
    ]
    return ctx.next.complete(
        {"outcomes": await ctx.store.get("outcomes"), "documented": documented}
    )
