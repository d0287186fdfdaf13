"""``grctl daemon start|stop|status`` and ``grctl worker`` (its banner, bad modules, --reload)."""

from __future__ import annotations

import os
import signal
import stat
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
    home.mkdir(parents=True, exist_ok=True)
    (home / "daemon.out").touch(mode=0o644)  # left by an older grctl: made 0600 at start
    started = run_grctl("daemon", "start", "--home", str(home), "--json", home=home)
    assert started.code == 0, started
    pid = started.json()["pid"]
    try:
        assert stat.S_IMODE((home / "daemon.out").stat().st_mode) == 0o600
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
    # A folder in the cwd named like an installed package must not hide it from the reload
    # child, as it does not from a plain worker (the cwd joins sys.path only for the modules).
    (tmp_path / "rich").mkdir()
    (tmp_path / "rich" / "__init__.py").write_text("raise ImportError('the cwd hid rich')\n")
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


WAITER = """
from grctl.models import Directive
from grctl.worker.context import Context
from grctl.workflow import Workflow

flow = Workflow(workflow_type="{workflow_type}")


@flow.start()
async def begin(ctx: Context) -> Directive:
    return ctx.next.wait_for_event()


@flow.event()
async def go(ctx: Context) -> Directive:
    return ctx.next.complete("went")
"""


def test_a_run_no_worker_serves_says_so_and_ctrl_c_on_wait_says_it_goes_on(served, uid, tmp_path):
    workflow_type = uid("CliOrphan").replace("-", "_")
    (tmp_path / "orphan_flows.py").write_text(WAITER.format(workflow_type=workflow_type))
    with open(tmp_path / "worker.log", "ab") as log:
        worker = subprocess.Popen(
            [GRCTL, "worker", "orphan_flows", "--home", str(served.home)],
            cwd=tmp_path,
            env=cli_env(served.home),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    wid = uid("orphan")
    try:
        wait_until(lambda: _serves(served, workflow_type), 20, message="worker serving")
        assert served.grctl("start", workflow_type, "--id", wid).code == 0
        served.wait_status(wid, "waiting")
        assert served.grctl("describe", wid, "--json").json()["served"] is True
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(15)
    wait_until(lambda: not _serves(served, workflow_type), 10, message="the worker gone")

    described = served.grctl("describe", wid, "--json")
    assert described.code == 0 and described.json()["served"] is False, described
    assert f"no worker serves {workflow_type}" in served.grctl("describe", wid).out
    listed = served.grctl("list", "--type", workflow_type, "--json")
    assert listed.code == 0, listed
    [row] = listed.json()
    assert row["served"] is False and "store" not in row and "timers" not in row
    assert "(no worker)" in served.grctl("list", "--type", workflow_type).out

    err_file = tmp_path / "wait.err"
    with open(err_file, "w") as err_out:
        waiting = subprocess.Popen(
            [GRCTL, "result", wid, "--wait"],
            env=cli_env(served.home),
            stdout=subprocess.DEVNULL,
            stderr=err_out,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until(
            lambda: "no worker serves" in err_file.read_text(),
            10,
            message="result --wait saying no worker serves the type",
        )
        waiting.send_signal(signal.SIGINT)
        code = waiting.wait(10)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    err = err_file.read_text()
    assert code == 130, err
    assert "the run goes on" in err and f"grctl result {wid} --wait" in err, err
    assert "Traceback" not in err
    assert served.daemon.status()["runs"]  # the daemon is fine; the run still waits
    assert served.grctl("describe", wid, "--json").json()["status"] == "waiting"
