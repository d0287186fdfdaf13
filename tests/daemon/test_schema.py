"""The schema is versioned: forward migrations upgrade an older database, a newer one is refused."""

import sqlite3
import subprocess
import sys

from grctl_daemon.storage.sqlite import SCHEMA_VERSION
from tests.conftest import Daemon, wait_until


def _columns(db, table: str = "runs") -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _version(db) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]


def test_a_version_1_database_is_migrated_forward_keeping_its_runs(daemon, workers):
    workers("flows.basic")
    daemon.call(lambda c: c.start_workflow("BasicOrder", "old-run", {"order_id": "1"}))

    async def waiting(c):
        return (await c.get_workflow_handle("old-run").describe()).status.value == "waiting"

    wait_until(lambda: daemon.call(waiting), message="run waiting for its event")
    assert daemon.stop() == 0
    # Make the file a version-1 database, as the first release wrote it.
    with sqlite3.connect(daemon.db) as conn:
        conn.execute("DROP INDEX runs_running")
        conn.execute("DROP INDEX runs_by_ended")
        conn.execute("DROP INDEX timers_by_due")
        conn.execute("DROP INDEX runs_by_type")
        conn.execute("DROP INDEX runs_by_status")
        conn.execute("CREATE INDEX runs_by_status ON runs (status)")
        conn.execute("DROP TABLE owner")
        conn.execute("DROP INDEX inbox_by_key")
        conn.execute("ALTER TABLE inbox DROP COLUMN idempotency_key")
        conn.execute("DROP TABLE schedules")
        for column in ("completion_event", "worker_losses", "version", "partition"):
            conn.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    assert not {"completion_event", "version"} & set(_columns(daemon.db))

    daemon.start()
    assert _version(daemon.db) == SCHEMA_VERSION == 6
    assert {"completion_event", "worker_losses", "version", "partition"} <= set(_columns(daemon.db))
    assert daemon.rows("SELECT name FROM sqlite_master WHERE name = 'schedules'")
    info = daemon.call(lambda c: c.get_workflow_handle("old-run").describe())
    assert info.store == {"order_id": "1"}
    assert "idempotency_key" in _columns(daemon.db, "inbox")
    sent = daemon.call(lambda c: c.get_workflow_handle("old-run").send("approve", None, "k"))
    assert sent["duplicate"] is False
    assert daemon.call(lambda c: c.get_workflow_handle("old-run").result(timeout=10)) == {
        "txn": "txn-1"
    }
    assert daemon.integrity_ok()


def test_a_database_from_a_newer_grctl_is_refused_untouched(home):
    d = Daemon(home).start()
    assert d.stop() == 0
    with sqlite3.connect(d.db) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    proc = subprocess.run(
        [sys.executable, "-m", "grctl_daemon", "--home", str(home), "--quiet"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "schema version 99, newer than this grctl" in proc.stderr
    assert "Traceback" not in proc.stderr + d.log.read_text()
    assert _version(d.db) == 99 and "completion_event" in _columns(d.db)
