"""Child workflows: the parent is told through an event when its child ends."""

import pytest

pytestmark = pytest.mark.backends


def test_parent_gets_completion_event(daemon, workers):
    workers("flows.lead_children")
    result = daemon.call(lambda c: _run(c, "p-1", {"n": 21}))
    assert result == {"child": "p-1-child", "status": "completed", "result": 42, "same_run": True}
    failed = daemon.call(lambda c: _run(c, "p-2", {"n": -1}))
    assert failed["status"] == "failed" and failed["result"] is None


async def _run(c, workflow_id, inp):
    handle = await c.start_workflow("LeadParent", workflow_id, inp)
    return await handle.result(timeout=15)
