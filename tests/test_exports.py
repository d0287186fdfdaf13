"""The package's contents page: pin what ``grctl`` exports, and the arrows between floors."""

import ast
from pathlib import Path

import grctl

ROOT = Path(__file__).resolve().parent.parent


def test_exported_members():
    assert sorted(grctl.__all__) == sorted(
        [
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
            "RunStatus",
            "RunTimeout",
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
    )
    for name in grctl.__all__:
        assert getattr(grctl, name) is not None, name


def _imports(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


def test_arrows_point_down():
    # The SDK never imports the daemon or the CLI; the daemon never imports the CLI. The test
    # kit (grctl/testing) is the exception that proves it: it runs the daemon in the test's
    # process, importing grctl_daemon.embedded when an environment opens.
    sdk = _imports("grctl") - _imports("grctl/testing")
    assert not any(m.startswith(("grctl_daemon", "grctl_cli")) for m in sdk)
    assert {m for m in _imports("grctl/testing") if m.startswith("grctl_")} == {
        "grctl_daemon.embedded"
    }
    assert not any(m.startswith("grctl_cli") for m in _imports("grctl_daemon"))
    # The engine does no I/O and storage never imports the engine.
    engine = _imports("grctl_daemon/engine")
    assert not engine & {"asyncio", "sqlite3", "aiosqlite", "socket", "os", "time"}
    assert not any(m.startswith("grctl_daemon.engine") for m in _imports("grctl_daemon/storage"))
