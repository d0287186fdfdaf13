"""grctl (Ground Control): durable workflows for Python.

What users import: ``grctl.workflow.Workflow``, ``grctl.worker.context.Context``,
``grctl.worker.task.task``, ``grctl.models`` (``Directive``, ``ErrorDetails``, ``RetryPolicy``)
and ``grctl.client.Client``.
"""

__version__ = "0.1.0"
