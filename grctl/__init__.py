"""grctl (Ground Control): durable workflows for Python.

The contents page — what users import::

    from grctl import Workflow, Context, task, Directive, ErrorDetails, RetryPolicy, Client, Worker

The documented module paths work too: ``grctl.workflow.Workflow``,
``grctl.worker.context.Context``, ``grctl.worker.task.task``, ``grctl.models.Directive``,
``grctl.models.directive.RetryPolicy``, ``grctl.client.Client``.
"""

from grctl.client import Client, WorkflowHandle
from grctl.errors import (
    DaemonUnavailableError,
    GrctlError,
    NonDeterminismError,
    UnknownEventError,
    WorkflowAlreadyRunningError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
    WorkflowTypeNotRegisteredError,
)
from grctl.models import Directive, ErrorDetails, RetryPolicy, RunInfo, RunStatus
from grctl.worker import Context, Worker, task
from grctl.workflow import Workflow

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Context",
    "DaemonUnavailableError",
    "Directive",
    "ErrorDetails",
    "GrctlError",
    "NonDeterminismError",
    "RetryPolicy",
    "RunInfo",
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
