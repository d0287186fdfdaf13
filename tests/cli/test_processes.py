"""``grctl daemon start|stop|status`` and ``grctl worker`` (its banner, bad modules, --reload)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.cli.conftest import cli_env, run_grctl
from tests.conftest import GRCTL, wait_until

RELOADABLE = """
from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

flow = Workflow(workflow_type="{workflow_type}")


@flow.start()
async def begin(ctx: Context) -> Directive:
    return ctx.next.complete("{workflow_type}")
"""


def test_daemon_start_status_stop(home):
    started = run_grctl("daemon", "start", "--home", str(home), "--json", home=home)
    assert started.code == 0, started
    pid = started.json()["pid"]
    try:
        status = run_grctl("daemon", "status", "--json", home=home)
        assert status.code == 0, status
        data = status.json()
        assert data["pid"] == pid and data["socket"] == str(home / "grctl.sock")
        assert data["database"] == str(home / "grctl.db") and data["database_bytes"] > 0
        assert data["uptime_s"] >= 0 and data["workers"] == [] and isinstance(data["runs"], dict)
        table = run_grctl("daemon", "status", home=home)
        assert table.code == 0 and "uptime" in table.out and "none connected" in table.out

        second = run_grctl("daemon", "start", home=home)
        assert second.code == 1 and "already running" in second.err
        assert "Traceback" not in second.output

        stopped = run_grctl("daemon", "stop", home=home)
        assert stopped.code == 0 and "stopped" in stopped.err
        gone = run_grctl("daemon", "status", home=home)
        assert gone.code == 1 and "grctl daemon start" in gone.err
        assert run_grctl("daemon", "stop", home=home).code == 0  # nothing to stop is fine
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert "Traceback" not in (home / "daemon.log").read_text()


def test_worker_prints_what_it_serves(served):
    banner = wait_until(
        lambda: "queries" in (text := served.worker_log.read_text()) and "poke" in text and text,
        message="the worker's banner",
    )
    for expected in ("CliOrder", "CliTimed", "begin", "hold, fulfill", "note, approve", "status"):
        assert expected in banner, banner
    workers = served.daemon.status()["workers"]
    assert {"CliOrder", "CliQuick", "CliBroken", "CliTimed"} <= set(workers[0]["workflow_types"])


def test_worker_with_a_missing_module_exits_1_without_a_traceback(served):
    r = served.grctl("worker", "flows.no_such_module")
    assert r.code == 1, r
    assert "not found" in r.err and "Traceback" not in r.output
    r = served.grctl("worker", "flows.no_such_module", "--reload")
    assert r.code == 1 and "not found" in r.err and "Traceback" not in r.output


def test_worker_reload_restarts_on_a_source_change(served, uid, tmp_path):
    before, after = uid("CliReloadA").replace("-", "_"), uid("CliReloadB").replace("-", "_")
    package = tmp_path / "reloadable"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = package / "flows.py"
    source.write_text(RELOADABLE.format(workflow_type=before))
    with open(tmp_path / "worker.log", "ab") as log:
        proc = subprocess.Popen(
            [GRCTL, "worker", "reloadable.flows", "--reload", "--home", str(served.home)],
            cwd=tmp_path,
            env=cli_env(served.home),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_until(lambda: _serves(served, before), 20, message=f"worker serving {before}")
        source.write_text(RELOADABLE.format(workflow_type=after))
        wait_until(
            lambda: _serves(served, after) and not _serves(served, before),
            20,
            message=f"reloaded worker serving {after}",
        )
        assert (
            served.grctl("start", after, "--id", uid("reloaded"), "--wait", "--json").json()[
                "result"
            ]
            == after
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    output = (tmp_path / "worker.log").read_text()
    assert "changed: " in output and "restarting the worker" in output, output
    assert output.count("serves:") == 2, output  # each start prints its banner
    wait_until(lambda: not _serves(served, after), 10, message="the child worker to stop")
    assert code in (0, 130, -signal.SIGTERM), output


def _serves(served, workflow_type: str) -> bool:
    return any(workflow_type in w["workflow_types"] for w in served.daemon.status()["workers"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
