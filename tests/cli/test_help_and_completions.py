"""Every command has help with an example; the completion scripts match the CLI and work."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import typer

from grctl_cli.app import app
from tests.cli.conftest import cli_env, run_grctl
from tests.conftest import GRCTL

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():
    """completions/generate.py is a script, not a package: load it by path."""
    spec = importlib.util.spec_from_file_location(
        "grctl_completions_generate", ROOT / "completions" / "generate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


def _commands(group, path=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_and_option_has_help_and_every_command_an_example():
    commands = dict(_commands(typer.main.get_command(app)))
    assert {" ".join(p) for p in commands} >= {
        "start", "send", "history", "inbox", "list", "describe", "result", "query", "cancel",
        "terminate", "worker", "graph", "check", "daemon start", "daemon stop", "daemon status",
    }  # fmt: skip
    no_daemon = {("graph",)}  # reads a workflow module only
    for path, command in commands.items():
        last_line = command.help.strip().splitlines()[-1]
        assert last_line.startswith(f"Example: grctl {' '.join(path)}"), (path, last_line)
        names = {p.name for p in command.params}
        assert ({"home", "socket"} <= names) == (path not in no_daemon), path
        for param in command.params:
            assert param.help, (path, param.name)
        shows_data = path not in (("worker",), ("daemon", "stop"))
        assert ("json_" in names) == shows_data, path


def test_help_runs_for_a_command(home):
    r = run_grctl("history", "--help", home=home)
    assert r.code == 0 and "Example: grctl history" in r.out and "--follow" in r.out


def test_completion_scripts_are_up_to_date():
    for shell in generate.SHELLS:
        assert generate.path(shell).read_text() == generate.render(shell), (
            f"completions/grctl.{shell} is stale; run: python completions/generate.py"
        )


def test_bash_completion_completes_commands_options_and_ids(served, uid):
    wid = uid("complete-me")
    served.start_direct("CliQuick", wid)
    script = f"""
        source {generate.path("bash")}
        COMP_WORDS=(grctl his); COMP_CWORD=1; _grctl_completion grctl; echo "cmd: ${{COMPREPLY[*]}}"
        COMP_WORDS=(grctl history x --fo); COMP_CWORD=3; _grctl_completion grctl
        echo "opt: ${{COMPREPLY[*]}}"
        COMP_WORDS=(grctl describe {wid[:-4]}); COMP_CWORD=2; _grctl_completion grctl
        echo "id: ${{COMPREPLY[*]}}"
        COMP_WORDS=(grctl start CliQ); COMP_CWORD=2; _grctl_completion grctl
        echo "type: ${{COMPREPLY[*]}}"
    """
    env = cli_env(served.home, {"PATH": f"{Path(GRCTL).parent}{os.pathsep}{os.environ['PATH']}"})
    out = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30
    ).stdout
    assert "cmd: history" in out, out
    assert "opt: --follow" in out, out
    assert f"id: {wid}" in out, out
    assert "type: CliQuick" in out, out


def test_bash_completion_of_event_and_query_names_run_ids_modules_and_active_ids(
    served, uid, tmp_path
):
    active, ended = uid("complete-active"), uid("complete-ended")
    served.start_direct("CliOrder", active, {"order_id": "c"})
    served.start_direct("CliQuick", ended)
    served.wait_status(active, "waiting")
    served.wait_status(ended, "completed")
    run_id = served.grctl("describe", active, "--json").json()["run_id"]
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "flows.py").write_text("")
    prefix = active.split("-")[0]
    script = f"""
        source {generate.path("bash")}
        cd {tmp_path}
        COMP_WORDS=(grctl send {active} ap); COMP_CWORD=3; _grctl_completion grctl
        echo "event: ${{COMPREPLY[*]}}"
        COMP_WORDS=(grctl query {active} st); COMP_CWORD=3; _grctl_completion grctl
        echo "query: ${{COMPREPLY[*]}}"
        COMP_WORDS=(grctl describe {active} --run {run_id[:6]}); COMP_CWORD=4
        _grctl_completion grctl; echo "run: ${{COMPREPLY[*]}}"
        COMP_WORDS=(grctl worker shop.); COMP_CWORD=2; _grctl_completion grctl
        echo "module: ${{COMPREPLY[*]}}"
        COMP_WORDS=(grctl send {prefix}); COMP_CWORD=2; _grctl_completion grctl
        echo "send: ${{COMPREPLY[*]}}"
    """
    env = cli_env(served.home, {"PATH": f"{Path(GRCTL).parent}{os.pathsep}{os.environ['PATH']}"})
    out = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30
    ).stdout
    assert "event: approve" in out, out
    assert "query: status" in out, out
    assert f"run: {run_id}" in out, out
    assert "module: shop.flows" in out, out
    send_line = next(line for line in out.splitlines() if line.startswith("send:"))
    assert active in send_line and ended not in send_line, out


def test_help_and_a_command_import_neither_the_worker_nor_pydantic(home):
    """What keeps ``grctl`` quick to start (docs/performance.md): ``--help`` loads no client,
    worker, protocol, msgpack or asyncio, nor typer's unused markdown/traceback renderers
    (markdown_it, pygments), and no command loads pydantic (typer 0.20+ did)."""
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['grctl', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('grctl_cli', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('grctl.client', 'grctl.worker', 'grctl.protocol', 'msgpack', 'asyncio', "
        "'pydantic', 'rich.markdown', 'markdown_it', 'rich.traceback', 'pygments', "
        "'grctl.models.directive')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    env = cli_env(home)
    run = subprocess.run(
        [sys.executable, "-c", probe, "--help"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0 and run.stderr.strip().splitlines()[-1] == "[]", run.stderr
    listing = subprocess.run(
        [sys.executable, "-c", probe, "list"], env=env, capture_output=True, text=True
    )
    assert "pydantic" not in listing.stderr.strip().splitlines()[-1], listing.stderr


def test_typers_deferred_markdown_and_traceback_are_the_real_classes_on_use():
    """lazy_help's stand-ins in typer.rich_utils import and hand over the real rich classes."""
    probe = (
        "import sys\n"
        "import grctl_cli.app\n"
        "import typer.rich_utils as ru\n"
        "assert 'rich.markdown' not in sys.modules and 'rich.traceback' not in sys.modules\n"
        "md = ru.Markdown('*hi*')\n"
        "import rich.markdown, rich.traceback\n"
        "assert type(md) is rich.markdown.Markdown, type(md)\n"
        "tb = ru.Traceback.from_exception(ValueError, ValueError('x'), None)\n"
        "assert type(tb) is rich.traceback.Traceback, type(tb)\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_the_worker_command_defaults_are_the_worker_defaults():
    # Written out in the CLI so that registering the command does not import the worker.
    from grctl.worker import worker as sdk
    from grctl_cli.commands import worker as cli

    assert cli.DEFAULT_CONCURRENCY == sdk.DEFAULT_CONCURRENCY
    assert cli.DEFAULT_SHUTDOWN_GRACE_S == sdk.DEFAULT_SHUTDOWN_GRACE_S
