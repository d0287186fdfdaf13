"""The shortest path through the real daemon and a real worker process."""

import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.backends


def test_start_send_result_query_history(daemon, workers):
    workers("flows.basic")
    handle = daemon.call(lambda c: c.start_workflow("BasicOrder", "o-1", {"order_id": "1"}))
    assert handle.workflow_id == "o-1" and len(handle.run_id) == 26

    async def waiting(c):
        return (await c.get_workflow_handle("o-1").describe()).status.value == "waiting"

    wait_until(lambda: daemon.call(waiting), message="run waiting")
    daemon.call(lambda c: c.get_workflow_handle("o-1").send("approve"))
    assert daemon.call(lambda c: c.get_workflow_handle("o-1").result(timeout=10)) == {
        "txn": "txn-1"
    }
    assert daemon.call(lambda c: c.get_workflow_handle("o-1").query("status")) == "approved"
    kinds = [ev.kind for ev in daemon.call(lambda c: c.get_workflow_handle("o-1").history())]
    assert kinds[0] == "workflow_started" and kinds[-1] == "workflow_completed"
    assert "task_completed" in kinds
