"""``grctl graph``: the worker's start-up check drawn as text, mermaid, dot and JSON; no daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import run_grctl

ROOT = Path(__file__).resolve().parents[2]
CASES = "flows.graph_cases"


def _edges(listing: dict) -> set[tuple[str, str, str]]:
    return {(e["source"], e["target"], e["kind"]) for e in listing["edges"]}


def test_json_lists_every_node_and_each_transition_kind(home):
    r = run_grctl("graph", CASES, "--json", home=home)
    assert r.code == 0, r
    by_type = {g["workflow_type"]: g for g in r.json()}
    assert set(by_type) == {"GraphShipping", "GraphChild"}
    shipping = by_type["GraphShipping"]
    assert {(n["id"], n["kind"]) for n in shipping["nodes"]} == {
        ("start:begin", "start"), ("step:pack", "step"), ("step:give_up", "step"),
        ("step:ship", "step"), ("event:labelled", "event"), ("event:picked_up", "event"),
        ("query:where", "query"), ("wait", "wait"), ("complete", "complete"), ("fail", "fail"),
        ("child:GraphChild", "child"), ("dynamic", "dynamic"),
    }  # fmt: skip
    assert _edges(shipping) == {
        ("start:begin", "fail", "fail"),
        ("start:begin", "child:GraphChild", "child"),
        ("start:begin", "step:pack", "step"),
        ("step:pack", "wait", "wait"),
        ("step:pack", "step:give_up", "timeout"),
        ("step:give_up", "fail", "fail"),
        ("step:ship", "complete", "complete"),
        ("event:labelled", "dynamic", "step"),  # ctx.next.step(chosen): known at run time
        ("event:picked_up", "step:ship", "step"),  # by name
        ("wait", "event:labelled", "event"),
        ("wait", "event:picked_up", "event"),
    }
    dynamic = next(e for e in shipping["edges"] if e["target"] == "dynamic")
    assert dynamic["label"] == "from variable chosen" and isinstance(dynamic["line"], int)
    assert _edges(by_type["GraphChild"]) == {("start:print_label", "complete", "complete")}


def test_text_is_a_tree_of_handlers_and_where_each_goes(home):
    r = run_grctl("graph", f"{CASES}:GraphShipping", home=home)
    assert r.code == 0, r
    out = r.out
    assert "GraphChild" not in out.splitlines()[0] and out.startswith("GraphShipping")
    for line in (
        "start begin", "→ starts child GraphChild", "→ step pack", "step pack",
        "→ wait for event", "→ on timeout step give_up", "event picked_up", "→ step ship",
        "→ event labelled", "→ a step chosen at run time (from variable chosen)",
        "queries: where",
    ):  # fmt: skip
        assert line in out, (line, out)
    assert "print_label" not in out  # :TYPE keeps one workflow


def test_mermaid_is_one_flowchart_with_labelled_nodes_and_edges(home):
    r = run_grctl("graph", f"{CASES}:GraphShipping", "--format", "mermaid", home=home)
    assert r.code == 0, r
    lines = [line.strip() for line in r.out.splitlines()]
    assert lines[0] == "flowchart TD" and lines[1] == 'subgraph w0["GraphShipping"]'
    assert lines[-1] == "end"
    ids = {}
    for line in lines:
        for title in ("start begin", "step pack", "step give_up", "wait for event", "complete"):
            if f'"{title}"' in line:
                ids[title] = line.split('"')[0].rstrip("([{>/")
    assert len(ids) == 5, lines
    assert f"{ids['start begin']} --> {ids['step pack']}" in lines
    assert f"{ids['step pack']} --> {ids['wait for event']}" in lines
    assert f'{ids["step pack"]} -.->|"on timeout"| {ids["step give_up"]}' in lines


def test_dot_is_a_graphviz_digraph(home):
    r = run_grctl("graph", CASES, "-f", "dot", home=home)
    assert r.code == 0, r
    out = r.out
    assert out.startswith("digraph grctl {") and out.rstrip().endswith("}")
    assert out.count("subgraph cluster_") == 2
    assert '"0:start:begin" -> "0:step:pack";' in out
    assert '"0:step:pack" -> "0:step:give_up" [label="on timeout", style="dashed"];' in out
    assert '"0:wait" -> "0:event:picked_up";' in out
    assert '"1:start:print_label" -> "1:complete";' in out
    assert '"0:query:where" [label="query where", shape=note, style="dashed"];' in out


def test_the_example_workflow(home):
    r = run_grctl("graph", "examples.orders", "--json", home=home, cwd=ROOT)
    assert r.code == 0, r
    [order] = r.json()
    assert order["workflow_type"] == "ProcessOrder"
    assert _edges(order) == {
        ("start:start", "wait", "wait"),
        ("wait", "event:approve", "event"),
        ("wait", "event:reject", "event"),
        ("event:approve", "step:fulfill", "step"),
        ("event:reject", "complete", "complete"),
        ("step:fulfill", "complete", "complete"),
    }


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("flows.graph_cases:Nope", "defines no workflow type 'Nope'; it defines GraphChild, "
         "GraphShipping"),
        ("flows.gd_broken", "workflow module 'flows.gd_broken' raised RuntimeError while "
         "importing"),
        ("flows.no_such_module", "workflow module 'flows.no_such_module' not found"),
        ("flows.bi_badstep", "transitions to 'helper', which is not a registered step"),
    ],
)  # fmt: skip
def test_errors_are_the_loaders_and_the_checks_with_exit_1(home, target, message):
    r = run_grctl("graph", target, home=home)
    assert r.code == 1, r
    assert message in r.err and "Traceback" not in r.err and r.out == "", r


def test_a_bad_format_is_a_usage_error(home):
    r = run_grctl("graph", CASES, "--format", "png", home=home)
    assert r.code == 2 and "png" in r.err, r
