"""``grctl graph`` output: a rich tree, a mermaid flowchart, a Graphviz digraph, or JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rich.text import Text
from rich.tree import Tree

from grctl_cli.render import _write, console, print_json

if TYPE_CHECKING:
    from grctl.graph import GraphEdge, GraphNode, WorkflowGraph

# How each edge kind reads in the tree and as an edge label (a plain step edge has none).
EDGE_WORDS = {
    "step": "",
    "timeout": "on timeout",
    "wait": "",
    "event": "",
    "complete": "",
    "fail": "",
    "child": "starts",
}
KIND_STYLE = {
    "start": "bold cyan",
    "step": "cyan",
    "event": "yellow",
    "query": "blue",
    "wait": "yellow",
    "complete": "green",
    "fail": "red",
    "child": "magenta",
    "dynamic": "dim",
}


def _title(node: GraphNode) -> str:
    if node.kind in ("wait", "complete", "fail"):
        return node.name
    if node.kind == "dynamic":
        return "a step chosen at run time"
    return f"{node.kind} {node.name}"


def as_json(graphs: list[WorkflowGraph]) -> None:
    print_json([g.to_dict() for g in graphs])


def tree(graphs: list[WorkflowGraph]) -> None:
    """Per workflow type: each handler with where it can go; events under the wait; queries."""
    for graph in graphs:
        nodes = {n.id: n for n in graph.nodes}
        root = Tree(Text(graph.workflow_type, style="bold"))
        for node in graph.nodes:
            if node.kind not in ("start", "step", "event", "wait"):
                continue
            out = [e for e in graph.edges if e.source == node.id and e.known]
            branch = root.add(Text(_title(node), style=KIND_STYLE[node.kind]))
            if not out:
                branch.add(Text("(no transition found in its source)", style="dim"))
            for edge in out:
                target = nodes[edge.target]
                words = EDGE_WORDS[edge.kind]
                line = Text("→ ")
                if words:
                    line.append(words + " ")
                line.append(_title(target), style=KIND_STYLE[target.kind])
                if edge.label:
                    line.append(f" ({edge.label})", style="dim")
                branch.add(line)
        queries = [n.name for n in graph.nodes if n.kind == "query"]
        if queries:
            root.add(Text("queries: " + ", ".join(queries), style=KIND_STYLE["query"]))
        console.print(root)


def _label(edge: GraphEdge) -> str:
    return edge.label or EDGE_WORDS[edge.kind]


MERMAID_SHAPE = {
    "start": ('(["', '"])'),
    "step": ('["', '"]'),
    "event": ('>"', '"]'),
    "query": ('[/"', '"/]'),
    "wait": ('{{"', '"}}'),
    "complete": ('(("', '"))'),
    "fail": ('(("', '"))'),
    "child": ('[["', '"]]'),
    "dynamic": ('["', '"]'),
}


def mermaid(graphs: list[WorkflowGraph]) -> None:
    """One ``flowchart TD`` with a subgraph per workflow type (paste into a ```mermaid block)."""
    lines = ["flowchart TD"]
    for w, graph in enumerate(graphs):
        ids = {n.id: f"w{w}n{i}" for i, n in enumerate(graph.nodes)}
        lines.append(f'  subgraph w{w}["{_mermaid_text(graph.workflow_type)}"]')
        for node in graph.nodes:
            left, right = MERMAID_SHAPE[node.kind]
            lines.append(f"    {ids[node.id]}{left}{_mermaid_text(_title(node))}{right}")
        for edge in graph.edges:
            if not edge.known:
                continue
            label = _label(edge)
            arrow = "-.->" if edge.kind in ("timeout", "child") else "-->"
            shown = f'|"{_mermaid_text(label)}"|' if label else ""
            lines.append(f"    {ids[edge.source]} {arrow}{shown} {ids[edge.target]}")
        lines.append("  end")
    _write("\n".join(lines))


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


DOT_SHAPE = {
    "start": "circle",
    "step": "box",
    "event": "cds",
    "query": "note",
    "wait": "hexagon",
    "complete": "doublecircle",
    "fail": "doublecircle",
    "child": "box3d",
    "dynamic": "box",
}


def dot(graphs: list[WorkflowGraph]) -> None:
    """One ``digraph`` with a cluster per workflow type (``grctl graph M -f dot | dot -Tsvg``)."""
    lines = ["digraph grctl {", "  rankdir=TB;", '  node [fontname="Helvetica"];']
    for w, graph in enumerate(graphs):
        lines.append(f"  subgraph cluster_{w} {{")
        lines.append(f"    label={_dot_text(graph.workflow_type)};")
        for node in graph.nodes:
            style = ', style="dashed"' if node.kind in ("query", "dynamic") else ""
            lines.append(
                f"    {_dot_text(f'{w}:{node.id}')} [label={_dot_text(_title(node))}, "
                f"shape={DOT_SHAPE[node.kind]}{style}];"
            )
        for edge in graph.edges:
            if not edge.known:
                continue
            attrs = []
            if label := _label(edge):
                attrs.append(f"label={_dot_text(label)}")
            if edge.kind in ("timeout", "child"):
                attrs.append('style="dashed"')
            shown = f" [{', '.join(attrs)}]" if attrs else ""
            lines.append(
                f"    {_dot_text(f'{w}:{edge.source}')} -> {_dot_text(f'{w}:{edge.target}')}{shown};"
            )
        lines.append("  }")
    lines.append("}")
    _write("\n".join(lines))


def _dot_text(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # DOT escapes quotes and backslashes alike
