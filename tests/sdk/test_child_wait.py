"""``ctx.next.wait_for_child`` checked when it is built, and drawn by ``Workflow.graph()``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from grctl import ChildResult
from grctl.errors import WorkflowDefinitionError, WorkflowFailedError
from grctl.models import ErrorDetails
from grctl.worker.context import NextBuilder, WorkflowHandle
from grctl.workflow import Workflow

wf = Workflow("CwDefs")


@wf.start()
async def cw_begin(ctx):
    handle = await ctx.start("Child", "c-1")
    return ctx.next.wait_for_child(handle, step=cw_after, timeout_step_name="cw_plain")


@wf.step()
async def cw_after(ctx, child: ChildResult):
    return ctx.next.complete(child.result)


@wf.step()
async def cw_plain(ctx):
    return ctx.next.complete(None)


HANDLE = WorkflowHandle(None, "c-1", "RUN-C", "Child")  # type: ignore[arg-type]


def test_the_directive_names_the_child_and_the_target():
    d = NextBuilder(wf, "cw_begin").wait_for_child(
        HANDLE, step=cw_after, timeout=timedelta(seconds=5), timeout_step_name="cw_plain"
    )
    wire = d.to_wire()
    assert wire["kind"] == "wait_for_child" and wire["step_name"] == "cw_after"
    assert (wire["child_workflow_id"], wire["child_run_id"]) == ("c-1", "RUN-C")
    assert wire["timeout_ms"] == 5000 and wire["timeout_step_name"] == "cw_plain"
    assert "child_run_id" not in NextBuilder(wf, "x").complete(1).to_wire()


def test_bad_uses_fail_when_the_directive_is_built():
    nxt = NextBuilder(wf, "cw_begin")
    with pytest.raises(WorkflowDefinitionError, match="handle that ctx.start"):
        nxt.wait_for_child("c-1", step=cw_after)  # type: ignore[arg-type]
    with pytest.raises(WorkflowDefinitionError, match="'cw_plain' must declare a parameter"):
        nxt.wait_for_child(HANDLE, step=cw_plain)
    with pytest.raises(WorkflowDefinitionError, match="needs timeout_step_name"):
        nxt.wait_for_child(HANDLE, step=cw_after, timeout=timedelta(seconds=1))
    with pytest.raises(WorkflowDefinitionError, match="requires a ChildResult"):
        nxt.step(cw_after)


def test_the_graph_draws_the_target_and_the_timeout_step():
    edges = {(e.source, e.target, e.kind) for e in wf.graph().edges}
    assert ("start:cw_begin", "step:cw_after", "step") in edges
    assert ("start:cw_begin", "step:cw_plain", "timeout") in edges
    wf.validate()


def test_child_result_value_returns_or_raises_like_handle_result():
    ok = ChildResult("c-1", "RUN-C", "completed", 7)
    assert ok.ok and ok.value() == 7
    failed = ChildResult("c-1", "RUN-C", "failed", None, ErrorDetails("WorkflowError", "broke"))
    with pytest.raises(WorkflowFailedError, match="child workflow 'c-1' ended failed: broke"):
        failed.value()


def test_an_optional_child_result_parameter_is_reachable_both_ways():
    w = Workflow("CwOptional")

    @w.step()
    async def either(ctx, child: ChildResult | None = None):
        return ctx.next.complete(None)

    nxt = NextBuilder(w, "x")
    assert nxt.step(either).step_name == "either"
    assert nxt.wait_for_child(HANDLE, step=either).step_name == "either"
