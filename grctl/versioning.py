"""Deploy safety: would new workflow code replay the operations a live step already recorded?

``grctl check`` asks this of every in-flight step. The new code's operations are read from the
handler's source (``operations``): awaited task calls and ``ctx.now/random/uuid4/sleep/start/
send_to_parent/patched`` and ``handle.result()``, in source order, as a small pattern:

* an ``if``/``match`` makes its branches alternatives, a loop repeats its body any number of
  times, a ``try`` may stop anywhere in its body and go on in a handler;
* ``if await ctx.patched("x"):`` follows its body only where ``x`` was recorded, and its
  ``else`` where another operation was recorded there (what ``ctx.patched`` does at run time);
* an awaited call that is neither a task nor a ``ctx`` operation (a helper of yours) may make
  any operations: it matches anything, so a step using helpers is only checked around them.

``replays(records, pattern)`` says whether some path through the pattern makes the recorded
(kind, name) sequence as a prefix, as a replay must. Task arguments are not compared (they are
values only known at run time), nor are operations made in code that the source does not show
(``asyncio.gather`` of tasks, callbacks): the check finds reordered, inserted and removed
operations, not every divergence a replay could meet.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CTX_OPS = {
    "now": "now",
    "random": "random",
    "uuid4": "uuid4",
    "sleep": "sleep",
    "start": "child_start",
    "send_to_parent": "send_to_parent",
    "patched": "patched",
}


@dataclass(frozen=True)
class Op:
    """One operation the code makes; ``name`` None matches any name (not known statically)."""

    kind: str
    name: str | None = None

    def label(self) -> str:
        if self.kind == "any":
            return "a helper's operations"
        if self.name is None:
            return f"{self.kind}" if self.kind != "task" else "a task"
        return f"{self.kind} {self.name!r}" if self.name else f"ctx.{self.kind}()"


@dataclass
class Node:
    """A piece of the pattern: ``seq``, ``alt``, ``loop``, ``patched``, ``op`` or ``any``."""

    kind: str
    op: Op | None = None
    parts: list[Node] = field(default_factory=list)
    change_id: str = ""


def operations(fn: Callable[..., Any]) -> Node | None:
    """The operations ``fn`` makes, as a pattern; None when its source cannot be read."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    func = tree.body[0]
    if not isinstance(func, ast.AsyncFunctionDef | ast.FunctionDef):
        return None
    ctx_name = func.args.args[0].arg if func.args.args else None
    scope = {**fn.__globals__, **_closure(fn)}
    return _Reader(ctx_name, scope).block(func.body)


def _closure(fn: Callable[..., Any]) -> dict[str, Any]:
    cells = getattr(fn, "__closure__", None) or ()
    names = fn.__code__.co_freevars
    out = {}
    for name, cell in zip(names, cells, strict=False):
        try:
            out[name] = cell.cell_contents
        except ValueError:
            continue
    return out


class _Reader:
    def __init__(self, ctx_name: str | None, scope: dict[str, Any]) -> None:
        self.ctx = ctx_name
        self.scope = scope

    def block(self, body: list[ast.stmt]) -> Node:
        return Node("seq", parts=[self.stmt(s) for s in body])

    def stmt(self, s: ast.stmt) -> Node:
        if isinstance(s, ast.If):
            change = self._patched_test(s.test)
            if change is not None:
                return Node(
                    "patched", parts=[self.block(s.body), self.block(s.orelse)], change_id=change
                )
            return Node(
                "seq",
                parts=[
                    self.expr(s.test),
                    Node("alt", parts=[self.block(s.body), self.block(s.orelse)]),
                ],
            )
        if isinstance(s, ast.For | ast.AsyncFor | ast.While):
            head = self.expr(s.iter if not isinstance(s, ast.While) else s.test)
            return Node(
                "seq", parts=[head, Node("loop", parts=[self.block(s.body)]), self.block(s.orelse)]
            )
        if isinstance(s, ast.Try | ast.TryStar):
            # The body may stop at any point and go on in a handler: each prefix, then one.
            body = self.block(s.body)
            handlers = [self.block(h.body) for h in s.handlers]
            rest = Node("alt", parts=[self.block(s.orelse), *handlers])
            return Node("seq", parts=[Node("prefix", parts=[body]), rest, self.block(s.finalbody)])
        if isinstance(s, ast.With | ast.AsyncWith):
            return Node(
                "seq", parts=[*(self.expr(i.context_expr) for i in s.items), self.block(s.body)]
            )
        if isinstance(s, ast.Match):
            return Node(
                "seq",
                parts=[
                    self.expr(s.subject),
                    Node("alt", parts=[self.block(c.body) for c in s.cases]),
                ],
            )
        if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return Node("seq")
        return Node(
            "seq",
            parts=[
                self.expr(child) for child in ast.iter_child_nodes(s) if isinstance(child, ast.expr)
            ],
        )

    def expr(self, e: ast.expr) -> Node:
        """Operations in an expression, innermost first (arguments are awaited before the call)."""
        if isinstance(e, ast.Await):
            inner = self.expr(e.value.func) if isinstance(e.value, ast.Call) else self.expr(e.value)
            args = [self.expr(a) for a in _call_args(e.value)]
            return Node("seq", parts=[inner, *args, self._awaited(e.value)])
        if isinstance(e, ast.Lambda):
            return Node("seq")
        if isinstance(e, ast.IfExp):
            return Node(
                "seq",
                parts=[
                    self.expr(e.test),
                    Node("alt", parts=[self.expr(e.body), self.expr(e.orelse)]),
                ],
            )
        if isinstance(e, ast.BoolOp):
            first, *rest = (self.expr(v) for v in e.values)
            return Node("seq", parts=[first, *(Node("alt", parts=[r, Node("seq")]) for r in rest)])
        if isinstance(e, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            return Node(
                "loop",
                parts=[
                    Node(
                        "seq",
                        parts=[
                            self.expr(c) for c in ast.iter_child_nodes(e) if isinstance(c, ast.expr)
                        ],
                    )
                ],
            )
        return Node(
            "seq", parts=[self.expr(c) for c in ast.iter_child_nodes(e) if isinstance(c, ast.expr)]
        )

    def _awaited(self, call: ast.expr) -> Node:
        if not isinstance(call, ast.Call):
            return Node("any")
        f = call.func
        if (
            isinstance(f, ast.Attribute)
            and isinstance(f.value, ast.Name)
            and f.value.id == self.ctx
        ):
            kind = CTX_OPS.get(f.attr)
            if kind is None:
                return Node("seq")  # ctx.store.get() and friends are not operations
            if kind == "patched":  # used as a value, not as an if's test
                change = _literal(call)
                if change is None:
                    return Node("alt", parts=[Node("op", op=Op(kind, None)), Node("seq")])
                return Node("patched", parts=[Node("seq"), Node("seq")], change_id=change)
            if kind in ("child_start", "send_to_parent"):
                return Node("op", op=Op(kind, _literal(call)))
            return Node("op", op=Op(kind, ""))
        if isinstance(f, ast.Attribute) and f.attr == "result" and not call.args:
            return Node("op", op=Op("child_result", None))
        target = self._resolve(f)
        name = getattr(target, "__grctl_task__", None)
        if isinstance(name, str):
            return Node("op", op=Op("task", name))
        module = str(getattr(target, "__module__", None) or "").partition(".")[0]
        if module in sys.stdlib_module_names:
            return Node("seq")  # asyncio.sleep and the like make no operations
        if (
            isinstance(f, ast.Attribute)
            and isinstance(f.value, ast.Attribute)
            and f.value.attr == "store"
        ):
            return Node("seq")
        return Node("any")

    def _resolve(self, f: ast.expr) -> Any:
        if isinstance(f, ast.Name):
            return self.scope.get(f.id)
        if isinstance(f, ast.Attribute):
            owner = self._resolve(f.value)
            return getattr(owner, f.attr, None) if owner is not None else None
        return None

    def _patched_test(self, test: ast.expr) -> str | None:
        if not isinstance(test, ast.Await) or not isinstance(test.value, ast.Call):
            return None
        f = test.value.func
        if isinstance(f, ast.Attribute) and f.attr == "patched" and isinstance(f.value, ast.Name):
            if f.value.id == self.ctx:
                return _literal(test.value) or ""
        return None


def _call_args(call: ast.expr) -> list[ast.expr]:
    if not isinstance(call, ast.Call):
        return []
    return [*call.args, *(k.value for k in call.keywords)]


def _literal(call: ast.Call) -> str | None:
    arg = call.args[0] if call.args else None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


@dataclass(frozen=True)
class Replay:
    """What ``replays`` found: ``ok``, or the first recorded operation no path reproduces."""

    ok: bool
    at_op: int = 0
    recorded: Op | None = None
    expected: tuple[Op, ...] = ()

    def why(self) -> str:
        if self.ok:
            return ""
        shown = self.recorded.label() if self.recorded else "nothing"
        if not self.expected:
            new = "returns before it"
        else:
            new = "makes " + " or ".join(sorted({op.label() for op in self.expected}))
        return f"recorded operation #{self.at_op} is {shown}, where the new code {new}"


def replays(records: list[Op], pattern: Node) -> Replay:
    """Whether some path through ``pattern`` makes ``records`` first (the rest is new code).

    The paths are followed side by side, as sets of positions in ``records`` (a position at
    the end stays there: the recorded part is done and the rest is new code), so the work
    grows with the records times the pattern, never with the number of paths.
    """
    n = len(records)
    reached: set[int] = {0}
    offered: dict[int, set[Op]] = {}

    def ends(node: Node, starts: set[int], partial: bool = False) -> set[int]:
        """Where ``node`` can stop from ``starts``; with ``partial``, anywhere inside it too."""
        if not starts:
            return set()
        k = node.kind
        out: set[int]
        if k == "op":
            assert node.op is not None
            out = {n} if n in starts else set()
            for i in starts:
                if i == n:
                    continue
                rec = records[i]
                if rec.kind == node.op.kind and node.op.name in (None, rec.name):
                    out.add(i + 1)
                else:
                    offered.setdefault(i, set()).add(node.op)
            if partial:
                out |= starts
        elif k == "any":
            out = set(range(min(starts), n + 1))
        elif k == "seq":
            acc, cur = set(starts), set(starts)
            for part in node.parts:
                if partial:
                    acc |= ends(part, cur, True)
                cur = ends(part, cur)
            out = acc | cur if partial else cur
        elif k == "alt":
            out = set().union(*(ends(part, starts, partial) for part in node.parts))
        elif k == "loop":
            out, frontier, inside = set(starts), set(starts), set(starts)
            while frontier:  # whole iterations; with ``partial``, every point inside them too
                if partial:
                    inside |= ends(node.parts[0], frontier, True)
                frontier = ends(node.parts[0], frontier) - out
                out |= frontier
            out |= inside
        elif k == "prefix":
            out = ends(node.parts[0], starts, True)
        else:  # patched
            mine = Op("patched", node.change_id)
            yes = {i + 1 for i in starts if i < n and records[i] == mine}
            no = {i for i in starts if i < n and records[i] != mine}
            for i in no:
                offered.setdefault(i, set()).add(mine)
            out = ends(node.parts[0], yes, partial) | ends(node.parts[1], no, partial)
            out |= {n} if n in starts else set()
            if partial:
                out |= starts
        reached.update(out)
        return out

    if n in ends(pattern, {0}):
        return Replay(True)
    at = max(reached)
    return Replay(
        False,
        at_op=at,
        recorded=records[at] if at < n else None,
        expected=tuple(sorted(offered.get(at, ()), key=lambda o: (o.kind, o.name or ""))),
    )


def uses_helpers(pattern: Node) -> bool:
    """Whether the pattern has a call it could not see into (so the check is partial)."""
    return pattern.kind == "any" or any(uses_helpers(p) for p in pattern.parts)


__all__ = ["Node", "Op", "Replay", "operations", "replays", "uses_helpers"]
