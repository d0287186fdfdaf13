"""What a handler returns (Directive) and how failures are retried (RetryPolicy)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

DirectiveKind = Literal["step", "wait_for_event", "wait_for_child", "complete", "fail"]


@dataclass(frozen=True)
class ErrorDetails:
    """A structured failure: the error's class name, its message and, if any, a traceback."""

    type: str
    message: str
    traceback: str | None = None
    details: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "details": self.details,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any] | None) -> ErrorDetails | None:
        if data is None:
            return None
        return cls(
            type=str(data.get("type", "Error")),
            message=str(data.get("message", "")),
            traceback=data.get("traceback"),
            details=data.get("details"),
        )

    @classmethod
    def from_exception(cls, exc: BaseException, traceback: str | None = None) -> ErrorDetails:
        return cls(type=type(exc).__name__, message=str(exc), traceback=traceback)


@dataclass(frozen=True)
class Directive:
    """What the engine does after a handler returns; built with ``ctx.next``.

    A directive is the step's commit point: the store writes buffered during the step, the
    history and this transition are saved together, in one transaction.
    """

    kind: DirectiveKind
    step_name: str | None = None
    result: Any = None
    error: ErrorDetails | None = None
    timeout: timedelta | None = None
    timeout_step_name: str | None = None
    child_workflow_id: str | None = None  # wait_for_child: the child it waits for
    child_run_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "kind": self.kind,
            "step_name": self.step_name,
            "result": self.result,
            "error": self.error.to_wire() if self.error else None,
            "timeout_ms": _ms(self.timeout),
            "timeout_step_name": self.timeout_step_name,
        }
        if self.child_run_id is not None:
            wire["child_workflow_id"] = self.child_workflow_id
            wire["child_run_id"] = self.child_run_id
        return wire


def _ms(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds() * 1000)


DEFAULT_MAX_ATTEMPTS = 1
DEFAULT_INITIAL_DELAY_MS = 100
DEFAULT_BACKOFF_MULTIPLIER = 2.0
DEFAULT_MAX_DELAY_MS = 5000
DEFAULT_JITTER = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """How many times, how often and on which errors a task or a step is retried.

    ``max_attempts`` counts the first attempt too. Errors match by class name (not the module
    path). With neither list set, every error is retried.
    """

    max_attempts: int | None = DEFAULT_MAX_ATTEMPTS
    initial_delay_ms: int | None = DEFAULT_INITIAL_DELAY_MS
    backoff_multiplier: float | None = DEFAULT_BACKOFF_MULTIPLIER
    max_delay_ms: int | None = DEFAULT_MAX_DELAY_MS
    jitter: float | None = DEFAULT_JITTER
    retryable_errors: list[str] | None = field(default=None)
    non_retryable_errors: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.jitter is not None and not 0.0 <= self.jitter <= 1.0:
            raise ValueError("RetryPolicy.jitter must be between 0.0 and 1.0")
        for name in ("initial_delay_ms", "max_delay_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"RetryPolicy.{name} must not be negative")

    @property
    def attempts(self) -> int:
        return self.max_attempts or DEFAULT_MAX_ATTEMPTS

    def is_retryable(self, error_type: str) -> bool:
        """Whether an error of this class name may be retried (ignores the attempt count)."""
        if self.non_retryable_errors and error_type in self.non_retryable_errors:
            return False
        if self.retryable_errors is not None:
            return error_type in self.retryable_errors
        return True

    def should_retry(self, error_type: str, failed_attempts: int) -> bool:
        """Whether another attempt follows after ``failed_attempts`` failures."""
        return failed_attempts < self.attempts and self.is_retryable(error_type)

    def delay_ms(self, failed_attempts: int, rng: random.Random | None = None) -> int:
        """The wait before the attempt that follows ``failed_attempts`` failures."""
        initial = (
            DEFAULT_INITIAL_DELAY_MS if self.initial_delay_ms is None else self.initial_delay_ms
        )
        mult = (
            DEFAULT_BACKOFF_MULTIPLIER
            if self.backoff_multiplier is None
            else self.backoff_multiplier
        )
        cap = DEFAULT_MAX_DELAY_MS if self.max_delay_ms is None else self.max_delay_ms
        delay = min(initial * (mult ** max(failed_attempts - 1, 0)), cap)
        jitter = self.jitter or 0.0
        if jitter:
            delay += delay * jitter * (rng or random).random()
        return int(delay)

    def to_wire(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "initial_delay_ms": self.initial_delay_ms,
            "backoff_multiplier": self.backoff_multiplier,
            "max_delay_ms": self.max_delay_ms,
            "jitter": self.jitter,
            "retryable_errors": self.retryable_errors,
            "non_retryable_errors": self.non_retryable_errors,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any] | None) -> RetryPolicy | None:
        return None if data is None else cls(**data)
