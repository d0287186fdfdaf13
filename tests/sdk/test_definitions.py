"""Workflow definition checks, RetryPolicy arithmetic and serialisation errors — no daemon.

Each bad definition is a small module written to a temp directory and loaded the way
``grctl worker`` loads one, so the checks run on real source (the transition check reads it).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from grctl.errors import StoreValueError, WorkflowDefinitionError
from grctl.models.directive import RetryPolicy
from grctl.worker._loader import load_workflows
from grctl.worker.context import NextBuilder, Store
from grctl.workflow import Workflow
from tests.conftest import GRCTL

HEADER = """\
from datetime import timedelta

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

wf = Workflow(workflow_type="Bad")
"""

START = """
        @wf.start()
        async def begin(ctx: Context) -> Directive:
            return ctx.next.complete("done")
        """


def write_module(directory: Path, name: str, body: str) -> str:
    (directory / f"{name}.py").write_text(HEADER + textwrap.dedent(body))
    return name


@pytest.fixture
def load(tmp_path, monkeypatch):
    """Load a module of the given body as ``grctl worker`` would: import, then validate."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def go(name: str, body: str) -> list[Workflow]:
        names.append(write_module(tmp_path, name, body))
        return load_workflows([name])

    yield go
    for name in names:
        sys.modules.pop(name, None)


# (case, module body, what the message must name besides the workflow)
BAD_DEFINITIONS = [
    (
        "no_start_handler",
        """
        @wf.step()
        async def only(ctx: Context) -> Directive:
            return ctx.next.complete(1)
        """,
        ["no start handler"],
    ),
    (
        "two_start_handlers",
        START
        + """
        @wf.start()
        async def begin_again(ctx: Context) -> Directive:
            return ctx.next.complete("again")
        """,
        ["two start handlers", "'begin'", "'begin_again'"],
    ),
    (
        "handler_without_parameters",
        """
        @wf.start()
        async def begin() -> Directive:
            ...
        """,
        ["'begin'", "first parameter must be the context"],
    ),
    (
        "first_parameter_not_the_context",
        """
        @wf.start()
        async def begin(order_id: str) -> Directive:
            ...
        """,
        ["'begin'", "'order_id' is annotated 'str'"],
    ),
    (
        "handler_not_async",
        """
        @wf.start()
        def begin(ctx: Context) -> Directive:
            return ctx.next.complete("done")
        """,
        ["'begin'", "'async def'"],
    ),
    (
        "step_with_required_parameters",
        START
        + """
        @wf.step()
        async def charge(ctx: Context, amount: float) -> Directive:
            return ctx.next.complete(amount)
        """,
        ["'charge'", "requires amount"],
    ),
    (
        "step_to_a_function_that_is_not_a_step",
        """
        async def helper(ctx: Context) -> Directive:
            return ctx.next.complete("never")

        @wf.start()
        async def begin(ctx: Context) -> Directive:
            return ctx.next.step(helper)
        """,
        ["'begin'", "'helper'", "not a registered step"],
    ),
    (
        "step_to_a_name_that_is_not_a_step",
        """
        @wf.start()
        async def begin(ctx: Context) -> Directive:
            return ctx.next.step("nowhere")
        """,
        ["'begin'", "'nowhere'", "not a registered step"],
    ),
    (
        "timeout_step_name_that_is_not_a_step",
        """
        @wf.start()
        async def begin(ctx: Context) -> Directive:
            return ctx.next.wait_for_event(
                timeout=timedelta(seconds=5), timeout_step_name="auto_approve"
            )
        """,
        ["'begin'", "'auto_approve'", "not a registered step"],
    ),
    (
        "two_handlers_for_one_event",
        START
        + """
        @wf.event(name="go")
        async def first(ctx: Context) -> Directive:
            return ctx.next.complete(1)

        @wf.event(name="go")
        async def second(ctx: Context) -> Directive:
            return ctx.next.complete(2)
        """,
        ["two handlers for event 'go'", "'first'", "'second'"],
    ),
    (
        "handler_named_like_the_workflow_variable",
        START
        + """
        @wf.event()
        async def wf(ctx: Context) -> Directive:
            return ctx.next.complete(1)
        """,
        ["event handler 'wf'", "same name as the variable holding the workflow"],
    ),
    (
        "named_event_handler_to_a_name_that_is_not_a_step",
        START
        + """
        @wf.event(name="go")
        async def on_go(ctx: Context) -> Directive:
            return ctx.next.step("nowhere")
        """,
        ["event handler 'on_go'", "'nowhere'", "not a registered step"],
    ),
]


@pytest.mark.parametrize(
    ("body", "names"), [c[1:] for c in BAD_DEFINITIONS], ids=[c[0] for c in BAD_DEFINITIONS]
)
def test_a_bad_definition_is_refused_naming_the_workflow_and_the_handler(load, body, names):
    with pytest.raises(WorkflowDefinitionError) as caught:
        load("bad_definition", body)
    message = str(caught.value)
    assert "'Bad'" in message
    for name in names:
        assert name in message


def test_a_transition_through_a_variable_is_left_to_ctx_next(load):
    (wf,) = load(
        "dynamic_transition",
        START.replace("begin", "unused")
        + """
        @wf.step()
        async def charge(ctx: Context) -> Directive:
            return ctx.next.complete("charged")

        @wf.step()
        async def refund(ctx: Context) -> Directive:
            return ctx.next.complete("refunded")

        async def not_a_step(ctx: Context) -> Directive:
            ...

        @wf.event()
        async def route(ctx: Context, target: str) -> Directive:
            next_fn = charge if target == "charge" else refund
            return ctx.next.step(next_fn)
        """,
    )
    builder = NextBuilder(wf, "route")
    assert builder.step(sys.modules["dynamic_transition"].refund).step_name == "refund"
    assert builder.step("charge").step_name == "charge"
    with pytest.raises(WorkflowDefinitionError, match="'Bad', handler 'route'.*'not_a_step'"):
        builder.step(sys.modules["dynamic_transition"].not_a_step)
    # The check and ``grctl graph`` read one analysis: the variable is a run-time target there.
    [edge] = [e for e in wf.graph().edges if e.source == "event:route"]
    assert (edge.target, edge.kind, edge.known) == ("dynamic", "step", True)
    assert edge.label == "from variable next_fn"


def test_wait_for_event_with_a_timeout_needs_a_timeout_step(load):
    (wf,) = load("waits", START)
    builder = NextBuilder(wf, "begin")
    with pytest.raises(WorkflowDefinitionError, match="'Bad', handler 'begin'.*timeout_step_name"):
        builder.wait_for_event(timeout=timedelta(seconds=5))
    with pytest.raises(WorkflowDefinitionError, match="'Bad', handler 'begin'.*'nowhere'"):
        builder.wait_for_event(timeout=timedelta(seconds=5), timeout_step_name="nowhere")
    assert builder.wait_for_event().timeout is None


# -- grctl worker on a bad module -----------------------------------------------------------------


def grctl_worker(directory: Path, *modules: str) -> list[subprocess.CompletedProcess[str]]:
    """``grctl worker MODULE`` for each module, run side by side; the home holds no daemon."""
    home = directory / "home"
    home.mkdir(exist_ok=True)
    procs = [
        subprocess.Popen(
            [GRCTL, "worker", module, "--home", str(home)],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for module in modules
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.mark.parametrize(
    ("case", "body"),
    [c[:2] for c in BAD_DEFINITIONS if c[0] in ("no_start_handler", "two_start_handlers")]
    + [c[:2] for c in BAD_DEFINITIONS if c[0] == "step_to_a_function_that_is_not_a_step"],
)
def test_grctl_worker_on_a_bad_definition_prints_one_line_and_exits_1(tmp_path, case, body):
    write_module(tmp_path, case, body)

    (proc,) = grctl_worker(tmp_path, case)

    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "'Bad'" in lines[0]
    assert "daemon" not in lines[0]


def test_grctl_worker_tells_a_missing_module_from_one_that_fails_to_import(tmp_path):
    (tmp_path / "raises_on_import.py").write_text('raise RuntimeError("no config file")\n')
    (tmp_path / "imports_a_missing_module.py").write_text("import no_such_dependency\n")
    (tmp_path / "no_workflow.py").write_text("X = 1\n")

    missing, raises, broken, empty = grctl_worker(
        tmp_path, "no_such_module", "raises_on_import", "imports_a_missing_module", "no_workflow"
    )

    assert [p.returncode for p in (missing, raises, broken, empty)] == [1, 1, 1, 1]
    first = [p.stderr.splitlines()[0] for p in (missing, raises, broken, empty)]
    assert "'no_such_module' not found" in first[0]
    assert "Traceback" not in missing.stderr
    assert "'raises_on_import' raised RuntimeError while importing: no config file" in first[1]
    assert "'imports_a_missing_module' failed to import" in first[2]
    assert "no_such_dependency" in first[2] and "not found" not in first[2]
    assert "'no_workflow' defines no Workflow" in first[3]


# -- RetryPolicy ----------------------------------------------------------------------------------


def test_retry_policy_defaults_are_the_documented_ones():
    policy = RetryPolicy()
    assert (
        policy.max_attempts,
        policy.initial_delay_ms,
        policy.backoff_multiplier,
        policy.max_delay_ms,
        policy.jitter,
        policy.retryable_errors,
        policy.non_retryable_errors,
    ) == (1, 100, 2.0, 5000, 0.0, None, None)
    assert not policy.should_retry("ValueError", 1)  # a single attempt


def test_retry_policy_delays_grow_by_the_multiplier_up_to_the_cap():
    policy = RetryPolicy(max_attempts=10, initial_delay_ms=500, max_delay_ms=30_000)
    assert [policy.delay_ms(n) for n in range(1, 9)] == [
        500,
        1000,
        2000,
        4000,
        8000,
        16000,
        30_000,
        30_000,
    ]
    assert [RetryPolicy().delay_ms(n) for n in (1, 2, 3, 6, 7)] == [100, 200, 400, 3200, 5000]
    jittery = RetryPolicy(initial_delay_ms=1000, jitter=0.5)
    delays = [jittery.delay_ms(1, random.Random(seed)) for seed in range(50)]
    assert all(1000 <= d <= 1500 for d in delays) and len(set(delays)) > 1


def test_retry_policy_matches_errors_by_class_name():
    everything = RetryPolicy(max_attempts=3)
    assert everything.should_retry("ValueError", 1) and everything.should_retry("KeyError", 2)
    assert not everything.should_retry("ValueError", 3)  # three attempts made

    only = RetryPolicy(max_attempts=3, retryable_errors=["TimeoutError", "ConnectionError"])
    assert only.should_retry("TimeoutError", 1) and only.should_retry("ConnectionError", 2)
    assert not only.should_retry("ValueError", 1)

    but = RetryPolicy(max_attempts=3, non_retryable_errors=["ValueError", "AuthenticationError"])
    assert not but.should_retry("ValueError", 1) and not but.should_retry("AuthenticationError", 1)
    assert but.should_retry("KeyError", 1)


@pytest.mark.parametrize(
    "bad", [{"max_attempts": 0}, {"jitter": 1.5}, {"initial_delay_ms": -1}, {"max_delay_ms": -5}]
)
def test_retry_policy_refuses_impossible_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        RetryPolicy(**bad)


# -- serialisation --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [datetime(2024, 1, 1), {1, 2}, object()])
def test_store_put_of_a_value_msgpack_cannot_hold_names_the_key(value):
    store = Store({})
    with pytest.raises(StoreValueError, match="'created_at'"):
        store.put("created_at", value)
    assert store.pending_writes == {}


def test_store_get_returns_none_or_raises_key_error_when_typed():
    store = Store({"amount": 50})
    store.put("order_id", "abc")
    assert asyncio.run(store.get("missing")) is None
    with pytest.raises(KeyError, match="missing"):
        asyncio.run(store.get("missing", str))
    assert asyncio.run(store.get("order_id", str)) == "abc"
    amount = asyncio.run(store.get("amount", float))
    assert amount == 50.0 and isinstance(amount, float)


def test_complete_with_a_result_msgpack_cannot_hold_is_refused():
    wf = Workflow(workflow_type="Bad")
    with pytest.raises(StoreValueError, match="result"):
        NextBuilder(wf, "begin").complete({"when": datetime(2024, 1, 1)})
    assert NextBuilder(wf, "begin").complete({"ok": [1, 2.5, None]}).kind == "complete"
