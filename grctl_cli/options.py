"""Options every command shares, and reading option values: JSON, ``key=value``, files.

A value the user typed wrong is a usage error (exit 2) that says where it broke; the typer app
prints it. Nothing here talks to the daemon except ``connect``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from grctl.errors import GrctlError

if TYPE_CHECKING:
    # Imported where used: ``grctl --help`` must not pay for the client and the protocol.
    from grctl.client import Client

T = TypeVar("T")


class RefusedError(GrctlError):
    """An operation the CLI itself refuses (a result asked of a run still going): exit 1."""

    code = "cli_refused"


HomeOpt = Annotated[
    str | None,
    typer.Option(
        "--home",
        metavar="DIR",
        help="grctl home directory (default: GRCTL_HOME, else ~/.grctl).",
        show_default=False,
    ),
]
SocketOpt = Annotated[
    str | None,
    typer.Option(
        "--socket",
        metavar="PATH",
        help="Daemon socket (default: GRCTL_SOCKET, else <home>/grctl.sock).",
        show_default=False,
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        metavar="HOST:PORT",
        help="Reach the daemon over TCP at this address, as started with --listen "
        "(default: GRCTL_ADDRESS, else the socket).",
        show_default=False,
    ),
]
TokenFileOpt = Annotated[
    str | None,
    typer.Option(
        "--token-file",
        metavar="PATH",
        help="File holding the daemon's token, for --address (default: GRCTL_TOKEN).",
        show_default=False,
    ),
]
TlsCaOpt = Annotated[
    str | None,
    typer.Option(
        "--tls-ca",
        metavar="PATH",
        help="CA certificate (PEM) to verify a TLS daemon with, for --address "
        "(default: GRCTL_TLS_CA, else plain TCP).",
        show_default=False,
    ),
]
# The options naming the daemon, as every command that talks to it declares them.
WHERE = ("home", "socket", "address", "token_file", "tls_ca")
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts (one document) instead of a table.")
]

COMPLETION_TIMEOUT_S = 2.0
COMPLETION_LIMIT = 200


def _ask_daemon(ctx: typer.Context, fn: Callable[[Client], Awaitable[T]]) -> T | None:
    """For shell completion: ask the daemon quickly; None if it is down or slow."""

    async def go() -> T:
        async with connect(*(ctx.params.get(name) for name in WHERE)) as client:
            return await fn(client)

    import asyncio

    try:
        return asyncio.run(asyncio.wait_for(go(), COMPLETION_TIMEOUT_S))
    except Exception:  # completion must never break the user's shell
        return None


def complete_workflow_id(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """<Tab> on an ID: the workflow_ids of recent runs, with their type and status."""
    runs = _ask_daemon(ctx, lambda c: c.list_workflows(limit=COMPLETION_LIMIT)) or []
    seen: dict[str, str] = {}
    for r in runs:
        if r.workflow_id.startswith(incomplete) and r.workflow_id not in seen:
            seen[r.workflow_id] = f"{r.workflow_type} {r.status.value}"
    return list(seen.items())


def complete_active_workflow_id(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """<Tab> on the ID of ``send``: the workflow_ids of recent active runs only."""
    runs = _ask_daemon(ctx, lambda c: c.list_workflows(limit=COMPLETION_LIMIT)) or []
    seen: dict[str, str] = {}
    for r in runs:
        if r.status.is_active and r.workflow_id.startswith(incomplete):
            seen.setdefault(r.workflow_id, f"{r.workflow_type} {r.status.value}")
    return list(seen.items())


def _given_id(ctx: typer.Context) -> str | None:
    """The ID already typed: parsed, or (when an option waits for its value) left in ``args``."""
    wid = ctx.params.get("workflow_id")
    if wid is None:
        wid = next((a for a in ctx.args if not a.startswith("-")), None)
    return wid


def complete_run_id(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """<Tab> on ``--run``: the run_ids of the ID given (all recent runs without one)."""
    wid = _given_id(ctx)
    runs = _ask_daemon(ctx, lambda c: c.list_workflows(limit=COMPLETION_LIMIT)) or []
    return [
        (r.run_id, f"{r.workflow_id} {r.status.value}")
        for r in runs
        if (wid is None or r.workflow_id == wid) and r.run_id.startswith(incomplete)
    ]


def _names_of_run(ctx: typer.Context, kind: str, incomplete: str) -> list[str]:
    """The event or query names (``kind``) of the ID's workflow type, as the daemon knows it."""
    wid = _given_id(ctx)

    async def ask(c: Client) -> list[str]:
        status = await c.daemon_status()
        types = status.get("types") or {}
        if wid:
            wanted = (await c.get_workflow_handle(wid).describe()).workflow_type
            return list(types.get(wanted, {}).get(kind, []))
        return sorted({n for t in types.values() for n in t.get(kind, [])})

    names = _ask_daemon(ctx, ask) or []
    return [n for n in names if n.startswith(incomplete)]


def complete_event_name(ctx: typer.Context, incomplete: str) -> list[str]:
    """<Tab> on an EVENT: the events the run's workflow type handles."""
    return _names_of_run(ctx, "events", incomplete)


def complete_query_name(ctx: typer.Context, incomplete: str) -> list[str]:
    """<Tab> on a query NAME: the queries the run's workflow type answers."""
    return _names_of_run(ctx, "queries", incomplete)


def complete_module(incomplete: str) -> list[str]:
    """<Tab> on ``grctl worker MODULE``: importable .py modules and packages under the cwd."""
    from pathlib import Path as _Path

    base, _, _ = incomplete.rpartition(".")
    folder = _Path(*base.split(".")) if base else _Path(".")
    out: list[str] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        name = entry.stem if entry.suffix == ".py" else entry.name
        if not name.isidentifier() or name == "__init__":
            continue
        if entry.is_dir() and not (entry / "__init__.py").exists():
            continue
        if entry.is_file() and entry.suffix != ".py":
            continue
        dotted = f"{base}.{name}" if base else name
        if dotted.startswith(incomplete):
            out.append(dotted)
    return out


def complete_workflow_type(ctx: typer.Context, incomplete: str) -> list[str]:
    """<Tab> on a TYPE: the workflow types the connected workers serve."""
    status = _ask_daemon(ctx, lambda c: c.daemon_status()) or {}
    types = {t for w in status.get("workers", []) for t in w["workflow_types"]}
    return sorted(t for t in types if t.startswith(incomplete))


WorkflowIdArg = Annotated[
    str,
    typer.Argument(metavar="ID", help="The workflow_id.", autocompletion=complete_workflow_id),
]
ActiveWorkflowIdArg = Annotated[
    str,
    typer.Argument(
        metavar="ID", help="The workflow_id.", autocompletion=complete_active_workflow_id
    ),
]
RunOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        metavar="RUN_ID",
        help="A given run (default: the latest).",
        autocompletion=complete_run_id,
    ),
]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to its end; errors go up to the app's one error boundary."""
    from grctl.loop import run as run_loop

    return run_loop(coro)


@asynccontextmanager
async def connect(
    home: str | None = None,
    socket: str | None = None,
    address: str | None = None,
    token_file: str | None = None,
    tls_ca: str | None = None,
) -> AsyncIterator[Client]:
    """A client on the daemon these options name; DaemonUnavailableError if none answers.

    A malformed ``--address``, or a token or CA file that cannot be read, is bad usage.
    """
    from grctl.client import Client

    try:
        client = await Client.connect(
            socket, home=home, address=address, token_file=token_file, tls_ca=tls_ca
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        yield client
    finally:
        await client.close()


# -- values -----------------------------------------------------------------------------------


def parse_json(text: str, option: str) -> Any:
    """JSON from an option; bad JSON is a usage error that points at where it broke."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(_where(exc, text), param_hint=f"'{option}'") from None


def read_json_file(path: str, option: str) -> Any:
    """JSON from a file (``-`` reads stdin); a missing file or bad JSON is a usage error."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path}: {exc.strerror or exc}", param_hint=f"'{option}'"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        source = "stdin" if path == "-" else path
        raise typer.BadParameter(
            f"{source}: {_where(exc, text)}", param_hint=f"'{option}'"
        ) from None


def _where(exc: json.JSONDecodeError, text: str) -> str:
    """``not valid JSON: Expecting ',' delimiter at line 1 column 9`` and the line, marked."""
    line = text.splitlines()[exc.lineno - 1] if text.strip() else ""
    start = max(0, exc.colno - 40)
    excerpt = line[start : start + 70]
    caret = " " * (exc.colno - 1 - start) + "^"
    return (
        f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}\n  {excerpt}\n  {caret}"
    )


def parse_items(items: list[str], option: str = "-i") -> dict[str, Any]:
    """``key=value`` pairs; each value is JSON (``qty=2``, ``ok=true``) or else a plain string.

    A value that opens like JSON (``{``, ``[`` or ``"``) must be valid JSON, so a typo in
    ``tags=["a",`` is an error rather than a surprising string.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(
                f"{item!r} is not KEY=VALUE (for example: -i qty=2 -i sku=abc)",
                param_hint=f"'{option}'",
            )
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError as exc:
            if raw.lstrip()[:1] in ("{", "[", '"'):
                raise typer.BadParameter(
                    f"{key}: {_where(exc, raw)}", param_hint=f"'{option}'"
                ) from None
            out[key.strip()] = raw
    return out


def build_input(text: str | None, file: str | None, items: list[str]) -> Any:
    """The workflow input from ``--input``, ``--input-file`` and ``-i``; None when none given."""
    if text is not None and file is not None:
        raise typer.BadParameter("give --input or --input-file, not both", param_hint="'--input'")
    base: Any = None
    if text is not None:
        base = parse_json(text, "--input")
    elif file is not None:
        base = read_json_file(file, "--input-file")
    if not items:
        return base
    if base is not None and not isinstance(base, dict):
        raise typer.BadParameter(
            "-i adds keys to the input, so --input must be a JSON object", param_hint="'-i'"
        )
    return {**(base or {}), **parse_items(items)}


def build_payload(text: str | None, file: str | None) -> Any:
    """The event payload from ``--payload`` or ``--payload-file``; None when neither given."""
    if text is not None and file is not None:
        raise typer.BadParameter(
            "give --payload or --payload-file, not both", param_hint="'--payload'"
        )
    if text is not None:
        return parse_json(text, "--payload")
    if file is not None:
        return read_json_file(file, "--payload-file")
    return None


RunTimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--run-timeout",
        metavar="DURATION",
        help="Fail the run with RunTimeout if it has not ended this long after its start: "
        "90s, 15m, 1h, 7d (at most 3650d).",
    ),
]


def parse_run_timeout(text: str | None) -> timedelta | None:
    """``--run-timeout``: a positive duration, or None when not given (exit 2 otherwise)."""
    if text is None:
        return None
    from grctl.duration import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--run-timeout") from None
    if value <= timedelta(0):
        raise typer.BadParameter(
            "must be a positive duration, such as 90s, 1h or 7d", param_hint="--run-timeout"
        )
    return value
