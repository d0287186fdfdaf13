"""Workflow and its decorators: each records a frozen StepDef, EventDef or QueryDef.

Signatures are checked when the decorator runs (at import), so a bad handler fails at once and
names itself. ``Workflow.validate()``, called when a worker starts, checks the whole graph: one
start handler, and every ``ctx.next.step(...)`` / ``timeout_step_name`` naming a registered step.
It reads ``Workflow.graph()``, which ``grctl graph`` draws: one analysis for both.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from grctl.errors import WorkflowDefinitionError
from grctl.graph import WorkflowGraph, build_graph
from grctl.models.child import is_child_result
from grctl.models.definition import StepSpec, TypeDef
from grctl.models.directive import RetryPolicy
from grctl.resources import Resource, resource_params
from grctl.signature import describe_params

DEFAULT_STEP_TIMEOUT = timedelta(seconds=10)

Handler = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=Handler)


@dataclass(frozen=True)
class StepDef:
    """A registered step (the start handler is one too, with ``is_start``)."""

    name: str
    fn: Handler
    timeout: timedelta
    retry_policy: RetryPolicy | None
    is_start: bool = False


@dataclass(frozen=True)
class EventDef:
    """A registered event handler; ``name`` is what ``handle.send(name)`` uses."""

    name: str
    fn: Handler


@dataclass(frozen=True)
class QueryDef:
    """A registered query handler: reads the committed store, changes nothing."""

    name: str
    fn: Handler


class Workflow:
    """A workflow definition: a start handler, steps, event handlers and queries.

    ``workflow_type`` identifies it everywhere: clients start it by that name and workers route
    steps by it.
    """

    def __init__(self, workflow_type: str, max_concurrent_runs: int | None = None) -> None:
        if not isinstance(workflow_type, str) or not workflow_type.strip():
            raise WorkflowDefinitionError("Workflow(workflow_type=...) needs a non-empty string")
        if max_concurrent_runs is not None and (
            isinstance(max_concurrent_runs, bool)
            or not isinstance(max_concurrent_runs, int)
            or max_concurrent_runs < 1
        ):
            raise WorkflowDefinitionError(
                f"workflow {workflow_type!r}: max_concurrent_runs must be a whole number of at "
                f"least 1 (got {max_concurrent_runs!r}); leave it out for no limit"
            )
        self.workflow_type = workflow_type
        self.max_concurrent_runs = max_concurrent_runs
        self.start_def: StepDef | None = None
        self.steps: dict[str, StepDef] = {}
        self.events: dict[str, EventDef] = {}
        self.queries: dict[str, QueryDef] = {}
        self._step_fns: dict[Handler, str] = {}
        # The handlers' Resource parameters (filled by the worker, not from input or payload).
        self.resources: dict[Handler, dict[str, Resource]] = {}
        # Steps that take a child's outcome (ctx.next.wait_for_child): step name -> (parameter,
        # whether it is required).
        self.child_params: dict[str, tuple[str, bool]] = {}

    def __repr__(self) -> str:
        return f"Workflow({self.workflow_type!r})"

    # -- decorators --------------------------------------------------------------------------

    def start(self) -> Callable[[F], F]:
        """Register the start handler (exactly one): ``async def fn(ctx, **input) -> Directive``."""

        def register(fn: F) -> F:
            self._check_handler(fn, "start")
            if self.start_def is not None:
                raise WorkflowDefinitionError(
                    f"workflow {self.workflow_type!r} has two start handlers "
                    f"({self.start_def.fn.__name__!r} and {fn.__name__!r}); keep exactly one"
                )
            self.start_def = StepDef(fn.__name__, fn, DEFAULT_STEP_TIMEOUT, None, is_start=True)
            return fn

        return register

    def step(
        self, timeout: timedelta | None = None, retry_policy: RetryPolicy | None = None
    ) -> Callable[[F], F]:
        """Register a step: ``async def fn(ctx) -> Directive``; default timeout 10 seconds."""
        if timeout is not None and (not isinstance(timeout, timedelta) or timeout <= timedelta(0)):
            raise WorkflowDefinitionError(
                f"workflow {self.workflow_type!r}: step timeout must be a positive timedelta"
            )
        if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
            raise WorkflowDefinitionError(
                f"workflow {self.workflow_type!r}: retry_policy must be a RetryPolicy"
            )

        def register(fn: F) -> F:
            self._check_handler(fn, "step")
            params = list(inspect.signature(fn).parameters.values())[1:]
            filled = self.resources.get(fn, {})
            child = [prm for prm in params if is_child_result(prm.annotation)]
            required = [
                prm.name
                for prm in params
                if prm.default is inspect.Parameter.empty
                and prm.name not in filled
                and prm not in child[:1]
                and prm.kind not in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD)
            ]
            if required:
                raise WorkflowDefinitionError(
                    f"workflow {self.workflow_type!r}, step {fn.__name__!r}: a step takes only "
                    f"the context, but it requires {', '.join(required)}; pass data through "
                    "ctx.store instead"
                )
            name = fn.__name__
            if name in self.steps:
                raise WorkflowDefinitionError(
                    f"workflow {self.workflow_type!r} has two steps named {name!r}"
                )
            self.steps[name] = StepDef(name, fn, timeout or DEFAULT_STEP_TIMEOUT, retry_policy)
            self._step_fns[fn] = name
            if child:
                self.child_params[name] = (
                    child[0].name,
                    child[0].default is inspect.Parameter.empty,
                )
            return fn

        return register

    def event(self, name: str | None = None) -> Callable[[F], F]:
        """Register an event handler: ``async def fn(ctx, [payload]) -> Directive``."""

        def register(fn: F) -> F:
            self._check_handler(fn, "event")
            event_name = name or fn.__name__
            if event_name in self.events:
                raise WorkflowDefinitionError(
                    f"workflow {self.workflow_type!r} has two handlers for event {event_name!r} "
                    f"({self.events[event_name].fn.__name__!r} and {fn.__name__!r}); keep one, "
                    "or give one another @workflow.event(name=...)"
                )
            self.events[event_name] = EventDef(event_name, fn)
            return fn

        return register

    def query(self, name: str | None = None) -> Callable[[F], F]:
        """Register a query handler: ``async def fn(ctx) -> Any``; it must not change state."""

        def register(fn: F) -> F:
            self._check_handler(fn, "query")
            query_name = name or fn.__name__
            if query_name in self.queries:
                raise WorkflowDefinitionError(
                    f"workflow {self.workflow_type!r} has two queries named {query_name!r}"
                )
            self.queries[query_name] = QueryDef(query_name, fn)
            return fn

        return register

    # -- lookups -----------------------------------------------------------------------------

    def step_name_of(self, target: Handler | str) -> str | None:
        """The registered step name for a function or a name, or ``None`` if it is not a step."""
        if isinstance(target, str):
            return target if target in self.steps else None
        name = self._step_fns.get(target)  # type: ignore[arg-type]
        if name is None and getattr(target, "__name__", None) in self.steps:
            if self.steps[target.__name__].fn is target:  # type: ignore[union-attr]
                name = target.__name__  # type: ignore[union-attr]
        return name

    def handler(self, handler_kind: str, name: str) -> Handler | None:
        if handler_kind == "start":
            return self.start_def.fn if self.start_def else None
        if handler_kind == "event":
            event = self.events.get(name)
            return event.fn if event else None
        step = self.steps.get(name)
        return step.fn if step else None

    # -- checks ------------------------------------------------------------------------------

    def _check_handler(self, fn: Any, role: str) -> None:
        label = getattr(fn, "__name__", repr(fn))
        where = f"workflow {self.workflow_type!r}, {role} handler {label!r}"
        if not inspect.iscoroutinefunction(fn):
            raise WorkflowDefinitionError(f"{where} must be an 'async def' function")
        if getattr(fn, "__globals__", {}).get(label) is self:
            # The ``def`` would rebind the module's name for this Workflow to the handler.
            keep = f", keeping the event name with @{label}.event(name={label!r})"
            raise WorkflowDefinitionError(
                f"{where} has the same name as the variable holding the workflow, so its 'def' "
                f"would replace the workflow; rename the variable (e.g. {label}_workflow = "
                f"Workflow(...)) or the handler{keep if role == 'event' else ''}"
            )
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise WorkflowDefinitionError(
                f"{where}: its first parameter must be the context, as in "
                f"'async def {label}(ctx: Context, ...)'"
            )
        annotation = params[0].annotation
        if annotation is not inspect.Parameter.empty:
            ann_name = (
                annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
            )
            if ann_name.rsplit(".", 1)[-1] != "Context":
                raise WorkflowDefinitionError(
                    f"{where}: its first parameter {params[0].name!r} is annotated {ann_name!r}; "
                    "it must be the context (ctx: Context)"
                )
        found = resource_params(fn, where)
        if found:
            if params[0].name in found:
                raise WorkflowDefinitionError(
                    f"{where}: its first parameter is the context, not a Resource"
                )
            self.resources[fn] = found

    def validate(self) -> None:
        """Check the whole definition; raises WorkflowDefinitionError naming the culprit.

        The check reads the same transitions that ``graph()`` draws (one analysis for both).
        """
        if self.start_def is None:
            raise WorkflowDefinitionError(
                f"workflow {self.workflow_type!r} has no start handler; add one with "
                "@<workflow>.start()"
            )
        fn_names = {f"start:{self.start_def.name}": self.start_def.fn.__name__}
        fn_names |= {f"step:{s.name}": s.fn.__name__ for s in self.steps.values()}
        fn_names |= {f"event:{e.name}": e.fn.__name__ for e in self.events.values()}
        for edge in self.graph().edges:
            if not edge.known:
                role, fn_name = edge.source.partition(":")[0], fn_names[edge.source]
                raise WorkflowDefinitionError(
                    f"workflow {self.workflow_type!r}, {role} handler {fn_name!r} "
                    f"(line {edge.line}) transitions to {edge.label!r}, which is not a registered "
                    "step; decorate it with @<workflow>.step() or fix the name "
                    f"(steps: {', '.join(sorted(self.steps)) or 'none'})"
                )

    def graph(self) -> WorkflowGraph:
        """Nodes (start, steps, events, queries, ends) and the transitions each handler names.

        Read from the handlers' source (see ``grctl.graph``): the one analysis behind both
        ``validate()`` and ``grctl graph``.
        """
        return build_graph(self)

    def definition(self) -> dict[str, Any]:
        """What a worker registers with the daemon for this workflow type."""
        return self.spec().to_definition()

    def spec(self) -> TypeDef:
        """This workflow type as the daemon sees it: names, parameters, timeouts, no code."""
        assert self.start_def is not None
        return TypeDef(
            workflow_type=self.workflow_type,
            start_name=self.start_def.name,
            start_params=describe_params(self.start_def.fn, self.resources.get(self.start_def.fn)),
            steps={
                s.name: StepSpec(s.name, int(s.timeout.total_seconds() * 1000), s.retry_policy)
                for s in self.steps.values()
            },
            events={
                e.name: describe_params(e.fn, self.resources.get(e.fn))
                for e in self.events.values()
            },
            queries=frozenset(self.queries),
            max_concurrent_runs=self.max_concurrent_runs,
        )
