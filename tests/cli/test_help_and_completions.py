"""Every command has help with an example; the completion scripts match the CLI and work."""

from __future__ import annotations

import importlib.util
import os
import subprocess
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
        "terminate", "worker", "daemon start", "daemon stop", "daemon status",
    }  # fmt: skip
    for path, command in commands.items():
        last_line = command.help.strip().splitlines()[-1]
        assert last_line.startswith(f"Example: grctl {' '.join(path)}"), (path, last_line)
        names = {p.name for p in command.params}
        assert {"home", "socket"} <= names, path
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
