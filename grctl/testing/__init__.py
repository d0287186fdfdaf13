"""The test kit (SPEC 8): the real engine in the test's process, with a clock that skips.

``WorkflowEnvironment`` is the environment; ``grctl.testing.pytest_plugin`` (registered as a
pytest plugin by grctl's entry point) provides it as the ``grctl_env`` fixture.
"""

from grctl.testing._environment import WorkflowEnvironment

__all__ = ["WorkflowEnvironment"]
