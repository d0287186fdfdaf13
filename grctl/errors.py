"""Every public grctl error, with a stable wire ``code`` so nobody parses messages.

The tree::

    GrctlError
    ├── DaemonUnavailableError          no daemon answers on the socket (or the TCP address)
    ├── UnauthorizedError               the daemon refused a TCP connection's token
    ├── ProtocolError                   a malformed or oversized frame (the peer's fault)
    ├── WorkflowDefinitionError         a workflow definition is invalid (found at import/worker start)
    ├── NonDeterminismError             replay diverged from the recorded history
    ├── StoreValueError                 a store value or result is not msgpack-serialisable
    ├── ResourceError                   a Resource's factory raised (the step fails; retries apply)
    ├── InvalidProgressError            ``ctx.emit`` got a bad name or data

    ├── TestEnvironmentError            ``grctl.testing`` misused (two environments at once…)
    └── RequestError                    the daemon refused a request
        ├── WorkflowAlreadyRunningError
        ├── WorkflowNotFoundError
        ├── WorkflowTypeNotRegisteredError
        ├── UnknownEventError
        ├── UnknownQueryError
        ├── WorkflowNotRunningError
        ├── InvalidInputError
        ├── QueryFailedError
        ├── NoWorkerError
        ├── ScheduleNotFoundError
        ├── ScheduleExistsError
        ├── StorageUnavailableError     the daemon cannot write its database (a full disk)
        ├── StaleDispatchError          a late result from a fenced-off dispatch
        ├── WorkflowFailedError         ``handle.result()`` of a failed run
        └── WorkflowCancelledError      ``handle.result()`` of a cancelled or terminated run
"""

from __future__ import annotations

from typing import Any


class GrctlError(Exception):
    """Base of every grctl error; carries the ids it concerns and a stable ``code``."""

    code = "grctl_error"

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str | None = None,
        run_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


class DaemonUnavailableError(GrctlError):
    """No daemon answers on the socket."""

    code = "daemon_unavailable"


class UnauthorizedError(GrctlError):
    """The daemon refused a TCP connection: no token, or not the daemon's token.

    A Unix socket connection needs none (the socket is its owner's only); over TCP the token
    comes from ``GRCTL_TOKEN`` or ``--token-file`` and travels in the hello.
    """

    code = "unauthorized"


class ProtocolError(GrctlError):
    """A frame was malformed, oversized or out of order: the peer's fault."""

    code = "protocol_error"


class WorkflowDefinitionError(GrctlError):
    """A workflow definition is invalid; names the workflow and the handler."""

    code = "workflow_definition"


class ModuleLoadError(WorkflowDefinitionError):
    """A workflow module could not be imported or holds no workflow."""

    code = "module_load"


class NonDeterminismError(GrctlError):
    """Replay of a step diverged from what the first execution recorded."""

    code = "non_determinism"


class StoreValueError(GrctlError, TypeError):
    """A value given to the store or as a result cannot be serialised with msgpack."""

    code = "store_value"


class ResourceError(GrctlError):
    """A ``Resource`` factory raised while the worker filled a step's or task's parameters.

    The step fails as if it had raised, so its retry policy applies (match ``ResourceError``);
    a cached resource is made again on the next use after a failure.
    """

    code = "resource_failed"


class InvalidProgressError(GrctlError, ValueError):
    """``ctx.emit(name, data)`` got an empty or long name, or data too large or not serialisable."""

    code = "invalid_progress"


class RequestError(GrctlError):
    """The daemon refused a request."""

    code = "request_refused"


class WorkflowAlreadyRunningError(RequestError):
    """A run with this workflow_id is already active."""

    code = "workflow_already_running"


class WorkflowNotFoundError(RequestError):
    """No run exists for this workflow_id (or run_id)."""

    code = "workflow_not_found"


class WorkflowTypeNotRegisteredError(RequestError):
    """No worker has ever registered this workflow type."""

    code = "workflow_type_not_registered"


class UnknownEventError(RequestError):
    """The workflow type declares no handler for this event name."""

    code = "unknown_event"


class UnknownQueryError(RequestError):
    """The workflow type declares no handler for this query name."""

    code = "unknown_query"


class WorkflowNotRunningError(RequestError):
    """The run has already ended."""

    code = "workflow_not_running"


class InvalidInputError(RequestError):
    """Input or payload does not match the handler's signature, or is malformed."""

    code = "invalid_input"


class QueryFailedError(RequestError):
    """The query handler raised, or no worker answered in time."""

    code = "query_failed"


class NoWorkerError(RequestError):
    """No connected worker serves this workflow type."""

    code = "no_worker"


class StorageUnavailableError(RequestError):
    """The daemon cannot write its database (its disk is full), so it takes no new work.

    Nothing committed is lost and runs in flight resume by themselves once space returns;
    retry the request then. ``details`` holds ``database``, ``error`` and ``since_ms``.
    """

    code = "storage_unavailable"


class ScheduleNotFoundError(RequestError):
    """No schedule of that name exists."""

    code = "schedule_not_found"


class ScheduleExistsError(RequestError):
    """A schedule of that name exists already (delete it first to replace it)."""

    code = "schedule_exists"


class NotOwnerError(RequestError):
    """The run's partition belongs to another daemon of the cluster (the request goes there)."""

    code = "not_owner"

    @property
    def partition(self) -> int:
        return int(self.details.get("partition", -1))


class ReplyTooLargeError(RequestError):
    """The answer would not fit in one frame (16 MiB); ask for less at a time."""

    code = "reply_too_large"


class TooManyWaitsError(RequestError):
    """This connection already holds the most long waits the daemon keeps for one connection."""

    code = "too_many_waits"


class ResultTimeoutError(RequestError, TimeoutError):
    """``result(timeout=...)`` passed before the run ended (the daemon released the wait)."""

    code = "result_timeout"


class StaleDispatchError(RequestError):
    """A result arrived for a dispatch that was fenced off (the step was given to another worker)."""

    code = "stale_dispatch"


class WorkflowFailedError(RequestError):
    """The run ended ``failed``; ``details`` holds the ErrorDetails as a dict."""

    code = "workflow_failed"


class RunTimeout(WorkflowFailedError):
    """The run failed because it had not ended by its ``run_timeout`` (``details``: its error)."""

    code = "run_timeout"


class WorkflowCancelledError(RequestError):
    """The run ended ``cancelled`` or ``terminated``."""

    code = "workflow_cancelled"


class TestEnvironmentError(GrctlError):
    """``grctl.testing.WorkflowEnvironment`` was misused: the message says how to use it."""

    __test__ = False  # not a test class, whatever pytest thinks of the name
    code = "test_environment"


_BY_CODE: dict[str, type[GrctlError]] = {}


def _collect(cls: type[GrctlError]) -> None:
    _BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _collect(sub)


_collect(GrctlError)


def error_from_wire(
    code: str,
    message: str,
    workflow_id: str | None = None,
    run_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> GrctlError:
    """Build the typed error a daemon reply names by ``code``."""
    cls = _BY_CODE.get(code, RequestError)
    return cls(message, workflow_id=workflow_id, run_id=run_id, details=details)
