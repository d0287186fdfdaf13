"""``@task``: side-effecting work inside a step, recorded so replay never repeats it.

A task runs in the worker process, in the step that calls it. Each attempt's outcome is made
durable before the step goes on: a success is returned on replay without running again, a
terminal failure is raised again, and retries resume at the attempt after the last recorded one.
Called outside a step (in a unit test, say), a task is a plain coroutine with its retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

from grctl import _clock, codec
from grctl import _faults as faults
from grctl.errors import StoreValueError
from grctl.models.directive import RetryPolicy
from grctl.resources import Resource, Resources, resource_params
from grctl.worker._replay import args_digest, current_step, error_record, rebuild_error

P = ParamSpec("P")
R = TypeVar("R")


@overload
def task(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...


@overload
def task(
    fn: None = None, *, retry_policy: RetryPolicy | None = None, name: str | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]: ...


def task(
    fn: Any = None, *, retry_policy: RetryPolicy | None = None, name: str | None = None
) -> Any:
    """Mark an async function as a task: ``@task`` or ``@task(retry_policy=RetryPolicy(...))``."""
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise TypeError("@task(retry_policy=...) takes a grctl.models.directive.RetryPolicy")

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if not asyncio.iscoroutinefunction(func):
            raise TypeError(f"@task {func.__qualname__!r} must be an 'async def' function")
        task_name = name or func.__qualname__
        wanted = resource_params(func, f"task {task_name!r}")
        call = _filling(func, wanted) if wanted else func

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return await _run_task(task_name, call, args, kwargs, retry_policy)

        wrapper.__grctl_task__ = task_name  # type: ignore[attr-defined]
        return wrapper

    if fn is not None:
        return decorate(fn)
    return decorate


_OUTSIDE = Resources()  # a task called outside any worker makes its resources afresh


def _filling(func: Callable[..., Awaitable[Any]], wanted: dict[str, Resource]) -> Any:
    """``func`` with its Resource parameters filled (unless the caller passed them).

    They are filled per attempt, after replay had its say: a task whose outcome is recorded
    makes no resource, and its recorded arguments never include one.
    """

    async def call(*args: Any, **kwargs: Any) -> Any:
        missing = {n: r for n, r in wanted.items() if n not in kwargs}
        if not missing:
            return await func(*args, **kwargs)
        step = current_step.get()
        resources = step.resources if step is not None else None
        async with contextlib.AsyncExitStack() as scope:
            if resources is None:
                kwargs |= await _OUTSIDE.fill(missing, scope, shared=False)
            else:
                kwargs |= await resources.fill(missing, scope)
            return await func(*args, **kwargs)

    return call


async def _run_task(
    name: str,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    policy: RetryPolicy | None,
) -> Any:
    step = current_step.get()
    if step is None:
        return await _attempts(fn, args, kwargs, policy)
    op, prior = step.begin("task", name, args_digest(args, kwargs))
    for rec in prior:
        if rec["status"] == "ok":
            return rec["value"]
        if rec["status"] == "error":
            raise rebuild_error(rec["error"])
    failed = [rec for rec in prior if rec["status"] == "failed"]
    attempt = len(failed) + 1
    if failed:
        # A crash came between a failed attempt and the next one: honour what is left of its delay.
        await _clock.sleep_until(failed[-1].get("retry_at_ms", 0), step)
    if step.handed_over is not None:  # chained or handed out early: nothing before the commit
        await step.handed_over()
    while True:
        try:
            value = await fn(*args, **kwargs)
        except Exception as exc:
            error = error_record(exc)
            if policy is not None and policy.should_retry(type(exc).__name__, attempt):
                retry_at_ms = _clock.now_ms() + policy.delay_ms(attempt)
                await step.record(
                    {
                        "op": op,
                        "kind": "task",
                        "name": name,
                        "digest": args_digest(args, kwargs),
                        "status": "failed",
                        "attempt": attempt,
                        "error": error,
                        "retry_at_ms": retry_at_ms,
                    }
                )
                await _clock.sleep_until(retry_at_ms, step)
                attempt += 1
                continue
            await step.record(
                {
                    "op": op,
                    "kind": "task",
                    "name": name,
                    "digest": args_digest(args, kwargs),
                    "status": "error",
                    "attempt": attempt,
                    "error": error,
                }
            )
            raise
        if faults.ARMED:
            faults.hit("task_done")
        try:
            codec.pack(value)
        except Exception:
            raise StoreValueError(
                codec.not_serialisable(
                    value,
                    f"the value task {name!r} returned",
                    "return strings, numbers, lists, dicts, booleans or None",
                )
            ) from None
        await step.record(
            {
                "op": op,
                "kind": "task",
                "name": name,
                "digest": args_digest(args, kwargs),
                "status": "ok",
                "attempt": attempt,
                "value": value,
            }
        )
        if faults.ARMED:
            faults.hit("task_recorded")
        return value


async def _attempts(
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    policy: RetryPolicy | None,
) -> Any:
    attempt = 1
    while True:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if policy is None or not policy.should_retry(type(exc).__name__, attempt):
                raise
            await _clock.sleep_until(_clock.now_ms() + policy.delay_ms(attempt))
            attempt += 1
