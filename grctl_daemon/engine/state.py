"""Run state held in memory for every active run, and the workflow type definitions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grctl.models.directive import RetryPolicy
from grctl_daemon.storage.base import RunRecord

DEFAULT_STEP_TIMEOUT_MS = 10_000


@dataclass
class InboxItem:
    seq: int
    event_name: str
    payload: bytes | None


@dataclass
class RunState(RunRecord):
    """A run as the engine sees it: its row, committed store, pending inbox and step records.

    ``dispatch_id`` (the fencing token) and ``worker`` live only in memory: after a daemon
    restart every in-flight step is dispatched again with a fresh token.
    """

    store: dict[str, bytes] = field(default_factory=dict)
    records: list[bytes] = field(default_factory=list)
    inbox: list[InboxItem] = field(default_factory=list)
    timers: dict[str, tuple[int, str]] = field(default_factory=dict)
    dispatch_id: str | None = None
    worker: str | None = None

    def copy(self) -> RunState:
        # A shallow copy without dataclasses.replace's per-field introspection: this runs for
        # every decision on the step hot path.
        new = object.__new__(RunState)
        new.__dict__.update(self.__dict__)
        return new

    @property
    def is_active(self) -> bool:
        return self.status in ("running", "waiting")


@dataclass(frozen=True)
class StepSpec:
    name: str
    timeout_ms: int
    retry_policy: RetryPolicy | None


@dataclass(frozen=True)
class TypeDef:
    """A workflow type as its worker registered it: handler names, timeouts, parameters."""

    workflow_type: str
    start_name: str
    start_params: list[list[Any]]
    steps: dict[str, StepSpec]
    events: dict[str, list[list[Any]]]
    queries: frozenset[str]

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
        )

    def timeout_ms(self, handler_kind: str | None, step_name: str | None) -> int:
        if handler_kind == "step" and step_name in self.steps:
            return self.steps[step_name].timeout_ms
        return DEFAULT_STEP_TIMEOUT_MS

    def retry_policy(self, handler_kind: str | None, step_name: str | None) -> RetryPolicy | None:
        if handler_kind == "step" and step_name in self.steps:
            return self.steps[step_name].retry_policy
        return None
