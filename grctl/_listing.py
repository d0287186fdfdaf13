"""The client's listings read a page at a time, and a run's history as a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from grctl import protocol as p
from grctl.models.progress import ProgressEvent
from grctl.models.run import HistoryEvent

if TYPE_CHECKING:
    from grctl.client import WorkflowHandle

T = TypeVar("T")


class Paged(Generic[T]):
    """A listing read a page at a time: awaitable (a list) and async-iterable (item by item).

    ``pages()`` yields each page as it arrives, for printers that show rows in batches.
    """

    def __init__(
        self, fetch: Callable[[Any, int], Awaitable[tuple[list[T], Any]]], limit: int | None
    ) -> None:
        self._fetch = fetch
        self._limit = limit

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._collect().__await__()

    async def _collect(self) -> list[T]:
        return [item async for item in self]

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page:
                yield item

    async def pages(self) -> AsyncIterator[list[T]]:
        left, after = self._limit, None
        while left is None or left > 0:
            size = p.PAGE_ROWS if left is None else min(left, p.PAGE_ROWS)
            items, after = await self._fetch(after, size)
            if left is not None:
                items = items[:left]
                left -= len(items)
            if items:
                yield items
            if after is None:
                return


class History:
    """Awaitable (a list of events) and async-iterable (a stream, live with ``follow``)."""

    def __init__(
        self, handle: WorkflowHandle, follow: bool, after_seq: int, progress: bool = False
    ) -> None:
        self._handle = handle
        self._follow = follow
        self._after = after_seq
        self._progress = progress

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._collect().__await__()

    async def _collect(self) -> list[HistoryEvent | ProgressEvent]:
        return [ev async for ev in self]

    async def __aiter__(self) -> AsyncIterator[HistoryEvent | ProgressEvent]:
        async for page in self.pages():
            for ev in page:
                yield ev

    async def pages(self) -> AsyncIterator[list[HistoryEvent | ProgressEvent]]:
        """The events as the daemon sends them, a page at a time."""
        h = self._handle
        chunks = h._client._conn.stream(
            lambda r: p.GetHistory(
                r, h.workflow_id, h.run_id, self._follow, self._after, self._progress
            )
        )
        try:
            async for chunk in chunks:
                if chunk:
                    yield [
                        HistoryEvent.from_wire(row)
                        if row.get("seq") is not None
                        else ProgressEvent.from_wire(row)
                        for row in chunk
                    ]
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
