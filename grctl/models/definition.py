"""A workflow type as a worker registers it and the daemon keeps it: the one definition type.

The SDK's decorators record handlers (``workflow.StepDef`` holds the function); what crosses
the wire and is stored is this: names, parameters, timeouts and retry policies, no code.
``Workflow.definition()`` builds it, the daemon decides with it, and ``grctl`` commands that
look at definitions (``graph``, ``check``) read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grctl.models.directive import RetryPolicy

DEFAULT_STEP_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class StepSpec:
    """One step of a workflow type: its name, timeout and retry policy."""

    name: str
    timeout_ms: int
    retry_policy: RetryPolicy | None


@dataclass(frozen=True)
class TypeDef:
    """A workflow type: handler names and parameters, step timeouts and retry policies.

    Parameters are ``[name, kind, has_default]`` rows (``grctl.signature.describe_params``), so
    the daemon can check that an input or payload binds to a handler without its code.
    """

    workflow_type: str
    start_name: str
    start_params: list[list[Any]]
    steps: dict[str, StepSpec]
    events: dict[str, list[list[Any]]]
    queries: frozenset[str]
    # At most this many runs of the type execute a step at once (None: no limit).
    max_concurrent_runs: int | None = None

    @classmethod
    def from_definition(cls, data: dict[str, Any]) -> TypeDef:
        return cls(
            workflow_type=data["workflow_type"],
            start_name=data["start"]["name"],
            start_params=data["start"]["params"],
            steps={
                s["name"]: StepSpec(
                    s["name"], int(s["timeout_ms"]), RetryPolicy.from_wire(s.get("retry_policy"))
                )
                for s in data["steps"]
            },
            events={e["name"]: e["params"] for e in data["events"]},
            queries=frozenset(data["queries"]),
            max_concurrent_runs=data.get("max_concurrent_runs"),
        )

    def to_definition(self) -> dict[str, Any]:
        """The wire form (a plain map), the inverse of ``from_definition``."""
        definition: dict[str, Any] = {
            "workflow_type": self.workflow_type,
            "start": {"name": self.start_name, "params": self.start_params},
            "steps": [
                {
                    "name": s.name,
                    "timeout_ms": s.timeout_ms,
                    "retry_policy": s.retry_policy.to_wire() if s.retry_policy else None,
                }
                for s in self.steps.values()
            ],
            "events": [{"name": name, "params": params} for name, params in self.events.items()],
            "queries": sorted(self.queries),
        }
        if self.max_concurrent_runs is not None:  # absent, not null: older daemons read it too
            definition["max_concurrent_runs"] = self.max_concurrent_runs
        return definition

    def timeout_ms(self, handler_kind: str | None, step_name: str | None) -> int:
        if handler_kind == "step" and step_name in self.steps:
            return self.steps[step_name].timeout_ms
        return DEFAULT_STEP_TIMEOUT_MS

    def retry_policy(self, handler_kind: str | None, step_name: str | None) -> RetryPolicy | None:
        if handler_kind == "step" and step_name in self.steps:
            return self.steps[step_name].retry_policy
        return None
