"""``grctl check``'s judgement: one run, as the daemon describes it, against the new definitions.

Pure: the command reads the runs (``WorkflowHandle.inspect``) and the module, this says what
the new code would do to each. A finding ``breaks`` when the run cannot go on under the new
code (its step, event handler or timeout step is gone, an event in its inbox has no handler,
its in-flight step would not replay its recorded operations, its waiting run may receive an
event whose handler was removed); it is a ``warning`` when only something outside the run
would be refused (a removed query) or the check could not look (a step whose source cannot
be read, more records than it compares).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grctl.versioning import Op, operations, replays
from grctl.workflow import Workflow

BREAKS = "breaks"
WARNING = "warning"
MAX_RECORDS = 10_000  # an in-flight step with more operations than this is not compared


@dataclass(frozen=True)
class Finding:
    """One reason: ``level`` is ``breaks`` or ``warning``."""

    level: str
    why: str


@dataclass
class RunCheck:
    """One active run and what the new code would do to it (no findings: nothing)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    step_name: str | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def breaks(self) -> bool:
        return any(f.level == BREAKS for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "workflow_type": self.workflow_type,
            "status": self.status,
            "step_name": self.step_name,
            "verdict": BREAKS if self.breaks else WARNING,
            "reasons": [{"level": f.level, "why": f.why} for f in self.findings],
        }


def judge(run: dict[str, Any], records: list[dict[str, Any]], wf: Workflow | None) -> RunCheck:
    """What the new definition ``wf`` (None: the module no longer defines the type) does to ``run``.

    ``run`` is an ``inspect`` reply; ``records`` its in-flight step's records, all pages (or
    more than MAX_RECORDS of them: not compared).
    """
    check = RunCheck(
        run["workflow_id"],
        run["run_id"],
        run["workflow_type"],
        run["status"],
        run.get("step_name"),
    )
    found = check.findings
    if run["status"] not in ("running", "waiting"):
        return check  # it ended between the listing and this look: nothing to break

    def breaks(why: str) -> None:
        found.append(Finding(BREAKS, why))

    if wf is None:
        breaks(
            f"workflow type {run['workflow_type']!r} is no longer defined, so no worker would "
            "run it; keep the type until its runs end, or cancel them"
        )
        return check
    kind, step = run.get("handler_kind"), run.get("step_name")
    deployed = run.get("deployed") or {}
    if run["status"] == "running":
        if kind == "step" and step not in wf.steps:
            breaks(
                f"its next step is {step!r}, which the new code does not define (renamed or "
                f"removed); keep a step named {step!r} until no run is at it"
            )
        elif kind == "event" and step not in wf.events:
            breaks(
                f"it is handling event {step!r}, whose handler the new code removed; keep the "
                "handler until no run is in it"
            )
        elif records:
            _compare(check, wf, kind or "step", step or "", records)
    if run["status"] == "waiting" and kind == "child":
        if step not in wf.steps:  # wait_for_child: the child's end wakes the run at this step
            breaks(
                f"it waits for a child and then runs step {step!r}, which the new code does "
                f"not define; keep a step named {step!r} until no run waits for its child"
            )
    elif run["status"] == "waiting":
        timeout_step = run.get("wait_timeout_step")
        if timeout_step and timeout_step not in wf.steps:
            breaks(
                f"its wait times out into step {timeout_step!r}, which the new code does not "
                "define; keep that step until no run waits on it"
            )
        removed = sorted(set(deployed.get("events", ())) - set(wf.events))
        if removed:
            breaks(
                f"it waits for events and may receive {_names(removed)}, whose handler the new "
                "code removed (sending it would be refused); keep the handler until no run "
                "waits for it"
            )
        elif not wf.events and not timeout_step:
            breaks("it waits for an event, and the new code handles none")
    pending = sorted(set(run.get("pending_events") or ()) - set(wf.events))
    if pending:
        breaks(
            f"{_names(pending)} in its inbox has no handler in the new code; keep the handler "
            "until the run has taken the event"
        )
    gone = sorted(set(deployed.get("queries", ())) - set(wf.queries))
    if gone:
        found.append(
            Finding(WARNING, f"{_names(gone, 'query')} removed: asking it would be refused")
        )
    return check


def _compare(
    check: RunCheck, wf: Workflow, kind: str, step: str, records: list[dict[str, Any]]
) -> None:
    where = f"step {step!r}" if kind == "step" else f"{kind} handler {step!r}"
    if len(records) > MAX_RECORDS:
        check.findings.append(
            Finding(
                WARNING,
                f"{where} has recorded {len(records)} operations, more than the {MAX_RECORDS} "
                "the check compares; its replay was not checked",
            )
        )
        return
    fn = wf.handler(kind, step)
    pattern = operations(fn) if fn is not None else None
    if pattern is None:
        check.findings.append(
            Finding(WARNING, f"the source of {where} cannot be read; its replay was not checked")
        )
        return
    ops = [Op(r["kind"], r.get("name", "")) for r in records]
    result = replays(ops, pattern)
    if result.ok:
        return
    check.findings.append(
        Finding(
            BREAKS,
            f"{where} is mid-way ({len(ops)} operations recorded) and its replay would fail: "
            f"{result.why()}; guard the new code with 'if await ctx.patched(\"...\")'",
        )
    )


def _names(names: list[str], word: str = "event") -> str:
    quoted = ", ".join(repr(n) for n in names)
    plural = word[:-1] + "ies" if word.endswith("y") else word + "s"
    return f"{word} {quoted}" if len(names) == 1 else f"{plural} {quoted}"


__all__ = ["BREAKS", "MAX_RECORDS", "WARNING", "Finding", "RunCheck", "judge"]
