"""Every runnable example of seeds 000…003 under the test kit (``grctl_env``), unchanged.

The flow modules are the ones tests/sdk/test_seed_examples.py runs against a daemon process
(tests/flows/seed_*.py, each example verbatim); here they run in the test's process on the
kit's skipping clock, so the examples that wait a day, sleep five minutes or back off between
retries end at once. (GreetEvents exactly as written cannot run in any Python: see SPEC.)
"""

from __future__ import annotations

import importlib
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from grctl.errors import UnknownEventError, WorkflowFailedError
from grctl.models import RunStatus
from grctl.testing import WorkflowEnvironment
from grctl.workflow import Workflow

TESTS = Path(__file__).parent.parent
MS = timedelta(milliseconds=1)


@pytest.fixture
def flow(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """``flow("seed_000_process")``: the Workflow objects of a tests/flows module.

    The flows import ``flows.seed_ledger`` as the worker process would (tests/ on sys.path);
    their side-effect ledger is ``tmp_path / "ledger.txt"``.
    """
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("SEED_LEDGER", str(tmp_path / "ledger.txt"))

    def load(name: str) -> list[Workflow]:
        module = importlib.import_module(f"flows.{name}")
        return [v for v in vars(module).values() if isinstance(v, Workflow)]

    return load


def ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger.txt"
    return path.read_text().splitlines() if path.exists() else []


async def kinds(env: WorkflowEnvironment, workflow_id: str) -> list[str]:
    return [ev.kind for ev in await env.history(workflow_id)]


async def steps_started(env: WorkflowEnvironment, workflow_id: str) -> list[str]:
    return [ev.step_name for ev in await env.history(workflow_id) if ev.kind == "step_started"]


async def events_dispatched(env: WorkflowEnvironment, workflow_id: str) -> list[str]:
    evs = await env.history(workflow_id)
    return [ev.data["event_name"] for ev in evs if ev.kind == "event_dispatched"]


async def tasks(env: WorkflowEnvironment, workflow_id: str) -> list[tuple[str, str]]:
    evs = await env.history(workflow_id)
    return [(ev.kind, ev.data["name"]) for ev in evs if ev.kind[:5] == "task_"]


# -- seed 000: Workflows ------------------------------------------------------------------------


async def test_workflows_seed_examples(grctl_env, flow):
    env = await grctl_env(*flow("seed_000_process"))
    await env.start("ProcessOrder", "order-1", {"order_id": "1"})
    assert await env.result("order-1") == {"order_id": "1", "status": "done"}
    assert await steps_started(env, "order-1") == ["start", "process"]
    assert (await env.describe("order-1")).store == {"order_id": "1"}


async def test_a_start_handler_alone_completes(grctl_env, flow):
    env = await grctl_env(*flow("seed_000_charge_in_start"))
    await env.start("ProcessOrder", "abc", {"order_id": "abc", "amount": 49.99})
    assert await env.result("abc") == {"order_id": "abc", "charged": 49.99, "txn_id": "txn-abc"}
    assert await tasks(env, "abc") == [("task_completed", "charge_payment")]


async def test_steps_in_turn_and_a_looping_step(grctl_env, flow):
    env = await grctl_env(*flow("seed_000_steps"))
    await env.start("ProcessOrder", "abc", {"order_id": "abc", "amount": 49.99})
    assert await env.result("abc") == "charged"
    assert await steps_started(env, "abc") == ["start", "validate", "charge"]
    await env.close()

    env = await grctl_env(*flow("seed_000_counter"))
    await env.start("Counter", "count-25", {"target": 25})
    assert await env.result("count-25") == 30
    assert await steps_started(env, "count-25") == ["start", "increment", "increment", "increment"]


# -- seed 001: Events ---------------------------------------------------------------------------


async def test_events_are_dispatched_in_arrival_order(grctl_env, flow):
    env = await grctl_env(*flow("seed_001_basic"))
    handle = await env.start("ProcessOrder", "order-abc", {"order_id": "abc"})
    await handle.send("update_quantity", payload={"item_id": "sku-1", "qty": 3})
    await handle.send("set_priority", payload="high")
    # Later, send an event
    await handle.send("approve")

    assert await handle.result() == {"order_id": "abc", "status": "approved"}
    assert await events_dispatched(env, "order-abc") == [
        "update_quantity",
        "set_priority",
        "approve",
    ]
    assert (await env.describe("order-abc")).store == {
        "order_id": "abc",
        "qty_sku-1": 3,
        "priority": "high",
        "status": "approved",
    }

    for workflow_id, event in (("order-r", "reject"), ("order-c", "cancel")):
        await env.start("ProcessOrder", workflow_id, {"order_id": workflow_id})
        await env.send(workflow_id, event)
    assert await env.result("order-r") == "rejected"
    assert await env.result("order-c") == "cancelled"


async def test_a_named_event_and_greet_events(grctl_env, flow):
    env = await grctl_env(*flow("seed_001_named_event"))
    await env.start("ProcessOrder", "order-n", {"order_id": "n"})
    with pytest.raises(UnknownEventError, match="handle_rejection"):
        await env.send("order-n", "handle_rejection")
    await env.send("order-n", "order.rejected")
    with pytest.raises(WorkflowFailedError):  # the documented body is `...`: it returns None
        await env.result("order-n")
    await env.close()

    env = await grctl_env(*flow("seed_001_greet"))
    handle = await env.start("GreetEvents", "greet-ada", {"name": "Ada"})
    for event in ("greet", "greet", "farewell"):
        await handle.send(event)
    assert await handle.result() == "Goodbye, Ada!"
    assert await events_dispatched(env, "greet-ada") == ["greet", "greet", "farewell"]


async def test_event_timeout_of_a_day_ends_at_once_when_nothing_arrives(grctl_env, flow, caplog):
    caplog.set_level(logging.INFO, "grctl.workflow")
    env = await grctl_env(*flow("seed_001_timeout"))
    started = env.now() - MS  # the engine counts whole milliseconds
    await env.start("ProcessOrder", "order-day", {"order_id": "day"})

    # Nothing else can happen: awaiting the result skips to the timer, a day later.
    assert await env.result("order-day") == "auto-approved"
    assert env.now() - started >= timedelta(hours=24)
    evs = await kinds(env, "order-day")
    assert evs.index("waiting_for_event") < evs.index("wait_timed_out")
    assert await steps_started(env, "order-day") == ["start", "auto_approve"]
    assert "No approval received — auto-approving" in caplog.text


async def test_event_timeout_with_skip_and_an_event_in_time(grctl_env, flow):
    env = await grctl_env(*flow("seed_001_timeout"))
    await env.start("ProcessOrder", "late", {"order_id": "late"})
    await env.start("ProcessOrder", "in-time", {"order_id": "in-time"})

    await env.skip(timedelta(hours=23))
    info = await env.describe("late")
    assert info.status == RunStatus.WAITING and [t["kind"] for t in info.timers] == ["wait"]
    await env.send("in-time", "approve")
    assert await env.result("in-time") == "approved"
    assert (await env.describe("in-time")).timers == []

    await env.skip(timedelta(hours=1))
    assert (await env.describe("late")).status == RunStatus.COMPLETED
    assert await env.result("late") == "auto-approved"
    assert "wait_timed_out" not in await kinds(env, "in-time")


# -- seed 002: Context --------------------------------------------------------------------------


async def run_step(env: WorkflowEnvironment, workflow_id: str, first: str) -> Any:
    await env.start("ProcessOrder", workflow_id, {"order_id": workflow_id, "first": first})
    return await env.result(workflow_id)


async def test_context_store_examples(grctl_env, flow):
    env = await grctl_env(*flow("seed_002_process"))
    await env.start("ProcessOrder", "order-7", {"order_id": "7"})
    assert await env.result("order-7") == {"order_id": "7"}
    await env.close()

    env = await grctl_env(*flow("seed_002_store"))
    await env.start("ProcessOrder", "int", {"order_id": "def", "amount": 50})
    assert await env.result("int") == {"order_id": "def", "amount": 50.0, "amount_type": "float"}


async def test_now_follows_the_skipping_clock_and_values_are_recorded(grctl_env, flow):
    env = await grctl_env(*flow("seed_002_context"))
    await env.skip(timedelta(days=3))
    assert await run_step(env, "ts", "record_timestamp") == "done"
    created_at = datetime.fromisoformat((await env.describe("ts")).store["created_at"])
    assert created_at - datetime.now(UTC) > timedelta(days=2, hours=23)
    assert created_at <= env.now()

    assert (await run_step(env, "ab", "assign_variant"))["variant"] in ("A", "B")
    assert uuid.UUID((await run_step(env, "rec", "create_record"))["record_id"]).version == 4
    assert "now" in await kinds(env, "ts") and "uuid4" in await kinds(env, "rec")


async def test_sleep_of_five_minutes_as_written_ends_at_once(grctl_env, flow):
    env = await grctl_env(*flow("seed_002_context"))
    before = env.now() - MS  # the engine counts whole milliseconds
    assert await run_step(env, "five", "wait_and_retry") == "retried"
    (sleep,) = [ev for ev in await env.history("five") if ev.kind == "sleep"]
    assert sleep.data["wake_ms"] - before.timestamp() * 1000 >= 5 * 60_000
    assert env.now() - before >= timedelta(minutes=5)
    assert await steps_started(env, "five") == ["start", "wait_and_retry", "retry_payment"]
    # 800 ms asleep in a step whose timeout is 500 ms: the sleep does not count against it.
    assert await run_step(env, "long-nap", "sleep_past_timeout") == "slept"


async def test_logger_run_info_and_value_types(grctl_env, flow, caplog):
    caplog.set_level(logging.INFO, "grctl.workflow")
    env = await grctl_env(*flow("seed_002_context"))
    assert await run_step(env, "order-log", "process") == "done"
    assert await run_step(env, "order-run", "log_run") == "done"
    run_id = (await env.describe("order-run")).run_id
    assert "Processing order order-log" in caplog.text
    assert f"run_id={run_id} wf_id=order-run" in caplog.text

    probe = await run_step(env, "probe", "probe")
    assert probe["now"] == ["datetime", True, True]
    assert probe["uuid4"][:2] == [True, 4] and probe["sleep"] == "None"
    assert probe["run"] == [(await env.describe("probe")).run_id, "probe", "ProcessOrder"]


# -- seed 003: Tasks ----------------------------------------------------------------------------


async def test_tasks_basic_usage(grctl_env, flow):
    env = await grctl_env(*flow("seed_003_basic"))
    await env.start("ProcessOrder", "order-t", {"amount": 49.99, "email": "ada@example.com"})
    assert await env.result("order-t") == {"txn_id": "txn_abc123"}
    assert await tasks(env, "order-t") == [
        ("task_completed", "charge_payment"),
        ("task_completed", "send_confirmation"),
    ]


async def test_retries_with_backoff_end_at_once(grctl_env, flow, tmp_path):
    env = await grctl_env(*flow("seed_003_retries"))
    calls = [
        ["external_api", "ext:2:ConnectionError"],  # 5 attempts, 500 ms then 1 s apart
        ["fetch_data", "fetch_out:9:TimeoutError"],  # listed, but only 3 attempts
        ["process_record", "rec_auth:9:AuthenticationError"],  # excluded: never retried
        ["process_record", "rec_key:1:KeyError"],  # anything else: retried
    ]
    before = env.now() - MS  # the engine counts whole milliseconds
    await env.start("TaskRetries", "retries", {"calls": calls})
    outcome = await env.result("retries")

    assert [o[:2] for o in outcome["outcomes"]] == [
        ["ok", {"key": "ext", "attempts": 3}],
        ["raised", "TimeoutError"],
        ["raised", "AuthenticationError"],
        ["ok", {"key": "rec_key", "attempts": 2}],
    ]
    keys = [line.split(" ")[0] for line in ledger(tmp_path)]
    assert {k: keys.count(k) for k in keys} == {
        "ext": 3,
        "fetch_out": 3,
        "rec_auth": 1,
        "rec_key": 2,
    }
    evs = await env.history("retries")
    ext = [
        ev.time for ev in evs if ev.kind[:5] == "task_" and ev.data["name"] == "flaky_external_api"
    ]
    # 500 ms, then 1 s apart (the backoff doubled) on the skipping clock; each attempt is
    # recorded a little after it failed, so a gap may look up to that much shorter.
    assert ext[1] - ext[0] > timedelta(milliseconds=400)
    assert ext[2] - ext[1] > timedelta(milliseconds=900)
    assert env.now() - before >= timedelta(milliseconds=1500)


async def test_catch_fail_and_compensate(grctl_env, flow, tmp_path):
    env = await grctl_env(*flow("seed_003_catch"))
    await env.start("ProcessOrder", "big", {"order_id": "big", "amount": 500.0})
    assert await env.result("big") == {"status": "payment_failed"}
    await env.close()

    env = await grctl_env(*flow("seed_003_fail"))
    await env.start("ProcessOrder", "declined", {"order_id": "declined", "amount": 500.0})
    with pytest.raises(WorkflowFailedError) as caught:
        await env.result("declined")
    assert caught.value.details["type"] == "PaymentDeclinedError"
    await env.close()

    env = await grctl_env(*flow("seed_003_compensate"))
    await env.start("ProcessOrder", "declined-1", {"order_id": "declined-1"})
    assert await env.result("declined-1") == {"status": "payment_failed"}
    assert [line.split(" ", 3)[::3] for line in ledger(tmp_path)][-2:] == [
        ["charge_payment", "declined-1"],
        ["release_inventory", "res-declined-1"],
    ]


async def test_parallel_tasks(grctl_env, flow):
    env = await grctl_env(*flow("seed_003_parallel"))
    await env.start("ProcessOrder", "par", {"order_id": "par", "email": "ada@example.com"})
    assert await env.result("par") == "done"
    recorded = [ev for ev in await env.history("par") if ev.kind == "task_completed"]
    assert sorted(ev.data["op"] for ev in recorded) == [0, 1, 2, 3, 4]
