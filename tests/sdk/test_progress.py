"""``ctx.emit`` / ``grctl.worker.emit`` in the SDK alone: the checks, and what a step keeps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from grctl.errors import InvalidProgressError
from grctl.worker import emit
from grctl.worker._replay import StepRun, current_step
from grctl.worker.progress import MAX_DATA_BYTES, MAX_NAMES_PER_STEP, check


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        ("", 1, "non-empty string of at most 100 characters"),
        ("x" * 101, 1, "non-empty string of at most 100 characters"),
        (7, 1, "progress name int is not valid"),
        ("ok", object(), "use strings, numbers, lists, dicts, booleans or None"),
        ("ok", "x" * (MAX_DATA_BYTES + 1), f"over the {MAX_DATA_BYTES}-byte limit"),
    ],
)
def test_bad_names_and_data_get_one_clear_error(name: Any, data: Any, says: str):
    with pytest.raises(InvalidProgressError) as caught:
        check(name, data)
    assert says in str(caught.value)
    assert caught.value.code == "invalid_progress"
    assert isinstance(caught.value, ValueError)


def test_emit_outside_a_step_checks_and_does_nothing_else():
    asyncio.run(emit("stage", {"done": 1}))  # a task awaited in a unit test
    with pytest.raises(InvalidProgressError):
        asyncio.run(emit("", None))


def _step(records: list[dict[str, Any]]) -> tuple[StepRun, list[tuple[str, Any]]]:
    async def record(_: dict[str, Any]) -> None:
        return None

    sent: list[tuple[str, Any]] = []

    async def emitter(name: str, data: Any, ts_ms: int) -> None:
        assert ts_ms > 0
        sent.append((name, data.data))

    step = StepRun("s", records, record)
    step.emitter = emitter
    return step, sent


def test_a_step_keeps_the_last_of_each_name_and_sends_every_one():
    step, sent = _step([])

    async def go() -> None:
        token = current_step.set(step)
        try:
            for n in range(3):
                await emit("items", n)
            await emit("stage", "done")
        finally:
            current_step.reset(token)

    asyncio.run(go())
    assert [name for name, _ in sent] == ["items", "items", "items", "stage"]
    assert list(step.progress or {}) == ["items", "stage"]
    assert step.progress["items"].data == check("items", 2).data


def test_a_replay_keeps_its_emits_but_does_not_send_them_again():
    step, sent = _step([{"op": 0, "kind": "now", "value": 1}])

    async def go() -> None:
        token = current_step.set(step)
        try:
            await emit("before", 1)  # re-running code an earlier attempt ran: not sent again
            step.begin("now", "")
            await emit("after", 2)  # past the record: new
        finally:
            current_step.reset(token)

    asyncio.run(go())
    assert [name for name, _ in sent] == ["after"]
    assert list(step.progress or {}) == ["before", "after"]


def test_a_step_may_emit_at_most_so_many_names():
    step, _ = _step([])

    async def go() -> None:
        token = current_step.set(step)
        try:
            for n in range(MAX_NAMES_PER_STEP):
                await emit(f"n{n}", n)
            await emit("n0", "again")  # a known name is fine
            await emit("one-more", 1)
        finally:
            current_step.reset(token)

    with pytest.raises(InvalidProgressError, match="reuse a few names"):
        asyncio.run(go())
