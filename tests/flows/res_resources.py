"""Steps, a task and a query that take Resources; factories note each make/close in a ledger.

The ledger is ``$GRCTL_HOME/res-ledger.txt``: ``made shared ID``, ``closed shared ID``, ``made
fresh ID``, ``closed fresh ID``, ``broken``. Run as a script it is a worker whose ``make_shared``
is swapped for ``make_fake`` (``Worker(resources=...)``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from pathlib import Path
from typing import Annotated

from grctl import Resource
from grctl.models import Directive
from grctl.models.directive import RetryPolicy
from grctl.worker import Worker, task
from grctl.worker.context import Context
from grctl.workflow import Workflow

_ids = itertools.count(1)


def note(line: str) -> None:
    with (Path(os.environ["GRCTL_HOME"]) / "res-ledger.txt").open("a") as f:
        f.write(line + "\n")


class Thing:
    """A stand-in for a pool or a client: its ``kind`` and an id unique in the process."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.id = f"{kind}-{os.getpid()}-{next(_ids)}"


def make_shared():
    thing = Thing("shared")
    note(f"made shared {thing.id}")
    yield thing
    note(f"closed shared {thing.id}")


async def make_fresh():
    await asyncio.sleep(0)
    thing = Thing("fresh")
    note(f"made fresh {thing.id}")
    yield thing
    note(f"closed fresh {thing.id}")


def make_broken() -> Thing:
    note("broken")
    raise ConnectionError("database is down")


def make_fake() -> Thing:
    return Thing("fake")


Shared = Annotated[Thing, Resource(make_shared)]
Fresh = Annotated[Thing, Resource(make_fresh, cache=False)]

uses = Workflow(workflow_type="ResUse")


@task
async def res_task(label: str, shared: Shared, fresh: Fresh) -> dict:
    return {"label": label, "shared": shared.id, "fresh": fresh.id}


@uses.start()
async def res_start(ctx: Context, shared: Shared, label: str, fresh: Fresh) -> Directive:
    ctx.store.put("start", {"label": label, "shared": shared.id, "fresh": fresh.id})
    return ctx.next.step(res_second)


@uses.step()
async def res_second(ctx: Context, shared: Shared, fresh: Fresh) -> Directive:
    in_task = await res_task("in task")
    return ctx.next.complete(
        {
            "start": await ctx.store.get("start"),
            "second": {"shared": shared.id, "fresh": fresh.id, "kind": shared.kind},
            "task": in_task,
        }
    )


@uses.query()
async def res_kind(ctx: Context, shared: Shared) -> str:
    return shared.kind


broken = Workflow(workflow_type="ResBroken")


@broken.start()
async def broken_start(ctx: Context) -> Directive:
    return ctx.next.step(broken_step)


@broken.step(retry_policy=RetryPolicy(max_attempts=2, initial_delay_ms=10))
async def broken_step(ctx: Context, db: Annotated[Thing, Resource(make_broken)]) -> Directive:
    return ctx.next.complete(db.id)


if __name__ == "__main__":
    worker = Worker([uses, broken], home=sys.argv[1], resources={make_shared: make_fake})
    asyncio.run(worker.run())
