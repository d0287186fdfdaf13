"""Fixtures of the crash tests that run several daemons."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Daemon


@pytest.fixture
def other(daemon: Daemon):
    """A second daemon on its own home and the same database; not yet started."""
    home = Path(tempfile.mkdtemp(prefix="grctl-b-", dir="/tmp"))
    os.chmod(home, 0o700)
    d = Daemon(home)
    d.db_url = daemon.db_url
    d.started = []  # worker processes of its home
    yield d
    for proc in d.started:
        proc.terminate()
        proc.wait(15)
    if d.proc is not None and d.proc.poll() is None:
        assert d.stop() == 0
    text = d.log.read_text() if d.log.exists() else ""
    shutil.rmtree(home, ignore_errors=True)
    assert "Traceback" not in text, text[-3000:]
