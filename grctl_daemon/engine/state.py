"""A run's state as the engine sees it (the type definitions it decides with are grctl.models')."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from grctl.models.definition import DEFAULT_STEP_TIMEOUT_MS, StepSpec, TypeDef
from grctl.models.run import ACTIVE_STATUSES
from grctl_daemon.storage.base import PARTITIONS, RunRecord, partition_of

__all__ = [
    "MAX_EVENT_KEYS",
    "DEFAULT_STEP_TIMEOUT_MS",
    "EMPTY",
    "PARTITIONS",
    "InboxItem",
    "RunState",
    "Seq",
    "StepSpec",
    "TypeDef",
    "partition_of",
]
T = TypeVar("T")
MAX_EVENT_KEYS = 256


class Seq(Generic[T]):
    """An immutable sequence whose successive versions share one list.

    A decision never changes the state it was given (it copies, then changes the copy), so a
    run's step records and inbox were copied whole on every append: quadratic in their length.
    ``append`` and ``popleft`` return a new ``Seq`` in O(1) instead; an older version keeps
    seeing exactly its own items (a view ``[start:end]`` of the shared list), and only an
    append to an older version (a branch, which the runtime never makes) copies.
    """

    __slots__ = ("_items", "_start", "_end")

    def __init__(self, items: list[T] | tuple[T, ...] = ()) -> None:
        self._items = list(items)
        self._start = 0
        self._end = len(self._items)

    @classmethod
    def _view(cls, items: list[T], start: int, end: int) -> Seq[T]:
        new = object.__new__(cls)
        new._items, new._start, new._end = items, start, end
        return new

    def __len__(self) -> int:
        return self._end - self._start

    def __iter__(self) -> Iterator[T]:
        items = self._items
        return (items[i] for i in range(self._start, self._end))

    def __getitem__(self, i: int) -> T:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return self._items[self._start + (i % n)]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Seq):
            return list(self) == list(other)
        if isinstance(other, list | tuple):
            return list(self) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Seq({list(self)!r})"

    def append(self, item: T) -> Seq[T]:
        items, start, end = self._items, self._start, self._end
        if end != len(items):  # a branch: another version appended here already
            items, start, end = items[start:end], 0, end - start
        items.append(item)
        return Seq._view(items, start, end + 1)

    def popleft(self) -> tuple[T, Seq[T]]:
        return self._items[self._start], Seq._view(self._items, self._start + 1, self._end)


EMPTY: Seq[Any] = Seq()


@dataclass
class InboxItem:
    seq: int
    event_name: str
    payload: bytes | None


@dataclass
class RunState(RunRecord):
    """A run as the engine sees it: its row, committed store, pending inbox and step records.

    ``dispatch_id`` (the fencing token) and ``worker`` are not columns: the token is made of
    durable values (``run_id.step_seq.attempt``, the attempt saved by the dispatch's commit),
    and after a daemon restart every in-flight step is dispatched again as a new attempt.
    """

    store: dict[str, bytes] = field(default_factory=dict)
    records: Seq[bytes] = EMPTY
    inbox: Seq[InboxItem] = EMPTY
    timers: dict[str, tuple[int, str]] = field(default_factory=dict)
    dispatch_id: str | None = None
    worker: str | None = None
    # Idempotency keys of events sent since the run was loaded, newest last (at most
    # MAX_EVENT_KEYS): a duplicate whose first send is not committed yet is caught here,
    # an older one by the runtime's look-up in the database (Send.known_seq).
    event_keys: dict[str, int] = field(default_factory=dict)

    def copy(self) -> RunState:
        # A shallow copy without dataclasses.replace's per-field introspection: this runs for
        # every decision on the step hot path.
        new = object.__new__(RunState)
        new.__dict__.update(self.__dict__)
        new.saved_status = self.status  # what the row holds (or will, once its unit commits)
        return new

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def store_bytes(self) -> int:
        return sum(len(k) + len(v or b"") for k, v in self.store.items())
