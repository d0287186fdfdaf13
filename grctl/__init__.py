"""grctl (Ground Control): durable workflows for Python.

The contents page — what users import::

    from grctl import Workflow, Context, task, Directive, ErrorDetails, RetryPolicy, Client, Worker
    from grctl import Resource  # Annotated[Pool, Resource(make_pool)]: filled by the worker

The documented module paths work too: ``grctl.workflow.Workflow``,
``grctl.worker.context.Context``, ``grctl.worker.task.task``, ``grctl.models.Directive``,
``grctl.models.directive.RetryPolicy``, ``grctl.client.Client``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grctl.client import Client, WorkflowHandle
    from grctl.errors import (
        DaemonUnavailableError,
        GrctlError,
        NonDeterminismError,
        RunTimeout,
        UnknownEventError,
        WorkflowAlreadyRunningError,
        WorkflowCancelledError,
        WorkflowFailedError,
        WorkflowNotFoundError,
        WorkflowNotRunningError,
        WorkflowTypeNotRegisteredError,
    )
    from grctl.models import ChildResult, Directive, ErrorDetails, RetryPolicy, RunInfo, RunStatus
    from grctl.resources import Resource
    from grctl.worker import Context, Worker, task
    from grctl.workflow import Workflow

# Each public name and the module it lives in, imported on first use (PEP 562): ``import
# grctl.errors`` (as the CLI does) must not pay for the client, the worker and the protocol.
_LAZY = {
    "Client": "grctl.client",
    "WorkflowHandle": "grctl.client",
    "ChildResult": "grctl.models",
    "Directive": "grctl.models",
    "ErrorDetails": "grctl.models",
    "RetryPolicy": "grctl.models",
    "RunInfo": "grctl.models",
    "RunStatus": "grctl.models",
    "Resource": "grctl.resources",
    "Context": "grctl.worker",
    "Worker": "grctl.worker",
    "task": "grctl.worker",
    "Workflow": "grctl.workflow",
    **dict.fromkeys(
        (
            "DaemonUnavailableError",
            "GrctlError",
            "NonDeterminismError",
            "RunTimeout",
            "UnknownEventError",
            "WorkflowAlreadyRunningError",
            "WorkflowCancelledError",
            "WorkflowFailedError",
            "WorkflowNotFoundError",
            "WorkflowNotRunningError",
            "WorkflowTypeNotRegisteredError",
        ),
        "grctl.errors",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'grctl' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__version__ = "0.1.0"

__all__ = [
    "ChildResult",
    "Client",
    "Context",
    "DaemonUnavailableError",
    "Directive",
    "ErrorDetails",
    "GrctlError",
    "NonDeterminismError",
    "Resource",
    "RetryPolicy",
    "RunInfo",
    "RunTimeout",
    "RunStatus",
    "UnknownEventError",
    "Worker",
    "WorkflowAlreadyRunningError",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowNotRunningError",
    "WorkflowTypeNotRegisteredError",
    "Workflow",
    "task",
]
