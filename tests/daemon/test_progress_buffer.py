"""A follower's progress buffer alone: bounded, latest of each name kept, drops counted."""

from __future__ import annotations

import asyncio

from grctl_daemon.runtime.progress import MAX_PENDING, ProgressBuffer


def row(name: str, n: int) -> dict:
    return {"seq": None, "kind": "progress", "data": {"name": name, "value": n}}


def test_a_buffer_nobody_reads_stays_bounded_and_keeps_the_latest_of_each_name():
    buffer = ProgressBuffer(asyncio.Event())
    for n in range(10_000):
        buffer.push(row("n", n))
        if n % 1000 == 0:
            buffer.push(row(f"mark-{n // 1000}", n))
    assert buffer.most <= MAX_PENDING
    taken = buffer.take()
    latest = {r["data"]["name"]: r["data"]["value"] for r in taken}
    assert latest["n"] == 9_999 and latest["mark-9"] == 9_000 and len(latest) == 11
    assert taken[0]["dropped"] + len(taken) == 10_010, "every event delivered or counted"
    values = [r["data"]["value"] for r in taken if r["data"]["name"] == "n"]
    assert values == sorted(values), "in emission order"
    assert buffer.take() == [] and buffer.dropped == 0


def test_a_reader_that_keeps_up_loses_nothing():
    buffer = ProgressBuffer(asyncio.Event())
    got = []
    for n in range(1_000):
        buffer.push(row("n", n))
        if n % 100 == 99:
            got += buffer.take()
    assert [r["data"]["value"] for r in got] == list(range(1_000))
    assert all("dropped" not in r for r in got) and buffer.shed_total == 0


def test_more_names_than_the_limit_sheds_the_oldest_names():
    buffer = ProgressBuffer(asyncio.Event(), limit=8)
    for n in range(20):
        buffer.push(row(f"name-{n}", n))
    names = [r["data"]["name"] for r in buffer.take()]
    assert names[-1] == "name-19" and len(names) <= 8
