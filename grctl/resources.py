"""``Resource``: handler and task parameters the worker fills (a DB pool, an HTTP client…).

A parameter annotated ``Annotated[T, Resource(factory)]`` is not part of the step's input or an
event's payload: the worker calls ``factory`` and passes what it returns. With ``cache=True``
(the default) one instance serves the whole worker process: it is made on first use, once even
when many steps ask at the same moment, and shared by every step, task and query after that.
With ``cache=False`` every step execution (and every task call) gets a fresh one.

A factory takes no arguments and may be a plain function, an ``async def``, or a generator /
async generator that yields the instance once: the code after its ``yield`` is the teardown,
run when the worker stops (``cache=True``) or when the step or task call ends
(``cache=False``), as with ``contextlib.contextmanager``. A ``Worker(resources={factory:
replacement})`` map swaps a factory for another on that worker, which is how tests put a fake
in place of a real database.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from grctl.errors import ResourceError, WorkflowDefinitionError

Factory = Callable[[], Any]


class Resource:
    """Marks a parameter the worker fills: ``db: Annotated[Pool, Resource(make_pool)]``.

    Args:
        factory: a zero-argument callable (sync, async, or a generator that yields the instance
            and tears it down after the ``yield``).
        cache: True for one instance per worker process, False for one per step execution
            (and per task call).
    """

    __slots__ = ("cache", "factory")

    def __init__(self, factory: Factory, cache: bool = True) -> None:
        # Not checked here: the decorator that finds this annotation checks it and names the
        # handler, which this constructor cannot.
        self.factory = factory
        self.cache = cache

    @property
    def name(self) -> str:
        """The factory's name, as errors show it."""
        return getattr(self.factory, "__qualname__", None) or repr(self.factory)

    def __repr__(self) -> str:
        return f"Resource({self.name}, cache={self.cache})"


def resource_params(fn: Any, where: str) -> dict[str, Resource]:
    """The parameters of ``fn`` annotated with a Resource, by name; checked, naming ``where``.

    String annotations (``from __future__ import annotations``) are resolved against the
    function's module; one that cannot be resolved is taken as no Resource, unless it names
    ``Resource`` (or an alias ending in it): then the parameter would silently go unfilled, so
    it is refused.
    """
    raw = getattr(fn, "__annotations__", None) or {}
    if not raw:
        return {}
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # one name that cannot be resolved must not hide the others
        hints = {k: _resolve(v, fn) for k, v in raw.items()}
        for k, v in raw.items():
            if hints[k] is None and isinstance(v, str) and "Resource" in v:
                raise WorkflowDefinitionError(
                    f"{where}: the annotation of parameter {k!r} ({v!r}) cannot be resolved "
                    "in the module's globals; with `from __future__ import annotations`, define "
                    "the Annotated[..., Resource(...)] alias and its factory at module level"
                ) from None
    found: dict[str, Resource] = {}
    for name, hint in hints.items():
        if name == "return" or typing.get_origin(hint) is not typing.Annotated:
            continue
        marks = [m for m in hint.__metadata__ if isinstance(m, Resource)]
        if not marks:
            continue
        if len(marks) > 1:
            raise WorkflowDefinitionError(
                f"{where}: parameter {name!r} carries {len(marks)} Resource markers; keep one"
            )
        _check_factory(marks[0].factory, f"{where}: parameter {name!r}: Resource(...)")
        if not isinstance(marks[0].cache, bool):
            raise WorkflowDefinitionError(
                f"{where}: parameter {name!r}: Resource(cache=...) takes True or False"
            )
        found[name] = marks[0]
    return found


def _resolve(annotation: Any, fn: Any) -> Any:
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, getattr(fn, "__globals__", {}))  # noqa: S307 - the module's own
    except Exception:
        return None


def _check_factory(factory: Any, what: str) -> None:
    if not callable(factory):
        raise WorkflowDefinitionError(
            f"{what} needs a zero-argument callable that makes the resource, got "
            f"{factory!r}; write Resource(make_client), not Resource(make_client())"
        )
    try:
        inspect.signature(factory).bind()
    except TypeError:
        raise WorkflowDefinitionError(
            f"{what}: factory {getattr(factory, '__qualname__', factory)!r} must take no "
            "arguments; wrap it, e.g. Resource(lambda: make_pool(dsn))"
        ) from None
    except ValueError:
        pass  # a builtin without a signature: called as it is


class Resources:
    """One worker's resources: the cached instances, the overrides, and the teardowns.

    ``scope`` is an ``AsyncExitStack`` for instances that end with their step or task call
    (``cache=False``); the cached ones end with ``aclose()``, when the worker stops.
    """

    def __init__(self, overrides: Mapping[Factory, Factory] | None = None) -> None:
        self._overrides: dict[Factory, Factory] = {}
        for original, replacement in (overrides or {}).items():
            _check_factory(original, "Worker(resources=...): a key")
            _check_factory(
                replacement,
                f"Worker(resources=...): the replacement for "
                f"{getattr(original, '__qualname__', original)!r}",
            )
            self._overrides[original] = replacement
        self._cached: dict[Factory, Any] = {}
        self._locks: dict[Factory, asyncio.Lock] = {}
        self._stack = contextlib.AsyncExitStack()

    async def fill(
        self, wanted: dict[str, Resource], scope: contextlib.AsyncExitStack, shared: bool = True
    ) -> dict[str, Any]:
        """The instances for ``wanted`` as keyword arguments; ResourceError if a factory fails.

        With ``shared=False`` every one is made afresh on ``scope`` (a task called outside
        any worker).
        """
        values: dict[str, Any] = {}
        for param, res in wanted.items():
            if res.cache and shared:
                values[param] = await self._shared(res)
            else:
                values[param] = await self._make(res, scope)
        return values

    async def _shared(self, res: Resource) -> Any:
        key = res.factory
        if key in self._cached:
            return self._cached[key]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent first uses make it once
            if key not in self._cached:
                self._cached[key] = await self._make(res, self._stack)
        return self._cached[key]

    async def _make(self, res: Resource, stack: contextlib.AsyncExitStack) -> Any:
        factory = self._overrides.get(res.factory, res.factory)
        try:
            return await make(factory, stack)
        except Exception as exc:
            raise ResourceError(
                f"resource {res.name!r} could not be made: {type(exc).__name__}: {exc}"
            ) from exc

    async def aclose(self) -> None:
        """Tear down the cached instances (the newest first); called when the worker stops."""
        self._cached.clear()
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        await stack.aclose()


async def make(factory: Factory, stack: contextlib.AsyncExitStack) -> Any:
    """Call a factory; a generator's teardown goes on ``stack``."""
    if inspect.isasyncgenfunction(factory):
        return await stack.enter_async_context(contextlib.asynccontextmanager(factory)())
    if inspect.isgeneratorfunction(factory):
        return stack.enter_context(contextlib.contextmanager(factory)())
    value = factory()
    if inspect.isawaitable(value):
        value = await value
    return value


__all__ = ["Resource", "Resources", "resource_params"]
