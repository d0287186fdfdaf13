"""ChildResult: a child workflow's outcome, as the step ``ctx.next.wait_for_child`` names gets it."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from grctl.errors import GrctlError, error_from_wire
from grctl.models.directive import ErrorDetails


@dataclass(frozen=True)
class ChildResult:
    """How a child run ended: ``status`` (completed, failed, cancelled, terminated), its
    ``result`` or its ``error``.

    The target step of ``ctx.next.wait_for_child(handle, step=...)`` declares a parameter
    annotated ``ChildResult`` and gets it there. ``value()`` returns the result or raises what
    ``await handle.result()`` would have raised, for a step that prefers ``try``/``except``.
    """

    workflow_id: str
    run_id: str
    status: str
    result: Any = None
    error: ErrorDetails | None = None

    @property
    def ok(self) -> bool:
        """True when the child completed."""
        return self.status == "completed"

    def value(self) -> Any:
        """The child's result; WorkflowFailedError (RunTimeout) or WorkflowCancelledError if
        it did not complete."""
        if self.ok:
            return self.result
        raise child_error(
            {
                "workflow_id": self.workflow_id,
                "run_id": self.run_id,
                "status": self.status,
                "error": self.error.to_wire() if self.error else None,
            }
        )

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ChildResult:
        """Built from the outcome map the daemon passes (``workflow_id, run_id, status…``)."""
        return cls(
            workflow_id=data["workflow_id"],
            run_id=data["run_id"],
            status=str(data["status"]),
            result=data.get("result"),
            error=ErrorDetails.from_wire(data.get("error")),
        )


def is_child_result(annotation: Any) -> bool:
    """Whether a parameter is annotated ``ChildResult`` (``| None`` too), by name: annotations
    may be strings."""
    if annotation is inspect.Parameter.empty:
        return False
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", None) or str(annotation)
    return re.search(r"\bChildResult\b", annotation) is not None


def child_error(outcome: dict[str, Any]) -> GrctlError:
    """The error a child's outcome raises in its parent: failed, timed out or cancelled."""
    error = outcome.get("error") or {}
    code = "workflow_failed" if outcome["status"] == "failed" else "workflow_cancelled"
    if error.get("type") == "RunTimeout":
        code = "run_timeout"  # RunTimeout, a WorkflowFailedError: catching either works
    return error_from_wire(
        code,
        f"child workflow {outcome['workflow_id']!r} ended {outcome['status']}: "
        f"{error.get('message', outcome.get('reason') or '')}",
        outcome["workflow_id"],
        outcome["run_id"],
        error,
    )


__all__ = ["ChildResult"]
