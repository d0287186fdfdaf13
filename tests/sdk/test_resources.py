"""Resource annotations at decoration time, and tasks called outside any worker (no daemon)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import pytest

from grctl import Resource
from grctl.errors import ResourceError, WorkflowDefinitionError
from grctl.resources import Resources
from grctl.worker import task
from grctl.workflow import Workflow

events: list[str] = []


def make_conn():
    events.append("open")
    yield "conn"
    events.append("close")


Conn = Annotated[str, Resource(make_conn)]


def test_resource_parameters_are_not_input():
    wf = Workflow("ResDef")

    @wf.start()
    async def begin(ctx, order_id: str, conn: Conn):
        return ctx.next.step(later)

    @wf.step()
    async def later(ctx, conn: Conn):  # a step takes only ctx, but a Resource is filled
        return ctx.next.complete(None)

    @wf.event()
    async def poke(ctx, conn: Conn, value: int = 0):
        return ctx.next.complete(None)

    spec = wf.spec()
    assert [p[0] for p in spec.start_params] == ["order_id"]
    assert [p[0] for p in spec.events["poke"]] == ["value"]
    assert set(wf.resources[later]) == {"conn"}


def test_a_resource_without_a_callable_fails_at_decoration_naming_the_handler():
    wf = Workflow("ResBad")
    with pytest.raises(WorkflowDefinitionError, match=r"'charge'.*parameter 'db'.*callable"):

        @wf.step()
        async def charge(ctx, db: Annotated[str, Resource(42)]):  # type: ignore[arg-type]
            return ctx.next.complete(None)

    with pytest.raises(WorkflowDefinitionError, match=r"needs_arg'.*must take no arguments"):

        @task
        async def needs_arg(db: Annotated[str, Resource(lambda dsn: dsn)]):  # type: ignore[misc]
            return db


def test_a_step_still_refuses_plain_required_parameters():
    wf = Workflow("ResPlain")
    with pytest.raises(WorkflowDefinitionError, match="requires order_id"):

        @wf.step()
        async def plain(ctx, conn: Conn, order_id: str):
            return ctx.next.complete(None)


def test_a_task_outside_a_worker_makes_and_closes_its_resources_per_call():
    @task
    async def use(n: int, conn: Conn) -> str:
        return f"{conn}-{n}"

    events.clear()
    assert asyncio.run(use(1)) == "conn-1"
    assert asyncio.run(use(2, conn="given")) == "given-2", "a passed value wins"
    assert events == ["open", "close"]


def test_cached_resources_are_made_once_under_concurrency_and_closed_once():
    calls: list[str] = []

    async def make_pool():
        calls.append("make")
        await asyncio.sleep(0.01)
        return object()

    def broken():
        raise OSError("no route")

    async def go():
        res = Resources()
        wanted = {"pool": Resource(make_pool)}
        async with __import__("contextlib").AsyncExitStack() as scope:
            got = await asyncio.gather(*(res.fill(wanted, scope) for _ in range(20)))
        assert len({id(g["pool"]) for g in got}) == 1
        with pytest.raises(ResourceError, match=r"'.*broken'.*OSError: no route"):
            await res.fill({"x": Resource(broken)}, scope)
        await res.aclose()

    asyncio.run(go())
    assert calls == ["make"]


def test_worker_overrides_must_be_factories():
    with pytest.raises(WorkflowDefinitionError, match="replacement for 'make_conn'"):
        Resources({make_conn: "not callable"})  # type: ignore[dict-item]


def test_an_unresolvable_resource_annotation_is_refused_not_silently_ignored():
    import grctl.resources as res

    async def step(ctx, pool: Annotated[int, Resource(make_local)]):  # noqa: F821
        return None

    with pytest.raises(WorkflowDefinitionError, match="module level"):
        res.resource_params(step, "workflow 'W', step 'step'")
