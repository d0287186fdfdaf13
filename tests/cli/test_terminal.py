"""On a terminal (a pseudo-terminal): live updates while following and waiting; NO_COLOR; pipes."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
from pathlib import Path

from tests.cli.conftest import CLI_TIMEOUT_S, cli_env
from tests.conftest import GRCTL, TESTS, wait_until

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SGR = re.compile(r"\x1b\[[0-9;]*m")  # colour and style
COLUMNS, ROWS = 120, 40


class Terminal:
    """``grctl ARGS`` on a pseudo-terminal; what it draws is collected as it happens."""

    def __init__(self, *args: str, home: Path, env: dict[str, str] | None = None) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.proc = subprocess.Popen(
            [GRCTL, *args],
            cwd=TESTS,
            env=cli_env(home, {"TERM": "xterm-256color", **(env or {})}),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            # Ctrl-C as a shell gives it: a test runner may have started us with SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        os.close(slave)
        self._master = master
        self._raw = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO once the child side is closed
                return
            if not chunk:
                return
            with self._lock:
                self._raw += chunk

    @property
    def raw(self) -> str:
        with self._lock:
            return self._raw.decode(errors="replace")

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw)

    def wait_for(self, needle: str, timeout: float = 15) -> None:
        try:
            wait_until(lambda: needle in self.text, timeout, message=f"{needle!r} on the terminal")
        except AssertionError as exc:  # say what the terminal did show, and whether it still runs
            shown = self.text[-2000:]
            raise AssertionError(f"{exc}; exit={self.proc.poll()}; terminal:\n{shown}") from None

    def wait(self, timeout: float = CLI_TIMEOUT_S) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        os.close(self._master)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.wait()


def test_history_follow_updates_live_and_ends_with_the_run(served, uid):
    wid = uid("tty-follow")
    served.start_direct("CliOrder", wid, {"order_id": "t"})
    term = Terminal("history", wid, "--follow", home=served.home)
    try:
        term.wait_for("waiting_for_event")
        term.wait_for(f"following {wid}: waiting for an event")  # the live status line
        assert term.proc.poll() is None
        assert "event_received" not in term.text
        assert served.grctl("send", wid, "approve", "--payload", '{"qty": 7}').code == 0
        term.wait_for("workflow_completed")
        assert term.wait() == 0
    finally:
        term.kill()
    text = term.text
    assert text.index("waiting_for_event") < text.index("event_received")
    assert 'approve #1 payload={"qty": 7}' in text and "Traceback" not in text
    assert SGR.search(term.raw)  # coloured on a terminal


def test_ctrl_c_stops_following_quietly(served, uid):
    wid = uid("tty-interrupt")
    served.start_direct("CliOrder", wid, {"order_id": "c"})
    term = Terminal("history", wid, "--follow", home=served.home)
    try:
        term.wait_for("waiting_for_event")
        term.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert term.wait() == 130
    finally:
        term.kill()
    assert "Traceback" not in term.text and "KeyboardInterrupt" not in term.text
    assert served.describe(wid).status.value == "waiting"  # the run goes on


def test_start_wait_shows_where_the_run_is_until_the_result(served, uid):
    wid = uid("tty-wait")
    term = Terminal(
        "start", "CliOrder", "--id", wid, "-i", "order_id=w", "--wait", home=served.home
    )
    try:
        term.wait_for(f"{wid}: waiting for an event")
        assert term.proc.poll() is None
        assert served.grctl("send", wid, "approve").code == 0
        term.wait_for("completed")
        assert term.wait() == 0
    finally:
        term.kill()
    assert '"txn": "txn-w-1"' in term.text and "Traceback" not in term.text


def test_no_color_and_pipes_get_plain_text(served, uid):
    wid = uid("plain")
    served.start_direct("CliQuick", wid, {"n": 1})
    served.result_direct(wid)
    coloured = Terminal("list", "--type", "CliQuick", "--limit", "1", home=served.home)
    plain = Terminal(
        "list", "--type", "CliQuick", "--limit", "1", home=served.home, env={"NO_COLOR": "1"}
    )
    try:
        assert coloured.wait() == 0 and plain.wait() == 0
    finally:
        coloured.kill()
        plain.kill()
    assert wid in coloured.text and wid in plain.text
    assert SGR.search(coloured.raw)
    assert not SGR.search(plain.raw), repr(plain.raw)
    piped = served.grctl("list", "--type", "CliQuick", "--limit", "1")
    assert piped.code == 0 and wid in piped.out and "\x1b" not in piped.output
