"""Idempotent events and send-with-start (SPEC 7) against the real daemon and a real worker.

A send with an ``idempotency_key`` is stored once per run: a second one is acknowledged with
the first one's inbox seq and ``duplicate: True``, also after a daemon restart and when the two
race. ``send_with_start`` starts the run and stores the event in one commit, or just sends.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from grctl.client import Client
from grctl.errors import InvalidInputError, UnknownEventError, WorkflowNotFoundError
from tests.conftest import Daemon, read_ledger, wait_until

pytestmark = pytest.mark.backends

FLOWS = "flows.ev_events"


def send(daemon: Daemon, wid: str, event: str, payload: Any = None, key: str | None = None):
    return daemon.call(lambda c: c.get_workflow_handle(wid).send(event, payload, key))


def inbox_rows(daemon: Daemon, wid: str) -> list[tuple[Any, ...]]:
    return daemon.rows(
        "SELECT i.seq, i.event_name, i.idempotency_key FROM inbox i JOIN runs r "
        "ON r.run_id = i.run_id WHERE r.workflow_id = ? ORDER BY i.seq",
        (wid,),
    )


def result(daemon: Daemon, wid: str) -> Any:
    return daemon.call(lambda c: c.get_workflow_handle(wid).result(timeout=20))


def test_a_keyed_send_is_stored_once_even_across_a_daemon_restart(daemon, workers, ledger):
    workers(FLOWS)
    daemon.call(lambda c: c.start_workflow("EvCart", "cart-1"))
    first = send(daemon, "cart-1", "add", {"item": "apple"}, key="hook-1")
    assert first["duplicate"] is False and first["inbox_seq"] == 1
    again = send(daemon, "cart-1", "add", {"item": "apple"}, key="hook-1")
    assert again == {**first, "duplicate": True}
    wait_until(lambda: "cart-1 add apple" in read_ledger(ledger), message="add handled")

    daemon.stop()
    daemon.start()
    after = send(daemon, "cart-1", "add", {"item": "apple"}, key="hook-1")
    assert after == {**first, "duplicate": True}
    other = send(daemon, "cart-1", "add", {"item": "pear"}, key="hook-2")
    assert other["duplicate"] is False and other["inbox_seq"] == 2
    plain = send(daemon, "cart-1", "add", {"item": "pear"})
    assert "duplicate" not in plain and plain["inbox_seq"] == 3
    send(daemon, "cart-1", "checkout")

    assert result(daemon, "cart-1") == {"owner": "nobody", "items": ["apple", "pear", "pear"]}
    assert read_ledger(ledger).count("cart-1 add apple") == 1
    assert inbox_rows(daemon, "cart-1") == [
        (1, "add", "hook-1"),
        (2, "add", "hook-2"),
        (3, "add", None),
        (4, "checkout", None),
    ]
    # The run has ended: a retried send is still acknowledged, not refused.
    late = send(daemon, "cart-1", "add", {"item": "apple"}, key="hook-1")
    assert late == {**first, "duplicate": True}


def test_racing_sends_with_one_key_store_one_event(daemon, workers):
    workers(FLOWS)
    daemon.call(lambda c: c.start_workflow("EvCart", "cart-race"))

    async def race(c: Client) -> list[dict[str, Any]]:
        h = c.get_workflow_handle("cart-race")
        return await asyncio.gather(*(h.send("add", {"item": "x"}, "k") for _ in range(20)))

    replies = daemon.call(race)
    assert {r["inbox_seq"] for r in replies} == {1}
    assert sorted(r["duplicate"] for r in replies) == [False] + [True] * 19
    assert inbox_rows(daemon, "cart-race") == [(1, "add", "k")]


def test_a_bad_key_is_refused_with_its_limits(daemon):
    with pytest.raises(InvalidInputError, match="idempotency_key must be a string of 1–256"):
        daemon.call(lambda c: c.send_with_start("EvCart", "c", "add", {"item": "x"}, None, ""))


def test_send_with_start_starts_and_sends_in_one_commit_then_just_sends(daemon, workers):
    workers(FLOWS)

    def sws(event: str, payload: Any = None, input: Any = None, key: str | None = None):
        async def go(c: Client):
            h = await c.send_with_start("EvCart", "cart-s", event, payload, input, key)
            return h.run_id, h.started, h.sent

        return daemon.call(go)

    run_id, started, sent = sws("add", {"item": "tea"}, {"owner": "ann"}, key="k1")
    assert started is True and sent["inbox_seq"] == 1 and sent["duplicate"] is False
    # The run was inserted with its event: one unit, both rows there.
    assert inbox_rows(daemon, "cart-s") == [(1, "add", "k1")]
    again = sws("add", {"item": "tea"}, key="k1")
    assert again[:2] == (run_id, False) and again[2]["duplicate"] is True
    more = sws("add", {"item": "jam"})
    assert more[:2] == (run_id, False) and more[2]["inbox_seq"] == 2
    sws("checkout")
    assert result(daemon, "cart-s") == {"owner": "ann", "items": ["tea", "jam"]}

    # The run ended: the next one starts a new run.
    new_id, started, _ = sws("add", {"item": "milk"})
    assert started is True and new_id != run_id


def test_send_with_start_refuses_a_bad_event_and_starts_nothing(daemon, workers):
    workers(FLOWS)
    with pytest.raises(UnknownEventError, match="no handler for event 'nope'"):
        daemon.call(lambda c: c.send_with_start("EvCart", "cart-bad", "nope"))
    with pytest.raises(WorkflowNotFoundError):
        daemon.call(lambda c: c.get_workflow_handle("cart-bad").describe())


def test_concurrent_send_with_start_starts_one_run_and_delivers_every_event(daemon, workers):
    workers(FLOWS)

    async def race(c: Client) -> list[Any]:
        return await asyncio.gather(
            *(c.send_with_start("EvCart", "cart-c", "add", {"item": str(n)}) for n in range(10)),
            c.start_workflow("EvCart", "cart-c"),
            return_exceptions=True,
        )

    out = daemon.call(race)
    handles = out[:10]
    assert all(not isinstance(h, BaseException) for h in handles), handles
    runs = {h.run_id for h in handles}
    assert len(runs) == 1
    starters = sum(h.started for h in handles) + (not isinstance(out[10], BaseException))
    assert starters == 1
    assert daemon.rows("SELECT count(*) FROM runs WHERE workflow_id = ?", ("cart-c",)) == [(1,)]
    assert sorted(r[0] for r in inbox_rows(daemon, "cart-c")) == list(range(1, 11))


def test_the_database_refuses_a_second_row_with_a_key_the_last_guard(daemon, workers):
    workers(FLOWS)
    daemon.call(lambda c: c.start_workflow("EvCart", "cart-idx"))
    sent = send(daemon, "cart-idx", "add", {"item": "x"}, key="k")
    assert daemon.stop() == 0
    row = (sent["run_id"], 99, "add", 0, "pending", "k")
    sql = "INSERT INTO inbox (run_id, seq, event_name, arrived_ms, state, idempotency_key) "
    if daemon.db_url is None:
        import sqlite3

        with sqlite3.connect(daemon.db) as conn, pytest.raises(sqlite3.IntegrityError):
            conn.execute(sql + "VALUES (?, ?, ?, ?, ?, ?)", row)
    else:
        import asyncpg

        from tests.conftest import PG_URL

        async def insert() -> None:
            schema = daemon.db_url.rsplit("schema=", 1)[1]
            conn = await asyncpg.connect(PG_URL, server_settings={"search_path": schema})
            try:
                await conn.execute(sql + "VALUES ($1, $2, $3, $4, $5, $6)", *row)
            finally:
                await conn.close()

        with pytest.raises(asyncpg.UniqueViolationError):
            asyncio.run(insert())
    # Keyless rows are not constrained.
    daemon.start()
    for _ in range(2):
        send(daemon, "cart-idx", "add", {"item": "y"})
    assert [r[2] for r in inbox_rows(daemon, "cart-idx")] == ["k", None, None]
