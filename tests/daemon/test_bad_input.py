"""SPEC.md section 5 against the real daemon over its real socket: bad input gets one clear
error, the daemon keeps serving everyone else, and no committed state is lost.

Each test keeps a run (``keeper``) waiting with a committed store from before the bad input,
and checks afterwards that it is intact and still takes events. The ``daemon`` fixture then
checks a graceful exit 0 and a daemon.log without a Traceback.
"""

from __future__ import annotations

import socket as socketlib
import struct
import subprocess
from typing import Any

import msgpack
import pytest

from grctl.errors import (
    InvalidInputError,
    ProtocolError,
    UnknownEventError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
    WorkflowTypeNotRegisteredError,
)
from grctl.protocol import MAX_FRAME_BYTES, PROTOCOL_VERSION, VALUE_EXT
from tests.conftest import GRCTL, TESTS, Daemon, wait_until

FLOWS = "flows.gd_bad"
HEADER = struct.Struct(">I")


# -- a raw peer, to send what no SDK would --------------------------------------------------


class RawPeer:
    """A bare socket to the daemon: frames in and out, nothing checked on our side."""

    def __init__(self, daemon: Daemon) -> None:
        self.sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(str(daemon.socket))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_msg(self, msg: Any) -> None:
        body = msgpack.packb(msg, use_bin_type=True)
        self.send(HEADER.pack(len(body)) + body)

    def hello(self, role: str = "client") -> None:
        self.send_msg({"kind": "hello", "protocol_version": PROTOCOL_VERSION, "role": role})
        assert self.read()["kind"] == "welcome"

    def _exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def read(self) -> dict[str, Any] | None:
        """The next frame, or ``None`` once the daemon closed the connection."""
        header = self._exactly(HEADER.size)
        if header is None:
            return None
        body = self._exactly(HEADER.unpack(header)[0])
        assert body is not None
        return msgpack.unpackb(body, raw=False)

    def close(self) -> None:
        self.sock.close()


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def pack(msg: Any) -> bytes:
    return frame(msgpack.packb(msg, use_bin_type=True))


# -- helpers --------------------------------------------------------------------------------


def start_keeper(daemon: Daemon, workers) -> None:
    workers(FLOWS)
    daemon.call(lambda c: c.start_workflow("GdBad", "keeper", {"mode": "wait"}))
    wait_until(lambda: describe(daemon, "keeper").status.value == "waiting", message="keeper")
    assert describe(daemon, "keeper").store == {"started": True}


def assert_keeper_intact(daemon: Daemon, amount: int) -> None:
    """The run from before is as it was, and the daemon still serves it end to end."""
    info = describe(daemon, "keeper")
    assert info.status.value == "waiting" and info.store["started"] is True
    daemon.call(lambda c: c.get_workflow_handle("keeper").send("approve", {"amount": amount}))
    wait_until(
        lambda: describe(daemon, "keeper").store.get("amount") == amount,
        message=f"keeper took amount={amount}",
    )
    assert daemon.integrity_ok()


def describe(daemon: Daemon, workflow_id: str):
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).describe())


def failure(daemon: Daemon, workflow_id: str) -> dict[str, Any]:
    with pytest.raises(WorkflowFailedError) as caught:
        daemon.call(lambda c: c.get_workflow_handle(workflow_id).result(timeout=10))
    return caught.value.details


# -- malformed frames -----------------------------------------------------------------------

HELLO = {"kind": "hello", "protocol_version": PROTOCOL_VERSION, "role": "client"}

# (what the peer sends, whether it says hello first, words the error frame must contain)
BAD_FRAMES = {
    "garbage bytes": (frame(b"\xc1\xc1\xc1\xc1"), False, "not valid msgpack"),
    "no hello first": (pack({"kind": "status", "req_id": 1}), False, "must be a hello"),
    "wrong protocol version": (pack({**HELLO, "protocol_version": 999}), False, "version 999"),
    "unknown role": (pack({**HELLO, "role": "admin"}), False, "unknown role"),
    "garbage after hello": (frame(b"\x93\x01"), True, "not valid msgpack"),
    "non-map msgpack": (pack([1, 2, 3]), True, "not a map"),
    "map without kind": (pack({"req_id": 1}), True, "not a map with a 'kind'"),
    "unknown kind": (pack({"kind": "launch_missiles", "req_id": 1}), True, "unknown message"),
    "wrong field types": (
        pack({"kind": "start_workflow", "req_id": 1, "workflow_type": 7, "workflow_id": "x"}),
        True,
        "wrong type",
    ),
    "bool for an int": (pack({"kind": "list", "req_id": True}), True, "wrong type"),
    "missing fields": (pack({"kind": "start_workflow", "req_id": 1}), True, "bad fields"),
    "unexpected fields": (
        pack({"kind": "status", "req_id": 1, "color": "red"}),
        True,
        "bad fields",
    ),
    "a reply sent to the daemon": (
        pack(
            {"kind": "welcome", "protocol_version": 1, "daemon_version": "x", "connection_id": "y"}
        ),
        True,
        "unexpected",
    ),  # noqa: E501
    "header over MAX_FRAME_BYTES": (HEADER.pack(MAX_FRAME_BYTES + 1), True, "over the"),
}


def test_each_malformed_frame_gets_an_error_frame_and_only_that_connection_closes(daemon, workers):
    start_keeper(daemon, workers)
    bystander = RawPeer(daemon)
    bystander.hello()
    for n, (case, (data, say_hello, words)) in enumerate(BAD_FRAMES.items(), start=1):
        peer = RawPeer(daemon)
        if say_hello:
            peer.hello()
        peer.send(data)
        error = peer.read()
        assert error is not None and error["kind"] == "error", (case, error)
        assert error["code"] == "protocol_error" and words in error["message"], (case, error)
        assert "closing the connection" in error["message"], case
        assert peer.read() is None, f"{case}: the daemon closes the offending connection"
        peer.close()

        bystander.send_msg({"kind": "status", "req_id": n})
        reply = bystander.read()
        assert reply["kind"] == "reply" and reply["req_id"] == n, f"{case}: others carry on"
        assert_keeper_intact(daemon, n)
    bystander.close()


def test_a_client_that_disconnects_mid_frame_harms_nobody(daemon, workers):
    start_keeper(daemon, workers)
    partials = {"mid-header": b"\x00\x00", "mid-body": HEADER.pack(100) + b"0123456789"}
    for n, (case, partial) in enumerate(partials.items(), start=1):
        for say_hello in (False, True):
            peer = RawPeer(daemon)
            if say_hello:
                peer.hello()
            peer.send(partial)
            peer.close()
        assert daemon.status()["pid"] == daemon.pid, case
        assert_keeper_intact(daemon, n)


def test_a_garbage_user_value_inside_a_valid_frame_is_refused_as_invalid_input(daemon, workers):
    start_keeper(daemon, workers)
    peer = RawPeer(daemon)
    peer.hello()
    garbage = msgpack.ExtType(VALUE_EXT, b"\xc1")
    peer.send_msg(
        {
            "kind": "start_workflow",
            "req_id": 1,
            "workflow_type": "GdBad",
            "workflow_id": "garbage",
            "workflow_input": garbage,
        }
    )
    reply = peer.read()
    assert reply["kind"] == "error" and reply["code"] == "invalid_input", reply
    peer.send_msg(
        {
            "kind": "send",
            "req_id": 2,
            "workflow_id": "keeper",
            "event_name": "approve",
            "payload": garbage,
        }
    )
    reply = peer.read()
    assert reply["kind"] == "error" and reply["code"] == "invalid_input", reply
    peer.send_msg({"kind": "status", "req_id": 3})
    assert peer.read()["req_id"] == 3, "a refused request keeps the connection"
    peer.close()
    with pytest.raises(WorkflowNotFoundError):
        describe(daemon, "garbage")
    assert_keeper_intact(daemon, 3)


def test_a_worker_registering_malformed_definitions_is_refused(daemon, workers):
    start_keeper(daemon, workers)
    peer = RawPeer(daemon)
    peer.hello(role="worker")
    peer.send_msg({"kind": "register_worker", "req_id": 1, "workflows": [{"workflow_type": "X"}]})
    reply = peer.read()
    assert reply["kind"] == "error" and reply["code"] == "invalid_input", reply
    assert "malformed workflow definitions" in reply["message"]
    peer.close()
    assert [w["workflow_types"] for w in daemon.status()["workers"]] == [["GdBad"]]
    assert_keeper_intact(daemon, 4)


# -- oversized values -----------------------------------------------------------------------


def test_an_oversized_client_request_fails_in_the_client_naming_the_limit(daemon, workers):
    start_keeper(daemon, workers)
    huge = {"mode": "x" * (MAX_FRAME_BYTES + 1)}
    with pytest.raises(ProtocolError, match="frame limit"):
        daemon.call(lambda c: c.start_workflow("GdBad", "huge", huge))
    with pytest.raises(WorkflowNotFoundError):
        describe(daemon, "huge")
    assert_keeper_intact(daemon, 5)


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        ("oversized_store", "store value for key 'blob'"),
        ("oversized_result", "the workflow result"),
        ("oversized_total", "step 'bad_start'"),
    ],
)
def test_an_oversized_store_value_or_result_fails_the_run_committing_nothing(
    daemon, workers, mode, names
):
    start_keeper(daemon, workers)
    daemon.call(lambda c: c.start_workflow("GdBad", mode, {"mode": mode}))
    error = failure(daemon, mode)
    assert error["type"] == "StepFailed" and error["details"]["cause"] == "StoreValueError"
    assert names in error["message"], error["message"]
    assert f"{MAX_FRAME_BYTES}-byte frame limit" in error["message"], error["message"]
    assert describe(daemon, mode).store == {}
    assert_keeper_intact(daemon, 6)


def test_a_store_that_outgrows_a_dispatch_fails_the_run_keeping_what_was_committed(daemon, workers):
    start_keeper(daemon, workers)
    daemon.call(lambda c: c.start_workflow("GdBad", "growing", {"mode": "growing_store"}))
    error = failure(daemon, "growing")
    assert error["type"] == "StepFailed" and error["details"]["cause"] == "StoreValueError"
    assert "would grow the store of workflow 'growing'" in error["message"], error["message"]
    store = describe(daemon, "growing").store
    assert store["parts"] == 3 and sorted(store) == ["part0", "part1", "part2", "parts", "started"]
    assert_keeper_intact(daemon, 6)


def test_a_payload_too_big_to_travel_with_the_store_is_refused_at_send(daemon, workers):
    start_keeper(daemon, workers)
    huge = {"amount": "x" * (MAX_FRAME_BYTES - 512 * 1024)}
    with pytest.raises(InvalidInputError, match="over the .*-byte limit of one dispatch"):
        daemon.call(lambda c: c.get_workflow_handle("keeper").send("approve", huge))
    assert daemon.call(lambda c: c.get_workflow_handle("keeper").inbox()) == []
    assert_keeper_intact(daemon, 6)


# -- refusals at start and send -------------------------------------------------------------


def test_an_unknown_workflow_type_is_refused_naming_the_fix(daemon, workers):
    start_keeper(daemon, workers)
    with pytest.raises(WorkflowTypeNotRegisteredError) as caught:
        daemon.call(lambda c: c.start_workflow("NoSuchType", "nope", None))
    assert "'NoSuchType'" in str(caught.value) and "GdBad" in str(caught.value)
    assert "grctl worker" in str(caught.value)
    assert daemon.call(lambda c: c.list_workflows(workflow_type="NoSuchType")) == []
    assert_keeper_intact(daemon, 7)


def test_input_that_does_not_match_the_start_handler_is_refused_and_creates_no_run(daemon, workers):
    start_keeper(daemon, workers)
    for workflow_input in (None, {"wrong": "x"}, {"mode": "wait", "extra": 1}):
        with pytest.raises(InvalidInputError) as caught:
            daemon.call(lambda c, i=workflow_input: c.start_workflow("GdBad", "misfit", i))
        message = str(caught.value)
        assert "'GdBad'" in message and "'bad_start'" in message, message
        assert "takes: mode" in message, "the message names what the handler takes"
    with pytest.raises(WorkflowNotFoundError):
        describe(daemon, "misfit")
    assert [r.workflow_id for r in daemon.call(lambda c: c.list_workflows())] == ["keeper"]
    assert_keeper_intact(daemon, 8)


def test_event_payloads_that_do_not_match_the_handler_are_refused(daemon, workers):
    start_keeper(daemon, workers)
    keeper = lambda c: c.get_workflow_handle("keeper")  # noqa: E731
    for payload in (None, {"wrong": 1}, {"amount": 1, "extra": 2}):
        with pytest.raises(InvalidInputError, match="'approve'"):
            daemon.call(lambda c, payload=payload: keeper(c).send("approve", payload))
    with pytest.raises(UnknownEventError) as caught:
        daemon.call(lambda c: keeper(c).send("reject", None))
    assert "'reject'" in str(caught.value) and "approve" in str(caught.value)
    assert daemon.call(lambda c: keeper(c).inbox()) == [], "nothing refused reached the inbox"
    assert_keeper_intact(daemon, 9)


def test_events_to_unknown_or_ended_workflows_are_refused(daemon, workers):
    start_keeper(daemon, workers)
    with pytest.raises(WorkflowNotFoundError, match="'ghost'"):
        daemon.call(lambda c: c.get_workflow_handle("ghost").send("approve", {"amount": 1}))
    daemon.call(lambda c: c.start_workflow("GdBad", "ended", {"mode": "finish"}))
    assert daemon.call(lambda c: c.get_workflow_handle("ended").result(timeout=10)) == "finished"
    with pytest.raises(WorkflowNotRunningError, match="grctl start GdBad --id ended"):
        daemon.call(lambda c: c.get_workflow_handle("ended").send("approve", {"amount": 1}))
    assert_keeper_intact(daemon, 10)


# -- bad values and directives inside a step ------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "names"),
    [("unserialisable", "'when'"), ("bad_result", "workflow result")],
)
def test_a_value_msgpack_cannot_serialise_fails_the_run_naming_it(daemon, workers, mode, names):
    start_keeper(daemon, workers)
    daemon.call(lambda c: c.start_workflow("GdBad", mode, {"mode": mode}))
    error = failure(daemon, mode)
    assert error["type"] == "StepFailed" and error["details"]["cause"] == "StoreValueError"
    assert names in error["message"] and "msgpack" in error["message"]
    info = describe(daemon, mode)
    assert info.store == {}, "nothing the step put is committed"
    history = daemon.call(lambda c: c.get_workflow_handle(mode).history())
    assert [ev.kind for ev in history].count("step_failed") == 1, "not retried"
    assert_keeper_intact(daemon, 11)


def test_a_forgotten_await_on_ctx_now_fails_the_run_saying_so(daemon, workers):
    start_keeper(daemon, workers)
    daemon.call(lambda c: c.start_workflow("GdBad", "forgot", {"mode": "forgot_await"}))
    error = failure(daemon, "forgot")
    assert error["details"]["cause"] == "StoreValueError", error
    message = error["message"]
    assert "'stamp'" in message and "did you forget await?" in message, message
    assert "ctx.now()" in message and "msgpack" not in message, message


@pytest.mark.parametrize("mode", ["unregistered_step", "unregistered_timeout_step"])
def test_a_transition_to_an_unregistered_step_fails_the_run_naming_workflow_and_handler(
    daemon, workers, mode
):
    start_keeper(daemon, workers)
    daemon.call(lambda c: c.start_workflow("GdBad", "lost", {"mode": mode}))
    error = failure(daemon, "lost")
    assert error["type"] == "StepFailed"
    assert error["details"]["cause"] == "WorkflowDefinitionError"
    for name in ("'GdBad'", "'bad_start'", "'not_a_step'", "bad_finish"):
        assert name in error["message"], error["message"]
    assert describe(daemon, "lost").store == {}
    assert_keeper_intact(daemon, 12)


# -- the command line -----------------------------------------------------------------------


def grctl_all(daemon: Daemon, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``grctl`` commands at once (each pays the CLI's start-up time)."""
    procs = [
        subprocess.Popen(
            [GRCTL, *args, "--home", str(daemon.home)],
            cwd=TESTS,
            env=daemon.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    done = []
    for proc, args in zip(procs, commands, strict=True):
        out, err = proc.communicate(timeout=30)
        done.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return done


def test_bad_json_on_the_command_line_is_a_usage_error_saying_where(daemon, workers):
    start_keeper(daemon, workers)
    results = grctl_all(
        daemon,
        ["start", "GdBad", "--id", "json-1", "--input", '{"mode": '],
        ["start", "GdBad", "--id", "json-1", "--input", '{"mode": "wait",}'],
        ["send", "keeper", "approve", "--payload", "{amount: 1}"],
    )
    for proc, column in zip(results, (10, 17, 2), strict=True):
        assert proc.returncode == 2, proc
        said = " ".join(proc.stderr.replace("│", " ").split())  # unwrap rich's error panel
        assert "not valid JSON" in said and f"at line 1 column {column}" in said, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
    with pytest.raises(WorkflowNotFoundError):
        describe(daemon, "json-1")
    assert describe(daemon, "keeper").store == {"started": True}, "the bad send sent nothing"
    assert_keeper_intact(daemon, 13)


def test_a_workflow_module_that_fails_to_load_stops_the_worker_with_one_line(daemon):
    modules = {
        "flows.gd_broken": "'flows.gd_broken' raised RuntimeError while importing",
        "flows.gd_nostart": "workflow 'GdNoStart' has no start handler",
        "flows.gd_twostarts": "workflow 'GdTwoStarts' has two start handlers",
        "flows.gd_missing": "'flows.gd_missing' not found",
    }
    results = grctl_all(daemon, *(["worker", module] for module in modules))
    for proc, words in zip(results, modules.values(), strict=True):
        assert proc.returncode == 1, proc
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert "gd_broken.py:7" in results[0].stderr, "says where the import broke"
    assert daemon.status()["workers"] == []
