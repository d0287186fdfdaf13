"""A workflow's graph, read from its handlers' source: what ``grctl graph`` draws and ``validate()`` checks."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grctl.errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from grctl.workflow import Workflow

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class GraphNode:
    """One node of a workflow's graph; ``id`` is ``kind:name`` (``wait``/``complete``/``fail``)."""

    id: str
    kind: str  # start | step | event | query | wait | complete | fail | child | dynamic
    name: str


@dataclass(frozen=True)
class GraphEdge:
    """A transition a handler names: ``kind`` is step, timeout, wait, event, complete, fail, child."""

    source: str
    target: str
    kind: str
    line: int | None
    label: str = ""
    known: bool = True


@dataclass(frozen=True)
class WorkflowGraph:
    """What ``Workflow.graph()`` returns: the check's view of one workflow type."""

    workflow_type: str
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow_type": self.workflow_type,
            "nodes": [{"id": n.id, "kind": n.kind, "name": n.name} for n in self.nodes],
            "edges": [
                {"source": e.source, "target": e.target, "kind": e.kind, "line": e.line}
                | ({"label": e.label} if e.label else {})
                for e in self.edges
                if e.known
            ],
        }


def build_graph(wf: Workflow) -> WorkflowGraph:
    """Nodes (start, steps, events, queries, ends) and the transitions each handler names.

    Read from the handlers' source: ``ctx.next.step/wait_for_event/complete/fail`` and
    ``ctx.start(...)`` (a child). A target held in a local or closure variable is only known
    when the step returns, so it is drawn as a ``dynamic`` target. An edge with
    ``known=False`` names no registered step: ``validate()`` refuses it.
    """
    if wf.start_def is None:
        raise WorkflowDefinitionError(
            f"workflow {wf.workflow_type!r} has no start handler; add one with @<workflow>.start()"
        )
    nodes: dict[str, GraphNode] = {}
    edges: dict[tuple[str, str, str], GraphEdge] = {}

    def node(node_id: str, kind: str, name: str) -> str:
        nodes.setdefault(node_id, GraphNode(node_id, kind, name))
        return node_id

    def edge(source: str, target: str, kind: str, line: int | None, label: str = "") -> None:
        edges.setdefault((source, target, kind), GraphEdge(source, target, kind, line, label))

    start_id = node(f"start:{wf.start_def.name}", "start", wf.start_def.name)
    handlers: list[tuple[str, Handler]] = [(start_id, wf.start_def.fn)]
    for s in wf.steps.values():
        handlers.append((node(f"step:{s.name}", "step", s.name), s.fn))
    for e in wf.events.values():
        handlers.append((node(f"event:{e.name}", "event", e.name), e.fn))
    for q in wf.queries.values():
        node(f"query:{q.name}", "query", q.name)
    unknown: list[GraphEdge] = []
    waits = bool(wf.events)
    for source, fn in handlers:
        dynamic = set(fn.__code__.co_varnames) | set(fn.__code__.co_freevars)
        for kind, target, line in _transitions(fn):
            if kind in ("complete", "fail"):
                edge(source, node(kind, kind, kind), kind, line)
            elif kind == "wait":
                waits = True
                edge(source, node("wait", "wait", "wait for event"), kind, line)
            elif kind == "child":
                child = target if isinstance(target, str) else "?"
                edge(source, node(f"child:{child}", "child", child), kind, line)
            elif isinstance(target, ast.Name) and target.id in dynamic:
                shown = f"from variable {target.id}"
                edge(source, node("dynamic", "dynamic", "?"), kind, line, shown)
            else:
                name = _resolve(wf, target, fn)
                shown = target.id if isinstance(target, ast.Name) else str(target)
                if name is None:
                    unknown.append(GraphEdge(source, "", kind, line, shown, known=False))
                else:
                    edge(source, f"step:{name}", kind, line)
    if waits:
        wait_id = node("wait", "wait", "wait for event")
        for e in wf.events.values():
            edge(wait_id, f"event:{e.name}", "event", None)
    return WorkflowGraph(wf.workflow_type, tuple(nodes.values()), (*edges.values(), *unknown))


def _resolve(wf: Workflow, target: ast.Name | str | None, fn: Handler) -> str | None:
    """The step a literal target names (a string, or a module-level function), if any."""
    if isinstance(target, str):
        return target if target in wf.steps else None
    if target is None:
        return None
    resolved = fn.__globals__.get(target.id)
    if resolved is None:
        return target.id if target.id in wf.steps else None
    return wf.step_name_of(resolved)


def _transitions(fn: Handler) -> list[tuple[str, ast.Name | str | None, int]]:
    """What a handler names literally, as ``(kind, target, line)``.

    Kinds: ``step`` (``ctx.next.step(x)``, ``wait_for_child(h, step=x)``), ``timeout`` (``wait_for_event(timeout_step_name=)``),
    ``wait``, ``complete``, ``fail`` and ``child`` (``ctx.start(type, ...)``, target the type).
    """
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return []
    first_line = fn.__code__.co_firstlineno
    ctx_name = fn.__code__.co_varnames[0] if fn.__code__.co_argcount else None
    found: list[tuple[str, ast.Name | str | None, int]] = []
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    for node in sorted(calls, key=lambda n: (n.lineno, n.col_offset)):
        if not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        attr = node.func.attr
        line = first_line + node.lineno - 1
        if isinstance(owner, ast.Name) and owner.id == ctx_name and attr == "start":
            kind_arg = node.args[0] if node.args else None
            for kw in node.keywords:
                if kw.arg == "workflow_type":
                    kind_arg = kw.value
            literal = isinstance(kind_arg, ast.Constant) and isinstance(kind_arg.value, str)
            found.append(("child", kind_arg.value if literal else None, line))  # type: ignore[union-attr]
            continue
        if not (isinstance(owner, ast.Attribute) and owner.attr == "next"):
            continue
        if attr == "step" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Name):
                found.append(("step", arg, line))
            elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append(("step", arg.value, line))
        elif attr == "wait_for_child":
            target = node.args[1] if len(node.args) > 1 else None
            for kw in node.keywords:
                if kw.arg == "step":
                    target = kw.value
                elif kw.arg == "timeout_step_name" and isinstance(kw.value, ast.Constant):
                    if isinstance(kw.value.value, str):
                        found.append(("timeout", kw.value.value, line))
            if isinstance(target, ast.Name):
                found.append(("step", target, line))
            elif isinstance(target, ast.Constant) and isinstance(target.value, str):
                found.append(("step", target.value, line))
        elif attr == "wait_for_event":
            found.append(("wait", None, line))
            for kw in node.keywords:
                if kw.arg == "timeout_step_name" and isinstance(kw.value, ast.Constant):
                    if isinstance(kw.value.value, str):
                        found.append(("timeout", kw.value.value, line))
        elif attr in ("complete", "fail"):
            found.append((attr, None, line))
    return found
