"""Bounded replies and released waits (SPEC 5/6; issue 9, points 4 and 5).

History, list and inbox travel in pages: a run whose history is far over the 16 MiB frame
limit reads completely through the client and the CLI. A wait the client gives up on is
released in the daemon, and no number of waits stops a connection being served.
"""

from __future__ import annotations

import asyncio

import pytest

from grctl import protocol as p
from grctl.client import Client
from grctl.errors import ReplyTooLargeError, ResultTimeoutError, TooManyWaitsError
from tests.cli.conftest import run_grctl

pytestmark = pytest.mark.backends

EVENTS = 5_000
BLOB = "x" * 4096  # 4 KiB of payload each: 20 MiB of history and inbox, over one frame


async def _memory_settles(c: Client, key: str, value: int) -> None:
    """Poll the daemon's status on this connection until ``memory[key] == value`` (10 s)."""
    deadline = asyncio.get_running_loop().time() + 10
    while (await c.daemon_status())["memory"][key] != value:
        assert asyncio.get_running_loop().time() < deadline, f"memory[{key!r}] != {value}"
        await asyncio.sleep(0.05)


async def _send_many(client: Client, workflow_id: str, count: int) -> None:
    handle = client.get_workflow_handle(workflow_id)
    for start in range(0, count, 250):
        await asyncio.gather(
            *(
                handle.send("item", {"n": n, "blob": BLOB})
                for n in range(start, min(count, start + 250))
            )
        )


@pytest.fixture
def mailbox(daemon, workers):
    """A run holding 5,000 pending events of 4 KiB each (20 MiB of inbox and history)."""
    workers("flows.pg_paging")
    daemon.call(lambda c: c.start_workflow("PgMailbox", "mailbox"))
    daemon.call(lambda c: _send_many(c, "mailbox", EVENTS), timeout=120)
    yield "mailbox"
    daemon.call(lambda c: c.get_workflow_handle("mailbox").terminate("test over"))


def test_a_history_over_the_frame_limit_reads_completely_through_the_client(daemon, mailbox):
    events = daemon.call(lambda c: c.get_workflow_handle(mailbox).history(), timeout=120)
    received = [ev for ev in events if ev.kind == "event_received"]
    assert [ev.data["payload"]["n"] for ev in received] == list(range(EVENTS))
    assert all(ev.data["payload"]["blob"] == BLOB for ev in received)
    assert [ev.seq for ev in events] == list(range(1, len(events) + 1))

    async def pages(c: Client) -> list[int]:
        return [len(page) async for page in c.get_workflow_handle(mailbox).history().pages()]

    sizes = daemon.call(pages, timeout=120)
    assert len(sizes) > 1 and max(sizes) <= p.PAGE_ROWS and sum(sizes) == len(events)


def test_an_inbox_over_the_frame_limit_reads_completely_through_the_client(daemon, mailbox):
    inbox = daemon.call(lambda c: c.get_workflow_handle(mailbox).inbox(), timeout=120)
    assert [ev.payload["n"] for ev in inbox] == list(range(EVENTS))
    assert [ev.seq for ev in inbox] == list(range(1, EVENTS + 1))
    assert {ev.state for ev in inbox} == {"pending"}


def test_the_cli_prints_a_long_history_and_inbox_whole(daemon, mailbox):
    history = run_grctl("history", mailbox, "--json", home=daemon.home)
    assert history.code == 0, history
    rows = history.json()
    assert sum(1 for r in rows if r["kind"] == "event_received") == EVENTS
    inbox = run_grctl("inbox", mailbox, "--json", home=daemon.home)
    assert inbox.code == 0, inbox
    assert [r["payload"]["n"] for r in inbox.json()] == list(range(EVENTS))
    table = run_grctl("inbox", mailbox, home=daemon.home)
    assert table.code == 0, table
    assert table.out.count("pending") == EVENTS


def test_list_walks_every_page_newest_first(daemon, workers):
    workers("flows.pg_paging")
    count = 1_200

    async def start_all(c: Client) -> None:
        for start in range(0, count, 200):
            await asyncio.gather(
                *(c.start_workflow("PgListed", f"listed-{n:05}") for n in range(start, start + 200))
            )

    daemon.call(start_all, timeout=120)
    runs = daemon.call(lambda c: c.list_workflows(workflow_type="PgListed", limit=None))
    assert len(runs) == count
    assert len({r.run_id for r in runs}) == count
    keys = [(r.created_at, r.run_id) for r in runs]
    assert keys == sorted(keys, reverse=True)
    assert len(daemon.call(lambda c: c.list_workflows(limit=700))) == 700

    out = run_grctl("list", "--type", "PgListed", "--limit", "5000", "--json", home=daemon.home)
    assert out.code == 0, out
    assert [r["run_id"] for r in out.json()] == [r.run_id for r in runs]
    table = run_grctl("list", "--type", "PgListed", "--limit", "5000", home=daemon.home)
    assert table.code == 0, table
    assert table.out.count("PgListed") == count


def test_timed_out_result_waits_are_released_and_the_connection_stays_served(daemon, workers):
    workers("flows.pg_paging")
    daemon.call(lambda c: c.start_workflow("PgListed", "waited"))

    async def many_timeouts(c: Client) -> tuple[int, str]:
        handle = c.get_workflow_handle("waited")
        outcomes = await asyncio.gather(
            *(handle.result(timeout=0.2) for _ in range(1_100)), return_exceptions=True
        )
        timed_out = sum(isinstance(o, ResultTimeoutError) for o in outcomes)
        info = await asyncio.wait_for(handle.describe(), 5)  # the same connection answers
        await _memory_settles(c, "waits", 0)  # released while the connection is still open
        return timed_out, info.status.value

    assert daemon.call(many_timeouts, timeout=60) == (1_100, "waiting")


def test_abandoned_waits_are_released_and_too_many_are_refused_one_by_one(daemon, workers):
    workers("flows.pg_paging")
    daemon.call(lambda c: c.start_workflow("PgListed", "crowded"))

    async def crowd(c: Client) -> tuple[int, str]:
        handle = c.get_workflow_handle("crowded")
        waits = [asyncio.ensure_future(handle.result()) for _ in range(4_096)]
        await _memory_settles(c, "waits", 4_096)
        refused = 0
        try:
            await handle.result()
        except TooManyWaitsError:
            refused = 1
        info = await asyncio.wait_for(handle.describe(), 5)
        for w in waits:  # the client gives up: each wait is abandoned, then released
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        await _memory_settles(c, "waits", 0)  # released while the connection is still open
        return refused, info.status.value

    assert daemon.call(crowd, timeout=60) == (1, "waiting")

    async def leave_early(c: Client) -> None:  # a followed history left early is released
        history = c.get_workflow_handle("crowded").history(follow=True).pages()
        async for _page in history:
            await _memory_settles(c, "followers", 1)
            break
        await history.aclose()
        await _memory_settles(c, "followers", 0)

    daemon.call(leave_early)
    daemon.call(lambda c: c.get_workflow_handle("crowded").send("stop"))
    assert daemon.call(lambda c: c.get_workflow_handle("crowded").result(timeout=10)) is None


def test_a_reply_over_the_frame_limit_is_a_clear_error_not_silence(daemon, workers):
    """A run whose input and result are 9 MiB each: its describe cannot fit in one frame."""
    workers("flows.pg_paging")
    blob = "y" * (9 * 1024 * 1024)
    daemon.call(lambda c: c.start_workflow("PgEcho", "big", {"blob": blob}))
    result = daemon.call(lambda c: c.get_workflow_handle("big").result(timeout=30))
    assert result == {"blob": blob}

    async def describe(c: Client) -> tuple[str, str]:
        try:
            await c.get_workflow_handle("big").describe()
        except ReplyTooLargeError as exc:
            after = await c.get_workflow_handle("big").result()  # the connection still works
            return str(exc), after["blob"][:1]
        return "answered", ""

    message, after = daemon.call(describe)
    assert "too large" in message and "frame limit" in message, message
    assert after == "y"
