"""``grctl check`` and ``ctx.patched`` against live runs (SPEC 8 "Versioning", issue 12 point 2).

CkOrder (tests/flows/ck_orders.py) is deployed and four runs are parked with its worker killed:
``ck-pay`` mid-step after two recorded tasks, ``ck-ship`` at step ``ship``, ``ck-wait`` waiting
for an event and ``ck-cancel`` about to handle ``cancel``. Three changes of the module are then
checked against them: a step renamed, a task added in the middle of a step, an event handler
removed. Each names exactly the runs it would break; guarded by ``ctx.patched``, the second
change passes the check, and a worker running it finishes the mid-step run without doing its
tasks twice, while a new run takes the new path.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cli.conftest import run_grctl
from tests.conftest import Daemon, read_ledger, wait_until
from tests.daemon.test_guarantees import (
    describe,
    failure,
    kinds,
    release,
    result,
    start,
    wait_reached,
)

pytestmark = pytest.mark.backends

PARKED = ("ck-pay", "ck-ship", "ck-wait", "ck-cancel")


def check(daemon: Daemon, module: str, *more: str) -> tuple[int, dict[str, Any]]:
    res = run_grctl("check", f"flows.{module}", "--json", *more, home=daemon.home)
    assert res.code in (0, 1), str(res)
    assert "Traceback" not in res.err, str(res)
    return res.code, res.json()


def breaking(report: dict[str, Any]) -> dict[str, str]:
    """workflow_id -> the reasons that break it."""
    return {
        r["workflow_id"]: " | ".join(x["why"] for x in r["reasons"] if x["level"] == "breaks")
        for r in report["runs"]
        if r["verdict"] == "breaks"
    }


def park(daemon: Daemon, workers, ledger) -> None:
    """The four runs, left where the old code stopped: its worker killed mid-way."""
    w = workers("flows.ck_orders")
    start(daemon, "CkOrder", "ck-pay", {"mode": "pay"})
    start(daemon, "CkOrder", "ck-ship", {"mode": "ship"})
    start(daemon, "CkOrder", "ck-wait", {"mode": "wait"})
    start(daemon, "CkOrder", "ck-cancel", {"mode": "wait"})
    wait_reached(ledger, "ck-pay-paid")
    wait_reached(ledger, "ck-ship-ship")
    wait_until(
        lambda: all(describe(daemon, i).status.value == "waiting" for i in ("ck-wait", "ck-cancel"))
    )
    w.kill9()
    daemon.call(lambda c: c.get_workflow_handle("ck-cancel").send("cancel"))
    wait_until(lambda: describe(daemon, "ck-cancel").status.value == "running")
    assert read_ledger(ledger).count("reserve ck-pay") == 1
    assert read_ledger(ledger).count("charge ck-pay") == 1


def test_check_names_the_runs_each_change_would_break_and_patched_ships_one(
    daemon, workers, ledger
):
    park(daemon, workers, ledger)

    code, report = check(daemon, "ck_orders")
    assert (code, report["checked"], report["breaking"]) == (0, 4, 0), report

    code, report = check(daemon, "ck_orders_renamed")
    assert code == 1 and set(breaking(report)) == {"ck-ship"}, report
    assert "'ship'" in breaking(report)["ck-ship"]

    code, report = check(daemon, "ck_orders_fraud")
    assert code == 1 and set(breaking(report)) == {"ck-pay"}, report
    why = breaking(report)["ck-pay"]
    assert "task 'charge'" in why and "task 'fraud_check'" in why, why

    code, report = check(daemon, "ck_orders_nocancel")
    assert code == 1 and set(breaking(report)) == {"ck-wait", "ck-cancel"}, report
    assert "'cancel'" in breaking(report)["ck-wait"]

    code, report = check(daemon, "ck_orders_patched")
    assert (code, report["checked"], report["breaking"]) == (0, 4, 0), report

    # The guarded change, deployed: every parked run finishes under it.
    for gate in ("ck-pay-paid", "ck-ship-ship", "ck-new-paid"):
        release(daemon, gate)
    workers("flows.ck_orders_patched")
    assert result(daemon, "ck-pay") == "paid"
    assert result(daemon, "ck-ship") == "shipped"
    assert result(daemon, "ck-cancel") == "cancelled"
    daemon.call(lambda c: c.get_workflow_handle("ck-wait").send("approve"))
    release(daemon, "ck-wait-ship")
    assert result(daemon, "ck-wait") == "shipped"
    start(daemon, "CkOrder", "ck-new", {"mode": "pay"})
    assert result(daemon, "ck-new") == "paid"

    lines = read_ledger(ledger)
    assert [ln for ln in lines if ln.endswith(" ck-pay")] == ["reserve ck-pay", "charge ck-pay"]
    assert [ln for ln in lines if ln.endswith(" ck-new")] == [
        "reserve ck-new",
        "fraud_check ck-new",
        "charge ck-new",
    ]
    assert "patched" in kinds(daemon, "ck-new") and "patched" not in kinds(daemon, "ck-pay")
    code, report = check(daemon, "ck_orders_fraud")
    assert (code, report["checked"]) == (0, 0), "no active run is left to break"


def test_check_refuses_a_module_it_cannot_load_and_a_type_it_defines(daemon):
    res = run_grctl("check", "flows.no_such_module", home=daemon.home)
    assert res.code == 1 and "not found" in res.err, str(res)
    res = run_grctl("check", "flows.ck_orders", "--type", "CkOrder", home=daemon.home)
    assert res.code == 2 and "--type" in res.err, str(res)


def test_check_breaks_every_active_run_of_a_type_no_longer_defined(daemon, workers):
    w = workers("flows.ck_orders")
    start(daemon, "CkOrder", "ck-gone", {"mode": "wait"})
    wait_until(lambda: describe(daemon, "ck-gone").status.value == "waiting")
    w.stop()
    code, report = check(daemon, "seed_001_basic", "--type", "CkOrder")
    assert code == 1 and set(breaking(report)) == {"ck-gone"}, report
    assert "no longer defined" in breaking(report)["ck-gone"]


def test_the_run_check_names_does_break_when_the_unguarded_change_ships(daemon, workers, ledger):
    w = workers("flows.ck_orders")
    start(daemon, "CkOrder", "ck-pay", {"mode": "pay"})
    wait_reached(ledger, "ck-pay-paid")
    w.kill9()
    code, report = check(daemon, "ck_orders_fraud")
    assert code == 1 and set(breaking(report)) == {"ck-pay"}, report
    release(daemon, "ck-pay-paid")
    workers("flows.ck_orders_fraud")
    details = failure(daemon, "ck-pay")
    assert details["details"]["cause"] == "NonDeterminismError", details
    assert "operation #1" in details["message"], details
    assert "fraud_check ck-pay" not in read_ledger(ledger), "the replay stopped before it"
