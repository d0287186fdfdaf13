"""Golden histories: recorded step outcomes that replay must reproduce, in-process, exactly."""

import asyncio
import json
from pathlib import Path

import pytest

from examples import orders
from grctl.errors import NonDeterminismError
from grctl.worker._replay import StepRun, args_digest, current_step
from grctl.worker.context import Context, RunInfo

GOLDEN = Path(__file__).parent


def _golden(name: str) -> dict:
    data = json.loads((GOLDEN / name).read_text())
    for rec in data["records"]:
        if rec.get("digest") == "DIGEST":  # the fingerprint of the recorded call's arguments
            rec["digest"] = args_digest((data["store"]["order_id"],), {})
    return data


async def _replay(data: dict) -> dict:
    async def must_not_record(rec: dict) -> None:
        raise AssertionError(f"replay recorded something new: {rec}")

    wf = orders.order
    step = StepRun(data["step_name"], data["records"], must_not_record)
    ctx = Context(
        wf,
        RunInfo("01RUN", "order-abc", wf.workflow_type),
        data["step_name"],
        data["store"],
        step,
        None,
    )  # type: ignore[arg-type]
    token = current_step.set(step)
    try:
        directive = await wf.handler("step", data["step_name"])(ctx)
        step.check_finished()
    finally:
        current_step.reset(token)
    return directive.to_wire()


def test_replay_reproduces_the_recorded_step_without_running_its_task():
    data = _golden("process_order_fulfill.json")
    assert asyncio.run(_replay(data)) == data["directive"]


def test_replay_of_a_history_with_other_arguments_is_non_deterministic():
    data = _golden("process_order_fulfill.json")
    data["store"]["order_id"] = "another-order"
    with pytest.raises(NonDeterminismError, match="charge_payment"):
        asyncio.run(_replay(data))
