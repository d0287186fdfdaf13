"""The pytest plugin (entry point ``grctl``): the ``grctl_env`` fixture, async tests run for it.

A test names its workflows when it opens the environment::

    async def test_order(grctl_env):
        env = await grctl_env(order)  # or: async with grctl_env(order) as env:
        ...

``grctl_env`` is a factory: each call opens a ``WorkflowEnvironment`` (keyword arguments go
to it) in the test's event loop, and every environment still open is closed at the end of the
test's coroutine, on its loop. An ``async def`` test that asks for ``grctl_env`` and that no
other plugin runs is run here on a fresh event loop, so pytest-asyncio is not needed. Where
pytest-asyncio runs it (auto mode, or ``@pytest.mark.asyncio``), its loop is used and the
environments are closed the same way (checked with pytest-asyncio 1.5). Async fixtures are not
run by this plugin. ``-p no:grctl`` turns it off.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Generator
from typing import Any

import pytest

from grctl.errors import TestEnvironmentError
from grctl.testing._environment import WorkflowEnvironment
from grctl.workflow import Workflow

FIXTURE = "grctl_env"


class EnvFactory:
    """What ``grctl_env`` is: call it with workflows to open an environment for this test."""

    def __init__(self) -> None:
        self.envs: list[tuple[WorkflowEnvironment, asyncio.AbstractEventLoop]] = []

    def __call__(self, *workflows: Workflow, **options: Any) -> _Opening:
        """``await grctl_env(wf, ...)`` or ``async with grctl_env(wf, ...) as env``."""
        return _Opening(self, WorkflowEnvironment(workflows=workflows, **options))

    async def aclose(self) -> None:
        """Close every environment this test opened and has not closed, newest first."""
        while self.envs:
            env, _ = self.envs.pop()
            await env.close()

    def close_left_open(self) -> None:
        """At teardown: close what the test left open, on its loop if that loop still runs.

        Raises TestEnvironmentError when the loop is gone (a sync test that ran its own loop):
        the environment is abandoned, and the test should close it itself.
        """
        gone = 0
        while self.envs:
            env, loop = self.envs.pop()
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(env.close())
            else:
                env.abandon()
                gone += 1
        if gone:
            raise TestEnvironmentError(
                f"{gone} WorkflowEnvironment(s) were left open on an event loop that has ended; "
                "close them in the test: async with grctl_env(...) as env"
            )


class _Opening:
    """An environment about to open: awaitable, or an async context manager."""

    def __init__(self, factory: EnvFactory, env: WorkflowEnvironment) -> None:
        self._factory = factory
        self._env = env

    async def _open(self) -> WorkflowEnvironment:
        await self._env.open()
        self._factory.envs.append((self._env, asyncio.get_running_loop()))
        return self._env

    def __await__(self) -> Generator[Any, None, WorkflowEnvironment]:
        return self._open().__await__()

    async def __aenter__(self) -> WorkflowEnvironment:
        return await self._open()

    async def __aexit__(self, *exc: object) -> None:
        self._factory.envs = [(e, lp) for e, lp in self._factory.envs if e is not self._env]
        await self._env.close()


@pytest.fixture
def grctl_env(request: pytest.FixtureRequest) -> Generator[EnvFactory, None, None]:
    """Opens ``WorkflowEnvironment``s for the test: ``env = await grctl_env(wf1, wf2)``."""
    factory = EnvFactory()
    item = request.node
    test = getattr(item, "obj", None)
    if inspect.iscoroutinefunction(test) and not getattr(test, "_grctl_closes", False):
        # The environments are closed inside the test's coroutine, on its loop, whichever
        # plugin runs it: a runner's loop may be gone by the time fixtures are torn down.
        @functools.wraps(test)
        async def closing(*args: Any, **kwargs: Any) -> Any:
            try:
                return await test(*args, **kwargs)
            finally:
                await kwargs[FIXTURE].aclose()

        closing._grctl_closes = True  # type: ignore[attr-defined]
        item.obj = closing
    yield factory
    factory.close_left_open()


@pytest.hookimpl
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test that uses ``grctl_env`` when no other plugin did."""
    fn = pyfuncitem.obj
    if FIXTURE not in pyfuncitem.fixturenames or not inspect.iscoroutinefunction(fn):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(fn(**args))
    return True
