"""Every code example of seeds 000…003, run as written against the real daemon and a real worker.

Each flow module in tests/flows/seed_*.py holds one example verbatim (plus what it assumes but
does not show); each test here drives it and checks what the seed says it does. Client snippets
run as written inside the async bodies. One daemon per test, since several examples redefine
the same ``ProcessOrder`` workflow.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from grctl.client import Client
from grctl.errors import UnknownEventError, WorkflowFailedError
from grctl.models import HistoryEvent, RunInfo, RunStatus
from tests.conftest import GRCTL, TESTS, Daemon, read_ledger, wait_until

# -- helpers ------------------------------------------------------------------------------------


def start(daemon: Daemon, workflow_type: str, workflow_id: str, workflow_input: Any) -> None:
    daemon.call(lambda c: c.start_workflow(workflow_type, workflow_id, workflow_input))


def result(daemon: Daemon, workflow_id: str) -> Any:
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).result(timeout=15))


def describe(daemon: Daemon, workflow_id: str) -> RunInfo:
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).describe())


def history(daemon: Daemon, workflow_id: str) -> list[HistoryEvent]:
    return daemon.call(lambda c: c.get_workflow_handle(workflow_id).history())


def kinds(daemon: Daemon, workflow_id: str) -> list[str]:
    return [ev.kind for ev in history(daemon, workflow_id)]


def steps_started(daemon: Daemon, workflow_id: str) -> list[str]:
    return [ev.step_name for ev in history(daemon, workflow_id) if ev.kind == "step_started"]


def events_dispatched(daemon: Daemon, workflow_id: str) -> list[str]:
    evs = history(daemon, workflow_id)
    return [ev.data["event_name"] for ev in evs if ev.kind == "event_dispatched"]


def tasks(daemon: Daemon, workflow_id: str) -> list[tuple[str, str]]:
    """``(history kind, task name)`` of every task record, in order."""
    return [
        (ev.kind, ev.data["name"]) for ev in history(daemon, workflow_id) if ev.kind[:5] == "task_"
    ]


def wait_status(daemon: Daemon, workflow_id: str, status: RunStatus) -> RunInfo:
    return wait_until(
        lambda: (info := describe(daemon, workflow_id)).status == status and info,
        message=f"{workflow_id} {status}",
    )


def ledger_keys(path: Path) -> list[str]:
    return [line.split(" ")[0] for line in read_ledger(path)]


def ledger_times(path: Path, key: str) -> list[float]:
    return [float(line.split(" ")[2]) for line in read_ledger(path) if line.split(" ")[0] == key]


# -- seed 000: Workflows ------------------------------------------------------------------------


def test_defining_a_workflow_runs_start_then_process(daemon, workers):
    workers("flows.seed_000_process")
    start(daemon, "ProcessOrder", "order-1", {"order_id": "1"})

    assert result(daemon, "order-1") == {"order_id": "1", "status": "done"}
    assert steps_started(daemon, "order-1") == ["start", "process"]
    info = describe(daemon, "order-1")
    assert info.store == {"order_id": "1"} and len(info.run_id) == 26


def test_a_start_handler_alone_can_do_the_work_and_complete(daemon, workers):
    workers("flows.seed_000_charge_in_start")
    start(daemon, "ProcessOrder", "abc", {"order_id": "abc", "amount": 49.99})

    assert result(daemon, "abc") == {"order_id": "abc", "charged": 49.99, "txn_id": "txn-abc"}
    assert steps_started(daemon, "abc") == ["start"]
    assert tasks(daemon, "abc") == [("task_completed", "charge_payment")]


def test_steps_run_in_turn_each_committed_before_the_next(daemon, workers):
    from tests.flows.seed_000_steps import order

    workers("flows.seed_000_steps")
    # The seed: {"order_id": "abc", "amount": 49.99} become the start handler's arguments.
    start(daemon, "ProcessOrder", "abc", {"order_id": "abc", "amount": 49.99})

    assert result(daemon, "abc") == "charged"
    evs = [(ev.kind, ev.step_name) for ev in history(daemon, "abc") if ev.kind[:5] == "step_"]
    assert evs == [
        ("step_started", "start"),
        ("step_completed", "start"),
        ("step_started", "validate"),
        ("step_completed", "validate"),
        ("step_started", "charge"),
        ("step_completed", "charge"),
    ]
    assert describe(daemon, "abc").store == {"order_id": "abc", "amount": 49.99}
    # "Step Timeouts": 10 seconds by default, 60 for long_running_step.
    timeouts = {s["name"]: s["timeout_ms"] for s in order.definition()["steps"]}
    assert timeouts == {"validate": 10_000, "charge": 10_000, "long_running_step": 60_000}


def test_a_step_looping_to_itself_persists_state_between_iterations(daemon, workers):
    workers("flows.seed_000_counter")
    start(daemon, "Counter", "count-25", {"target": 25})

    assert result(daemon, "count-25") == 30
    assert steps_started(daemon, "count-25") == ["start", "increment", "increment", "increment"]
    assert describe(daemon, "count-25").store == {"count": 30, "target": 25}


# -- seed 001: Events ---------------------------------------------------------------------------


def test_events_wait_in_the_inbox_and_are_dispatched_in_arrival_order(daemon, workers):
    # Register the type, then stop the worker so every event arrives before the run waits.
    workers("flows.seed_001_basic").stop()
    wait_until(lambda: not daemon.status()["workers"], message="worker gone")

    async def client_side(client: Client) -> list[Any]:
        handle = await client.start_workflow(
            workflow_type="ProcessOrder",
            workflow_id="order-abc",
            workflow_input={"order_id": "abc"},
        )
        await handle.send("update_quantity", payload={"item_id": "sku-1", "qty": 3})
        await handle.send("set_priority", payload="high")
        # Later, send an event
        await handle.send("approve")
        return [(ev.event_name, ev.payload, ev.state) for ev in await handle.inbox()]

    assert daemon.call(client_side) == [
        ("update_quantity", {"item_id": "sku-1", "qty": 3}, "pending"),
        ("set_priority", "high", "pending"),
        ("approve", None, "pending"),
    ]
    workers("flows.seed_001_basic")

    assert result(daemon, "order-abc") == {"order_id": "abc", "status": "approved"}
    assert events_dispatched(daemon, "order-abc") == ["update_quantity", "set_priority", "approve"]
    assert steps_started(daemon, "order-abc")[-1] == "fulfill"
    assert describe(daemon, "order-abc").store == {
        "order_id": "abc",
        "qty_sku-1": 3,
        "priority": "high",
        "status": "approved",
    }
    inbox = daemon.call(lambda c: c.get_workflow_handle("order-abc").inbox())
    assert [ev.state for ev in inbox] == ["dispatched"] * 3


def test_reject_and_cancel_events_complete_the_run(daemon, workers):
    workers("flows.seed_001_basic")

    async def start_and_send(client: Client, workflow_id: str, event: str) -> Any:
        handle = await client.start_workflow("ProcessOrder", workflow_id, {"order_id": workflow_id})
        await handle.send(event)
        return await handle.result(timeout=10)

    assert daemon.call(lambda c: start_and_send(c, "order-r", "reject")) == "rejected"
    assert daemon.call(lambda c: start_and_send(c, "order-c", "cancel")) == "cancelled"
    assert describe(daemon, "order-r").store["status"] == "rejected"
    assert describe(daemon, "order-c").store["status"] == "cancelled"


def test_an_event_name_given_to_the_decorator_replaces_the_function_name(daemon, workers):
    workers("flows.seed_001_named_event")
    start(daemon, "ProcessOrder", "order-n", {"order_id": "n"})
    wait_status(daemon, "order-n", RunStatus.WAITING)

    with pytest.raises(UnknownEventError, match="handle_rejection"):
        daemon.call(lambda c: c.get_workflow_handle("order-n").send("handle_rejection"))
    daemon.call(lambda c: c.get_workflow_handle("order-n").send("order.rejected"))

    # The handler ran; its documented body is `...`, so it returned None: a clear failure.
    with pytest.raises(WorkflowFailedError):
        result(daemon, "order-n")
    assert events_dispatched(daemon, "order-n") == ["order.rejected"]
    error = describe(daemon, "order-n").error
    assert error is not None and "'order.rejected' returned NoneType" in error["message"]


def test_greet_events_handles_many_events_with_distinct_names(daemon, workers):
    workers("flows.seed_001_greet")

    async def drive(client: Client) -> Any:
        handle = await client.start_workflow("GreetEvents", "greet-ada", {"name": "Ada"})
        await handle.send("greet")
        await handle.send("greet")
        await handle.send("farewell")
        return await handle.result(timeout=10)

    assert daemon.call(drive) == "Goodbye, Ada!"
    assert events_dispatched(daemon, "greet-ada") == ["greet", "greet", "farewell"]
    assert describe(daemon, "greet-ada").store == {"name": "Ada", "message": "Hello, Ada!"}
    assert tasks(daemon, "greet-ada") == [
        ("task_completed", "call_greeting_api"),
        ("task_completed", "call_greeting_api"),
        ("task_completed", "call_farewell_api"),
    ]


def test_greet_events_as_written_is_refused_at_worker_start(home):
    # No daemon: definitions are checked while importing, before the worker connects.
    proc = subprocess.run(
        [GRCTL, "worker", "flows.seed_001_greet_verbatim", "--home", str(home)],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "'GreetEvents'" in lines[0] and "event handler 'greet'" in lines[0]
    assert "same name as the variable holding the workflow" in lines[0]


def test_event_timeout_as_written_waits_a_day_and_an_event_in_time_voids_it(daemon, workers):
    workers("flows.seed_001_timeout")
    start(daemon, "ProcessOrder", "order-day", {"order_id": "day"})
    info = wait_status(daemon, "order-day", RunStatus.WAITING)

    (timer,) = info.timers
    day_ms = timedelta(hours=24) / timedelta(milliseconds=1)
    assert timer["kind"] == "wait"
    assert abs(timer["due_ms"] - (time.time() * 1000 + day_ms)) < 60_000

    daemon.call(lambda c: c.get_workflow_handle("order-day").send("approve"))
    assert result(daemon, "order-day") == "approved"
    assert "wait_timed_out" not in kinds(daemon, "order-day")
    assert "auto_approve" not in steps_started(daemon, "order-day")
    assert describe(daemon, "order-day").timers == []


def test_event_timeout_runs_the_timeout_step_when_nothing_arrives(daemon, workers):
    worker = workers("flows.seed_001_timeout_short")
    start(daemon, "ProcessOrder", "order-quiet", {"order_id": "quiet"})

    assert result(daemon, "order-quiet") == "auto-approved"
    evs = kinds(daemon, "order-quiet")
    assert evs.index("waiting_for_event") < evs.index("wait_timed_out")
    assert steps_started(daemon, "order-quiet") == ["start", "auto_approve"]
    assert describe(daemon, "order-quiet").store["status"] == "auto-approved"
    wait_until(lambda: "No approval received — auto-approving" in worker.output(), 5)


# -- seed 002: Context --------------------------------------------------------------------------


def test_context_opening_example_reads_the_store(daemon, workers):
    workers("flows.seed_002_process")
    start(daemon, "ProcessOrder", "order-7", {"order_id": "7"})
    assert result(daemon, "order-7") == {"order_id": "7"}


def test_store_get_with_a_type(daemon, workers):
    workers("flows.seed_002_store")
    start(daemon, "ProcessOrder", "float", {"order_id": "abc", "amount": 49.99})
    start(daemon, "ProcessOrder", "int", {"order_id": "def", "amount": 50})

    assert result(daemon, "float") == {"order_id": "abc", "amount": 49.99, "amount_type": "float"}
    assert result(daemon, "int") == {"order_id": "def", "amount": 50.0, "amount_type": "float"}
    assert steps_started(daemon, "float") == ["start", "validate", "charge"]


def _run_step(daemon: Daemon, workflow_id: str, first: str) -> Any:
    start(daemon, "ProcessOrder", workflow_id, {"order_id": workflow_id, "first": first})
    return result(daemon, workflow_id)


def test_now_random_and_uuid4_are_recorded(daemon, workers):
    workers("flows.seed_002_context")
    before = datetime.now(UTC)

    assert _run_step(daemon, "ts", "record_timestamp") == "done"
    created_at = datetime.fromisoformat(describe(daemon, "ts").store["created_at"])
    assert created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= created_at <= datetime.now(UTC)

    variant = _run_step(daemon, "ab", "assign_variant")["variant"]
    assert variant in ("A", "B") and describe(daemon, "ab").store["variant"] == variant

    record_id = _run_step(daemon, "rec", "create_record")["record_id"]
    assert uuid.UUID(record_id).version == 4

    assert "now" in kinds(daemon, "ts")
    assert "random" in kinds(daemon, "ab")
    assert "uuid4" in kinds(daemon, "rec")


def test_sleep_pauses_inside_the_step_without_counting_against_its_timeout(daemon, workers):
    workers("flows.seed_002_context")

    started = time.monotonic()
    assert _run_step(daemon, "brief", "wait_briefly") == "retried"
    assert time.monotonic() - started >= 0.2
    assert steps_started(daemon, "brief") == ["start", "wait_briefly", "retry_payment"]
    assert "sleep" in kinds(daemon, "brief")

    # 800 ms asleep in a step whose timeout is 500 ms.
    assert _run_step(daemon, "long-nap", "sleep_past_timeout") == "slept"

    # As written: five minutes asleep. The step's deadline moves past the sleep.
    start(daemon, "ProcessOrder", "five", {"order_id": "five", "first": "wait_and_retry"})
    wait_until(lambda: "sleep" in kinds(daemon, "five"), message="sleep recorded")
    (sleep,) = [ev for ev in history(daemon, "five") if ev.kind == "sleep"]
    five_min_ms = timedelta(minutes=5) / timedelta(milliseconds=1)
    assert abs(sleep.data["wake_ms"] - (time.time() * 1000 + five_min_ms)) < 30_000
    info = describe(daemon, "five")
    assert info.status == RunStatus.RUNNING and info.step_name == "wait_and_retry"
    (step_timer,) = [t for t in info.timers if t["kind"] == "step"]
    assert step_timer["due_ms"] > sleep.data["wake_ms"]
    daemon.call(lambda c: c.get_workflow_handle("five").terminate("test over"))


def test_logger_and_run_info(daemon, workers):
    worker = workers("flows.seed_002_context")

    assert _run_step(daemon, "order-log", "process") == "done"
    assert _run_step(daemon, "order-run", "log_run") == "done"

    run_id = describe(daemon, "order-run").run_id
    wait_until(lambda: "Processing order order-log" in worker.output(), 5)
    wait_until(lambda: f"run_id={run_id} wf_id=order-run" in worker.output(), 5)


def test_context_values_have_the_documented_types(daemon, workers):
    workers("flows.seed_002_context")

    probe = _run_step(daemon, "probe", "probe")

    info = describe(daemon, "probe")
    assert probe["now"] == ["datetime", True, True]
    kind, roll = probe["random"]
    assert kind == "float" and 0.0 <= roll < 1.0
    assert probe["uuid4"][:2] == [True, 4]
    assert probe["sleep"] == "None"
    assert probe["get_missing"] is None
    assert (
        probe["get_missing_typed"].startswith("KeyError")
        and "never_set" in probe["get_missing_typed"]
    )
    assert probe["run"] == [info.run_id, "probe", "ProcessOrder"]
    assert probe["run_types"] == ["str", "str", "str"]
    assert probe["logger"] == [True, True]
    assert [k for k in kinds(daemon, "probe") if k in ("now", "random", "uuid4", "sleep")] == [
        "now",
        "random",
        "uuid4",
        "sleep",
    ]


# -- seed 003: Tasks ----------------------------------------------------------------------------


def test_tasks_basic_usage(daemon, workers):
    workers("flows.seed_003_basic")
    start(daemon, "ProcessOrder", "order-t", {"amount": 49.99, "email": "ada@example.com"})

    assert result(daemon, "order-t") == {"txn_id": "txn_abc123"}
    assert tasks(daemon, "order-t") == [
        ("task_completed", "charge_payment"),
        ("task_completed", "send_confirmation"),
    ]


def test_retry_policies_and_error_matching(daemon, workers, ledger):
    workers("flows.seed_003_retries", env={"SEED_LEDGER": str(ledger)})
    calls = [
        ["external_api", "ext:2:ConnectionError"],  # 5 attempts, 500 ms then 1 s apart
        ["fetch_data", "fetch_ok:1:ConnectionError"],  # listed: retried
        ["fetch_data", "fetch_out:9:TimeoutError"],  # listed, but only 3 attempts
        ["fetch_data", "fetch_val:9:ValueError"],  # not listed: never retried
        ["process_record", "rec_val:9:ValueError"],  # excluded: never retried
        ["process_record", "rec_auth:9:AuthenticationError"],  # excluded: never retried
        ["process_record", "rec_key:1:KeyError"],  # anything else: retried
        ["no_policy", "plain:9:ValueError"],  # no policy: one attempt
    ]
    start(daemon, "TaskRetries", "retries", {"calls": calls})

    outcome = result(daemon, "retries")
    assert outcome["documented"] == [None, None, None]
    assert [o[:2] for o in outcome["outcomes"]] == [
        ["ok", {"key": "ext", "attempts": 3}],
        ["ok", {"key": "fetch_ok", "attempts": 2}],
        ["raised", "TimeoutError"],
        ["raised", "ValueError"],
        ["raised", "ValueError"],
        ["raised", "AuthenticationError"],
        ["ok", {"key": "rec_key", "attempts": 2}],
        ["raised", "ValueError"],
    ]
    keys = ledger_keys(ledger)
    attempts = {key: keys.count(key) for key in dict.fromkeys(keys)}
    assert attempts == {
        "ext": 3,
        "fetch_ok": 2,
        "fetch_out": 3,
        "fetch_val": 1,
        "rec_val": 1,
        "rec_auth": 1,
        "rec_key": 2,
        "plain": 1,
    }
    first, second, third = ledger_times(ledger, "ext")
    # initial_delay_ms, then doubled; less a few ms: the times are written at each attempt's
    # start and its retry time is counted from the failure in whole milliseconds.
    assert second - first >= 0.495 and third - second >= 0.995

    by_name = tasks(daemon, "retries")
    assert by_name[:3] == [
        ("task_attempt_failed", "flaky_external_api"),
        ("task_attempt_failed", "flaky_external_api"),
        ("task_completed", "flaky_external_api"),
    ]
    assert by_name.count(("task_failed", "flaky_fetch_data")) == 2
    assert by_name[-3:] == [
        ("task_completed", "call_external_api"),
        ("task_completed", "fetch_data"),
        ("task_completed", "process_record"),
    ]


def test_a_step_catches_a_task_error_and_completes(daemon, workers, ledger):
    workers("flows.seed_003_catch", env={"SEED_LEDGER": str(ledger)})
    start(daemon, "ProcessOrder", "small", {"order_id": "small", "amount": 20.0})
    start(daemon, "ProcessOrder", "big", {"order_id": "big", "amount": 500.0})

    assert result(daemon, "small") == {"txn_id": "txn-20.0", "status": "charged"}
    assert result(daemon, "big") == {"status": "payment_failed"}
    assert tasks(daemon, "big") == [
        ("task_failed", "charge_payment"),
        ("task_completed", "notify_customer"),
    ]
    (failed,) = [ev for ev in history(daemon, "big") if ev.kind == "task_failed"]
    assert failed.data["error"]["type"] == "PaymentDeclinedError"
    notes = [line.split(" ", 3)[3] for line in read_ledger(ledger) if line[:6] == "notify"]
    assert notes == ["big payment_failed"]


def test_next_fail_ends_the_run_with_error_details(daemon, workers):
    workers("flows.seed_003_fail")
    start(daemon, "ProcessOrder", "ok", {"order_id": "ok", "amount": 20.0})
    start(daemon, "ProcessOrder", "declined", {"order_id": "declined", "amount": 500.0})

    assert result(daemon, "ok") == {"txn_id": "txn-20.0"}
    with pytest.raises(WorkflowFailedError) as caught:
        result(daemon, "declined")
    assert caught.value.details["type"] == "PaymentDeclinedError"
    info = describe(daemon, "declined")
    assert info.status == RunStatus.FAILED
    assert info.error["type"] == "PaymentDeclinedError"
    assert info.error["message"] == "Payment failed: card declined for 500.0"


def test_compensation_undoes_the_reservation(daemon, workers, ledger):
    workers("flows.seed_003_compensate", env={"SEED_LEDGER": str(ledger)})
    start(daemon, "ProcessOrder", "fine-1", {"order_id": "fine-1"})
    assert result(daemon, "fine-1") == {"status": "fulfilled"}
    start(daemon, "ProcessOrder", "declined-1", {"order_id": "declined-1"})
    assert result(daemon, "declined-1") == {"status": "payment_failed"}

    assert [line.split(" ", 3)[::3] for line in read_ledger(ledger)] == [
        ["reserve_inventory", "fine-1"],
        ["charge_payment", "fine-1"],
        ["reserve_inventory", "declined-1"],
        ["charge_payment", "declined-1"],
        ["release_inventory", "res-declined-1"],
    ]
    assert tasks(daemon, "declined-1") == [
        ("task_completed", "reserve_inventory"),
        ("task_failed", "charge_payment"),
        ("task_completed", "release_inventory"),
    ]


def test_parallel_tasks_with_gather_and_task_group(daemon, workers, ledger):
    workers("flows.seed_003_parallel", env={"SEED_LEDGER": str(ledger)})
    start(daemon, "ProcessOrder", "par", {"order_id": "par", "email": "ada@example.com"})

    assert result(daemon, "par") == "done"
    keys = ledger_keys(ledger)
    gathered, grouped = keys[:6], keys[6:]
    assert sorted(gathered[:3]) == ["log_analytics:start", "send_email:start", "update_crm:start"]
    assert sorted(grouped[:2]) == ["send_email:start", "update_crm:start"]
    assert len(grouped) == 4
    recorded = [ev for ev in history(daemon, "par") if ev.kind == "task_completed"]
    assert len(recorded) == 5
    assert sorted(ev.data["op"] for ev in recorded) == [0, 1, 2, 3, 4]
