"""SPEC.md §5 end to end: each kind of bad input through the Python client AND the ``grctl`` CLI.

One table, one row per §5 case. For each row, against one real daemon and one real worker
(``flows.bi_cases``) shared by the module:

1. a bystander run (``BiBystander``) is started and is waiting with committed state;
2. the bad input goes in through the Python API: the typed error of ``grctl.errors`` with its
   stable ``code`` (and for a run that fails, ``WorkflowFailedError`` naming the culprit);
3. the same bad input goes in through ``grctl`` subprocesses: exit 1 (refused or failed) or 2
   (bad usage), the error on stderr — one line for exit 1 — naming what to do, no traceback;
4. the bystander is finished and returns its right result (``n + add``), the daemon is the same
   process and its database passes ``PRAGMA integrity_check``.

The module fixture stops the daemon at the end and checks exit 0 and a traceback-free log.
What tests/daemon/test_bad_input.py, tests/cli/test_errors.py and tests/sdk/test_definitions.py
already cover in depth (every malformed frame kind, every bad definition) is not repeated: each
row here proves the case through both doors with a bystander that must come through.
"""

from __future__ import annotations

import itertools
import json
import socket as socketlib
import struct
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest

from grctl import errors
from grctl.client import Client
from grctl.errors import error_from_wire
from grctl.protocol import MAX_FRAME_BYTES, PROTOCOL_VERSION
from grctl.worker import Worker
from grctl.worker._loader import ModuleLoadError, load_workflows
from tests.cli.conftest import Result, cli_env, run_grctl_many
from tests.conftest import Daemon, shared_daemon, wait_until

HEADER = struct.Struct(">I")
_ids = itertools.count(1)


# -- the shared daemon and worker -----------------------------------------------------------


class Served:
    def __init__(self, daemon: Daemon, worker: subprocess.Popen[bytes], big_input: Path) -> None:
        self.daemon = daemon
        self.worker = worker
        self.big_input = big_input

    def call(self, fn: Callable[[Client], Awaitable[Any]]) -> Any:
        return self.daemon.call(fn)

    def grctl(self, *commands: tuple[str, ...]) -> list[Result]:
        return run_grctl_many(list(commands), self.daemon.home)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with shared_daemon("flows.bi_cases", "bi", lambda d: cli_env(d.home)) as (daemon, worker):
        big_input = daemon.home / "big-input.json"
        big_input.write_text(json.dumps({"n": "x" * (MAX_FRAME_BYTES + 1)}))
        yield Served(daemon, worker.proc, big_input)


# -- the bystander --------------------------------------------------------------------------


@dataclass
class Ctx:
    """What one row works with: the bystander, fresh ids and what must become of them."""

    served: Served
    tag: str
    bystander: str
    n: int
    absent: list[str] = field(default_factory=list)  # ids refused at start: no run may exist
    failed: list[str] = field(default_factory=list)  # runs the CLI started that must fail

    def wid(self, what: str, refused: bool = False) -> str:
        wid = f"{what}-{self.tag}"
        if refused:
            self.absent.append(wid)
        return wid


def start_bystander(served: Served, tag: str) -> Ctx:
    n = 1000 + next(_ids)
    wid = f"bystander-{tag}"
    served.call(lambda c: c.start_workflow("BiBystander", wid, {"n": n}))
    wait_until(
        lambda: (
            served.call(lambda c: c.get_workflow_handle(wid).describe()).status.value == "waiting"
        ),
        message=f"{wid} waiting",
    )
    return Ctx(served, tag, wid, n)


def bystander_comes_through(ctx: Ctx, pid: int) -> None:
    served = ctx.served
    info = served.call(lambda c: c.get_workflow_handle(ctx.bystander).describe())
    assert info.status.value == "waiting" and info.store == {"n": ctx.n}, info
    assert served.call(lambda c: c.get_workflow_handle(ctx.bystander).inbox()) == [], (
        "nothing refused reached the bystander's inbox"
    )

    async def finish(c: Client) -> Any:
        handle = c.get_workflow_handle(ctx.bystander)
        await handle.send("finish", {"add": 2})
        return await handle.result(timeout=15)

    assert served.call(finish) == ctx.n + 2, "the bystander completes with its right result"
    status = served.daemon.status()
    assert status["pid"] == pid, "the same daemon still serves"
    assert [w["workflow_types"] for w in status["workers"]] == [["BiBad", "BiBystander"]]
    assert served.daemon.integrity_ok()


# -- checks ---------------------------------------------------------------------------------


async def refused(awaitable: Awaitable[Any], cls: type[errors.GrctlError], *words: str) -> Any:
    """The typed error with its stable code, its message naming ``words``."""
    with pytest.raises(cls) as caught:
        await awaitable
    exc = caught.value
    assert type(exc).code == cls.code and exc.code == cls.code
    assert errors._BY_CODE[exc.code] is type(exc), "the code maps back to the class"
    for word in words:
        assert word in exc.message, (word, exc.message)
    return exc


def cli_failed(r: Result, code: int, *words: str) -> None:
    assert r.code == code, r
    assert "Traceback" not in r.output, r
    if code == 1:
        lines = [line for line in r.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), r
        said = lines[0]
    else:  # typer's usage panel: unwrap it
        said = " ".join(r.err.replace("│", " ").split())
        assert "Try 'grctl" in said and "-h' for help" in said, r
    for word in words:
        assert word in said, (word, r)


async def nothing_kept(c: Client, ctx: Ctx) -> None:
    """Every start the row refused left no run; every run it failed committed no step writes."""
    for wid in ctx.absent:
        await refused(c.get_workflow_handle(wid).describe(), errors.WorkflowNotFoundError, wid)
    for wid in ctx.failed:
        info = await c.get_workflow_handle(wid).describe()
        assert info.status.value == "failed" and info.store == {}, info


async def failed_run(
    c: Client, workflow_id: str, mode: str, cause: str, *words: str
) -> dict[str, Any]:
    """Start a BiBad run of ``mode``; it fails, committing nothing of its step."""
    await c.start_workflow("BiBad", workflow_id, {"mode": mode})
    exc = await refused(
        c.get_workflow_handle(workflow_id).result(timeout=15), errors.WorkflowFailedError
    )
    details = exc.details
    assert details["type"] == "StepFailed" and details["details"]["cause"] == cause, details
    for word in words:
        assert word in details["message"], (word, details["message"])
    info = await c.get_workflow_handle(workflow_id).describe()
    assert info.status.value == "failed" and info.store == {}, "nothing the step put committed"
    history = [ev.kind for ev in await c.get_workflow_handle(workflow_id).history()]
    assert history.count("step_failed") == 1, (
        f"a definition or value error is not retried: {history}"
    )
    return details


def raw(served: Served) -> socketlib.socket:
    s = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(served.daemon.socket))
    return s


def _frame(msg: Any) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def raw_send(s: socketlib.socket, msg: Any) -> None:
    s.sendall(_frame(msg))


def raw_read(s: socketlib.socket) -> dict[str, Any] | None:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) >= 4 and len(data) >= 4 + HEADER.unpack(data[:4])[0]:
            break
    if not data:
        return None
    return msgpack.unpackb(data[4 : 4 + HEADER.unpack(data[:4])[0]], raw=False)


HELLO = {"kind": "hello", "protocol_version": PROTOCOL_VERSION, "role": "client"}


# -- the rows -------------------------------------------------------------------------------
#
# ``client(c, ctx)`` exercises the Python API; ``cli(ctx)`` gives the grctl commands to run
# side by side as (args, exit code, words the error names). Every start refused leaves no run.
# A row of ``cli=None`` is one the CLI cannot send (raw frames).


@dataclass
class Row:
    spec: str
    client: Callable[[Client, Ctx], Awaitable[None]]
    cli: Callable[[Ctx], list[tuple[tuple[str, ...], int, tuple[str, ...]]]] | None


async def _oversized_client(c: Client, ctx: Ctx) -> None:
    huge = {"n": "x" * (MAX_FRAME_BYTES + 1)}
    await refused(
        c.start_workflow("BiBystander", ctx.wid("huge", refused=True), huge),
        errors.ProtocolError,
        "frame limit",
    )
    await refused(
        c.get_workflow_handle(ctx.bystander).send("finish", {"add": "y" * MAX_FRAME_BYTES}),
        errors.ProtocolError,
        "frame limit",
    )
    assert (await c.daemon_status())["pid"], "the refused frame never left: the client goes on"


async def _malformed_client(c: Client, ctx: Ctx) -> None:
    """What a peer sending malformed frames gets: an error frame whose code types the error."""
    cases = {
        "garbage body": (True, HEADER.pack(4) + b"\xc1\xc1\xc1\xc1", "not valid msgpack"),
        "4 GiB header": (True, HEADER.pack(2**32 - 1), "over the"),
        "request before hello": (False, _frame({"kind": "status", "req_id": 1}), "must be a hello"),
    }
    for case, (say_hello, data, words) in cases.items():
        s = raw(ctx.served)
        try:
            if say_hello:
                raw_send(s, HELLO)
                assert raw_read(s)["kind"] == "welcome"
            s.sendall(data)
            reply = raw_read(s)
            assert reply is not None and reply["kind"] == "error", (case, reply)
            exc = error_from_wire(reply["code"], reply["message"])
            assert isinstance(exc, errors.ProtocolError) and exc.code == "protocol_error", case
            assert words in exc.message, (case, exc.message)
            assert raw_read(s) is None, f"{case}: only this connection is closed"
        finally:
            s.close()
    assert (await c.daemon_status())["pid"]


async def _mid_frame_client(c: Client, ctx: Ctx) -> None:
    for partial in (b"\x00\x00", HEADER.pack(100) + b"0123456789"):
        for say_hello in (False, True):
            s = raw(ctx.served)
            if say_hello:
                raw_send(s, HELLO)
                assert raw_read(s)["kind"] == "welcome"
            s.sendall(partial)
            s.close()
    assert (await c.daemon_status())["pid"]


async def _unknown_type_client(c: Client, ctx: Ctx) -> None:
    await refused(
        c.start_workflow("BiNoSuchType", ctx.wid("unknown", refused=True), None),
        errors.WorkflowTypeNotRegisteredError,
        "'BiNoSuchType'",
        "BiBystander",
        "grctl worker",
    )


async def _unserialisable_value_client(c: Client, ctx: Ctx) -> None:
    # The client's counterpart of bad JSON: a value msgpack cannot carry, refused before sending.
    await refused(
        c.start_workflow("BiBystander", ctx.wid("object-input", refused=True), {"n": object()}),
        errors.StoreValueError,
        "workflow_input",
        "msgpack",
    )
    await refused(
        c.get_workflow_handle(ctx.bystander).send("finish", {"add": {1, 2}}),
        errors.StoreValueError,
        "payload",
        "msgpack",
    )


async def _start_mismatch_client(c: Client, ctx: Ctx) -> None:
    for bad in (None, {"m": 1}, {"n": 1, "extra": 2}):
        await refused(
            c.start_workflow("BiBystander", ctx.wid("misfit", refused=True), bad),
            errors.InvalidInputError,
            "'BiBystander'",
            "'stand_by'",
            "takes: n",
        )


async def _payload_mismatch_client(c: Client, ctx: Ctx) -> None:
    for bad in (None, {"sub": 1}, {"add": 1, "extra": 2}):
        await refused(
            c.get_workflow_handle(ctx.bystander).send("finish", bad),
            errors.InvalidInputError,
            "'finish'",
        )


async def _put_client(c: Client, ctx: Ctx) -> None:
    wid = ctx.wid("put-caught")
    await c.start_workflow("BiBad", wid, {"mode": "put_caught"})
    caught = await c.get_workflow_handle(wid).result(timeout=15)
    assert caught["code"] == "store_value", "StoreValueError is raised by put itself"
    assert "'when'" in caught["message"] and "msgpack" in caught["message"], caught
    await failed_run(c, ctx.wid("put"), "put", "StoreValueError", "'when'", "msgpack")


async def _result_client(c: Client, ctx: Ctx) -> None:
    await failed_run(c, ctx.wid("result"), "result", "StoreValueError", "result", "msgpack")


def _definition_client(
    modules: list[str], cls: type[errors.GrctlError], workflow_type: str, *words: str
) -> Callable[[Client, Ctx], Awaitable[None]]:
    async def go(c: Client, ctx: Ctx) -> None:
        for module in modules:
            with pytest.raises(cls) as caught:
                workflows = load_workflows([module])
                Worker(workflows, socket_path=ctx.served.daemon.socket)
            # ModuleLoadError (import failed) is a WorkflowDefinitionError with its own code.
            assert isinstance(caught.value, errors.WorkflowDefinitionError)
            assert caught.value.code == cls.code
            for word in words:
                assert word in caught.value.message, (word, caught.value.message)
        await refused(
            c.start_workflow(workflow_type, ctx.wid("never-registered", refused=True), None),
            errors.WorkflowTypeNotRegisteredError,
            f"'{workflow_type}'",
        )

    return go


def _dynamic_transition_client(mode: str) -> Callable[[Client, Ctx], Awaitable[None]]:
    async def go(c: Client, ctx: Ctx) -> None:
        await failed_run(
            c,
            ctx.wid(mode.replace("_", "-")),
            mode,
            "WorkflowDefinitionError",
            "'BiBad'",
            "'bad_begin'",
            "'not_a_step'",
            "bad_registered",
        )

    return go


def _cli_worker(module: str, *words: str) -> Callable[[Ctx], list[Any]]:
    return lambda ctx: [(("worker", module), 1, words)]


def _cli_failed_run(mode: str, *words: str) -> Callable[[Ctx], list[Any]]:
    def cases(ctx: Ctx) -> list[Any]:
        wid = ctx.wid(f"cli-{mode.replace('_', '-')}")
        ctx.failed.append(wid)
        start = ("start", "BiBad", "--id", wid, "--input", json.dumps({"mode": mode}), "--wait")
        return [(start, 1, (*words, f"grctl describe {wid}"))]

    return cases


ROWS = {
    "malformed frame": Row("malformed frames", _malformed_client, None),
    "oversized frame": Row(
        "oversized frames",
        _oversized_client,
        lambda ctx: [
            (
                (
                    "start",
                    "BiBystander",
                    "--id",
                    ctx.wid("huge-cli", refused=True),
                    "--input-file",
                    str(ctx.served.big_input),
                ),
                1,
                ("frame limit",),
            )
        ],
    ),
    "disconnect mid-frame": Row("a client that disconnects mid-frame", _mid_frame_client, None),
    "unknown workflow type": Row(
        "unknown workflow types",
        _unknown_type_client,
        lambda ctx: [
            (
                ("start", "BiNoSuchType", "--id", ctx.wid("unknown-cli", refused=True)),
                1,
                ("'BiNoSuchType'", "not registered", "grctl worker"),
            )
        ],
    ),
    "bad JSON / unserialisable input": Row(
        "bad JSON in --input/--payload",
        _unserialisable_value_client,
        lambda ctx: [
            (
                (
                    "start",
                    "BiBystander",
                    "--id",
                    ctx.wid("cli-json", refused=True),
                    "--input",
                    '{"n": 1,',
                ),
                2,
                ("'--input'", "not valid JSON", "line 1 column 9"),
            ),
            (
                ("send", ctx.bystander, "finish", "--payload", "{add: 2}"),
                2,
                ("'--payload'", "not valid JSON", "line 1 column 2"),
            ),
        ],
    ),
    "input does not match the start handler": Row(
        "handler signatures that do not match the input",
        _start_mismatch_client,
        lambda ctx: [
            (
                (
                    "start",
                    "BiBystander",
                    "--id",
                    ctx.wid("misfit-cli", refused=True),
                    "--input",
                    '{"m": 1}',
                ),
                1,
                ("'BiBystander'", "'stand_by'", "takes: n"),
            )
        ],
    ),
    "payload does not match the event handler": Row(
        "handler signatures that do not match the input",
        _payload_mismatch_client,
        lambda ctx: [
            (
                ("send", ctx.bystander, "finish", "--payload", '{"sub": 1}'),
                1,
                ("'finish'", "missing a required argument: 'add'", "takes: add"),
            )
        ],
    ),
    "unserialisable store value": Row(
        "non-msgpack-serialisable store values (raised at put, naming the key)",
        _put_client,
        _cli_failed_run("put", "StoreValueError", "'when'"),
    ),
    "unserialisable result": Row(
        "non-msgpack-serialisable results",
        _result_client,
        _cli_failed_run("result", "StoreValueError", "result"),
    ),
    "missing start handler": Row(
        "a missing start handler",
        _definition_client(
            ["tests.flows.gd_nostart"],
            errors.WorkflowDefinitionError,
            "GdNoStart",
            "no start handler",
        ),
        _cli_worker("flows.gd_nostart", "'GdNoStart'", "no start handler", "@<workflow>.start()"),
    ),
    "two start handlers": Row(
        "two start handlers",
        _definition_client(
            ["tests.flows.gd_twostarts"],
            ModuleLoadError,
            "GdTwoStarts",
            "two start handlers",
            "'first_start'",
            "'second_start'",
        ),
        _cli_worker(
            "flows.gd_twostarts", "'GdTwoStarts'", "two start handlers", "keep exactly one"
        ),
    ),
    "next.step() to an unregistered function (at load)": Row(
        "ctx.next.step() to a function that is not a registered step",
        _definition_client(
            ["tests.flows.bi_badstep"],
            errors.WorkflowDefinitionError,
            "BiBadStep",
            "'bi_step_begin'",
            "'helper'",
            "not a registered step",
        ),
        _cli_worker("flows.bi_badstep", "'BiBadStep'", "'helper'", "@<workflow>.step()"),
    ),
    "next.step() to an unregistered name (at run time)": Row(
        "ctx.next.step() to a function that is not a registered step",
        _dynamic_transition_client("unregistered_step"),
        _cli_failed_run("unregistered_step", "'not_a_step'", "'bad_begin'"),
    ),
    "timeout_step_name naming no step (at load)": Row(
        "timeout_step_name that names no step",
        _definition_client(
            ["tests.flows.bi_badtimeout"],
            errors.WorkflowDefinitionError,
            "BiBadTimeout",
            "'auto_approve'",
            "not a registered step",
        ),
        _cli_worker("flows.bi_badtimeout", "'BiBadTimeout'", "'auto_approve'"),
    ),
    "timeout_step_name naming no step (at run time)": Row(
        "timeout_step_name that names no step",
        _dynamic_transition_client("unregistered_timeout_step"),
        _cli_failed_run("unregistered_timeout_step", "'not_a_step'", "timeout_step_name"),
    ),
    "module that fails to import": Row(
        "a workflow module that fails to import",
        _definition_client(
            ["tests.flows.gd_broken", "tests.flows.bi_no_such_module"],
            ModuleLoadError,
            "GdBroken",
        ),
        lambda ctx: [
            (
                ("worker", "flows.gd_broken"),
                1,
                ("raised RuntimeError while importing", "gd_broken.py:7"),
            ),
            (("worker", "flows.bi_no_such_module"), 1, ("'flows.bi_no_such_module' not found",)),
        ],
    ),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_gets_one_clear_error_through_client_and_cli_and_loses_nothing(served, name):
    row = ROWS[name]
    pid = served.daemon.status()["pid"]
    ctx = start_bystander(served, f"{next(_ids)}")

    served.call(lambda c: row.client(c, ctx))

    if row.cli is not None:
        cases = row.cli(ctx)
        results = served.grctl(*(args for args, _, _ in cases))
        for (_, code, words), r in zip(cases, results, strict=True):
            cli_failed(r, code, *words)

    served.call(lambda c: nothing_kept(c, ctx))
    bystander_comes_through(ctx, pid)


def test_every_spec_section_5_case_has_a_row():
    covered = {row.spec for row in ROWS.values()}
    assert covered == {
        "malformed frames",
        "oversized frames",
        "a client that disconnects mid-frame",
        "unknown workflow types",
        "bad JSON in --input/--payload",
        "non-msgpack-serialisable store values (raised at put, naming the key)",
        "non-msgpack-serialisable results",
        "handler signatures that do not match the input",
        "a missing start handler",
        "two start handlers",
        "ctx.next.step() to a function that is not a registered step",
        "timeout_step_name that names no step",
        "a workflow module that fails to import",
    }
    assert all(row.cli is not None for row in ROWS.values() if "frame" not in row.spec), (
        "every case a command can send goes through the CLI too"
    )
