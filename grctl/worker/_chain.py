"""Chained steps: a worker runs the next steps of a run in place, and reports them together.

A step that returns ``ctx.next.step(fn)`` names its successor. When the dispatch allows it
(``DispatchStep.chain``), the worker runs that successor at once, in the same task, instead of
reporting and waiting for the daemon to commit and dispatch it back: each step saved is one
commit (an fsync) and two process wake-ups. The outcomes go to the daemon in one CompleteStep,
which it decides in order, as if each had been dispatched, and commits as one unit: the chain
is durable all together or not at all, as a single step is.

Only a step that runs through without waiting is chained. A chained step acts on nothing
before the commit it depends on: its first durable call (a task outcome, ``ctx.now()``, a
sleep, a child, ``send_to_parent``, progress) waits for it, and so does anything else it
awaits. Once it waits, the worker reports what it has, naming the step still running
(``running``); the daemon commits, hands that step to this worker in the same unit
(``adopted``: its dispatch id) and only then does the step go on, as a dispatched step would.
If the daemon decided otherwise (the run was terminated meanwhile, say), the step is stopped:
it had done nothing durable. No step is chained after the chain budget, so no outcome waits long
for its commit; a cancelled run's worker chains no further step (``EndChain``).

A worker killed in the middle loses the chain's outcomes, as it would lose one step's: the
daemon dispatches the first step again, and the steps run again (a step with side effects
outside tasks sees them repeat, as after any worker loss).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from grctl import protocol as p
from grctl._connection import Connection
from grctl.worker._env import Env

if TYPE_CHECKING:
    from grctl.worker.worker import Worker

# No step is chained once the chain has run this long: a step's outcome waits about this
# long at most (plus the last step's own run) for its commit to start. GRCTL_CHAIN_BUDGET_MS
# in the worker's environment changes it (tests that count chained steps on a loaded machine
# raise it: a chain cut by the clock is correct, only less chained).
DEFAULT_CHAIN_BUDGET_MS = 5
MAX_CHAIN_BUDGET_MS = 60_000


def chain_budget_s(raw: str | None) -> float:
    """``GRCTL_CHAIN_BUDGET_MS`` as seconds (the default when unset); a bad value is refused."""
    if raw is None or raw.strip() == "":
        return DEFAULT_CHAIN_BUDGET_MS / 1000
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not 0 <= ms <= MAX_CHAIN_BUDGET_MS:
        raise ValueError(
            f"GRCTL_CHAIN_BUDGET_MS must be a number of milliseconds from 0 to "
            f"{MAX_CHAIN_BUDGET_MS}, got {raw!r}; unset it for the default "
            f"({DEFAULT_CHAIN_BUDGET_MS} ms)"
        )
    return ms / 1000


Report = Callable[[p.DispatchStep, dict[str, Any], list[dict[str, Any]], str | None], Any]


async def run(
    worker: Worker,
    conn: Connection,
    d: p.DispatchStep,
    report: Report,
    adopt: Callable[[str, str], None],
    may_go_on: Callable[[], bool],
) -> None:
    """Run dispatch ``d`` and, while allowed, the steps it leads to; report every outcome.

    ``report(origin, outcome, links, running)`` sends one CompleteStep and returns the reply
    (None when it was refused); ``adopt(old, new)`` tells the session that the task now
    holds dispatch ``new``; ``may_go_on()`` is False once the run was cancelled (EndChain).
    """
    outcome, store = await worker._run_step(d, conn)
    origin, links = d, []
    spans: list[tuple[float, float]] = []  # when each chained step began and ended
    current, current_outcome, current_store = d, outcome, store
    started = time.monotonic()
    budget = worker.chain_budget_s
    while len(links) < origin.chain and may_go_on() and time.monotonic() - started < budget:
        successor = _successor(worker, current, current_outcome, current_store)
        if successor is None:
            break
        adopted: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        env = Env(conn, None, adopted)
        began = time.monotonic()
        step = asyncio.ensure_future(worker._run_step(successor, conn, env))
        try:
            await asyncio.sleep(0)  # one turn of the loop: the step's first slice runs
            if step.done():  # ran through without waiting for anything
                spans.append((began, time.monotonic()))
                current_outcome, current_store = step.result()
                links.append({"step_name": successor.step_name, **current_outcome})
                current = successor
                continue
            # It waits (on the daemon for a durable call, or on anything else): report the
            # chain and ask to keep it.
            reply = await report(origin, outcome, _aged(links, spans), successor.step_name)
            given = reply.get("adopted") if isinstance(reply, dict) else None
            if not isinstance(given, dict) or not isinstance(given.get("dispatch_id"), str):
                return  # the run went elsewhere: the step is stopped (finally)
            adopt(origin.dispatch_id, given["dispatch_id"])
            origin = dataclasses.replace(
                successor,
                dispatch_id=given["dispatch_id"],
                attempt=given.get("attempt", 1),
                timeout_ms=given.get("timeout_ms", successor.timeout_ms),
            )
            adopted.set_result(origin.dispatch_id)
            outcome, store = await step
        finally:
            if not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
        links, spans = [], []
        current, current_outcome, current_store = origin, outcome, store
        started = time.monotonic()
    await report(origin, outcome, _aged(links, spans), None)


def _aged(links: list[dict[str, Any]], spans: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """Each chained step says how long ago it began and ended (``ago_ms``, by this process's
    monotonic clock), so the daemon can time its history by its own clock, with no skew."""
    now = time.monotonic()
    for link, (began, ended) in zip(links, spans, strict=True):
        link["ago_ms"] = [int((now - began) * 1000), int((now - ended) * 1000)]
    return links


def _successor(
    worker: Worker, d: p.DispatchStep, outcome: dict[str, Any], store: dict[str, Any] | None
) -> p.DispatchStep | None:
    """The dispatch the daemon would make after ``d`` ended with ``outcome``, if it is a plain
    step this worker runs; None when the step failed, waits, ends the run or names no step."""
    directive = outcome.get("directive")
    if store is None or directive is None or directive.get("kind") != "step":
        return None
    name = directive.get("step_name")
    wf = worker._workflows.get(d.workflow_type)
    if wf is None or not isinstance(name, str) or wf.handler("step", name) is None:
        return None
    return dataclasses.replace(
        d,
        dispatch_id="",
        step_name=name,
        handler_kind="step",
        args=None,
        store=store,
        records=[],
        attempt=1,
        early=False,
    )
