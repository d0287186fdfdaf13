"""The worker side of the SDK: Context, @task and the Worker loop."""

from grctl.worker.context import Context
from grctl.worker.progress import emit
from grctl.worker.task import task
from grctl.worker.worker import Worker

__all__ = ["Context", "Worker", "emit", "task"]
