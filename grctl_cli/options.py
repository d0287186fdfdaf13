"""Options every command shares (``--home``, ``--socket``, ``--json``) and the one runner."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from grctl._home import socket_path
from grctl.client import Client
from grctl.errors import GrctlError

T = TypeVar("T")

HomeOpt = Annotated[
    str | None,
    typer.Option(
        "--home",
        envvar="GRCTL_HOME",
        help="grctl home directory (default ~/.grctl).",
        show_envvar=True,
    ),
]
SocketOpt = Annotated[
    str | None,
    typer.Option(
        "--socket", help="Daemon socket path (default <home>/grctl.sock or GRCTL_SOCKET)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


def resolve_socket(home: str | None, socket: str | None) -> Path:
    return socket_path(socket, home)


def fail(message: str, code: int = 1) -> None:
    """Print one line on stderr and exit: 1 refused/failed, 2 bad usage."""
    from grctl_cli.render import err_console

    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run(coro: Awaitable[T]) -> T:
    """Run one coroutine; expected errors become one line and exit code 1, never a traceback."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except GrctlError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise AssertionError("unreachable")


async def with_client(
    home: str | None, socket: str | None, fn: Callable[[Client], Awaitable[T]]
) -> T:
    client = await Client.connect(resolve_socket(home, socket))
    try:
        return await fn(client)
    finally:
        await client.close()


def parse_json(text: str, what: str) -> Any:
    """Parse JSON from an option; bad JSON is a usage error that says where it broke."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(char {exc.pos}): {text[max(0, exc.pos - 10) : exc.pos + 10]!r}",
            2,
        )


def stdin_is_tty() -> bool:
    return sys.stdin.isatty()
