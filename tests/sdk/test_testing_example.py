"""examples/reports.py under the test kit: its resource swapped, its progress streamed."""

from __future__ import annotations

from examples import reports
from examples.reports import Renderer, open_renderer, report

made: list[Renderer] = []


async def counting_renderer():
    renderer = Renderer()
    made.append(renderer)
    yield renderer
    await renderer.close()


async def test_the_report_streams_progress_and_uses_the_swapped_renderer(grctl_env):
    made.clear()
    env = await grctl_env(report, resources={open_renderer: counting_renderer})
    handle = await env.start(report, "report-t", {"pages": 7})
    seen = [(ev.name, ev.data) async for ev in handle.stream()]
    assert await handle.result() == {"pages": 7, "last": "page-7"}
    # Every emit of this run reached the stream (a reader this close is never dropped from).
    pages = [data["done"] for name, data in seen if name == "page"]
    stages = [data for name, data in seen if name == "stage"]
    assert pages == list(range(1, 8)) or pages[-1] == 7, seen
    assert stages[-1] == "done", seen
    # The one replacement renderer, made once for the worker, rendered every page.
    assert len(made) == 1 and made[0].pages_rendered == 7
    # The last of each name is kept in the history.
    kept = {e.data["name"]: e.data for e in await handle.history() if e.kind == "progress"}
    assert set(kept) == {"page", "stage"}
    assert reports.report is report
