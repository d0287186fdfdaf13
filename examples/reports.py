"""A long report build that streams its progress and borrows a shared resource.

    grctl worker examples.reports
    grctl start BuildReport --id report-1 --input '{"pages": 20}'
    grctl history report-1 --follow       # progress lines as the pages render

``ctx.emit`` sends a progress event to whoever follows the run, without a commit; the last one
of each name stays in the history. ``Renderer`` is a resource: the worker makes one per
process on first use and closes it when it stops (tests swap it with
``Worker(resources={open_renderer: ...})`` or the test kit's ``resources=``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from grctl import Context, Directive, Resource, Workflow
from grctl.worker import emit
from grctl.worker.task import task


class Renderer:
    """Stands in for something costly to open: a browser, a connection pool, a model."""

    def __init__(self) -> None:
        self.pages_rendered = 0
        self.closed = False

    async def render(self, page: int) -> str:
        await asyncio.sleep(0.02)  # the work; a real renderer takes longer
        self.pages_rendered += 1
        return f"page-{page}"

    async def close(self) -> None:
        self.closed = True


async def open_renderer() -> AsyncIterator[Renderer]:
    renderer = Renderer()
    yield renderer
    await renderer.close()  # when the worker stops


Rendering = Annotated[Renderer, Resource(open_renderer)]
report = Workflow(workflow_type="BuildReport")


@task
async def render_chapter(first: int, last: int, renderer: Rendering) -> list[str]:
    """Render pages first..last; a task, so a replay after a crash does not render them again."""
    pages = []
    for page in range(first, last + 1):
        pages.append(await renderer.render(page))
        await emit("page", {"done": page, "of": last})  # from a task: grctl.worker.emit
    return pages


@report.start()
async def start(ctx: Context, pages: int = 10) -> Directive:
    ctx.store.put("pages", pages)
    return ctx.next.step(render)


@report.step()
async def render(ctx: Context) -> Directive:
    pages = await ctx.store.get("pages", int)
    rendered: list[str] = []
    for first in range(1, pages + 1, 5):
        await ctx.emit("stage", f"chapter from page {first}")
        rendered += await render_chapter(first, min(first + 4, pages))
    await ctx.emit("stage", "done")
    return ctx.next.complete({"pages": len(rendered), "last": rendered[-1] if rendered else None})
