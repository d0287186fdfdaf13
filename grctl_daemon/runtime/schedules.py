"""Schedules: durable cron schedules that start runs, driven by the timer heap.

A schedule is a row of ``schedules`` (``storage.base.ScheduleRecord``) in the partition of its
name; only that partition's owner arms and fires it, and the runs it starts live in the same
partition, so that one unit holds both halves of a fire:

- the new run (``InsertRun`` and its first step), or, when ``overlap`` is ``skip`` and the
  schedule's last run is still active, a recorded skip instead;
- the schedule's row with its next fire time moved on.

So a fire is never lost or doubled across a crash: either both are durable or neither is. The
next fire time is a timer on the heap (key ``(TIMER_PREFIX + name, TIMER_KIND)``, token the due
time), armed at start-up, when a partition is gained and after each change; a timer whose
schedule was paused, deleted or moved on finds a different token in the row and does nothing.
The next fire time is computed from *now*, so slots missed while the daemon was down collapse
into one fire at start-up.

Every change to a schedule is serialised by one lock (schedules change rarely): read the row,
decide, commit, then arm or cancel the timer once the unit is durable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from ulid import ULID

from grctl import protocol as p
from grctl.errors import (
    GrctlError,
    InvalidInputError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    StorageUnavailableError,
    WorkflowAlreadyRunningError,
)
from grctl.models.run import ACTIVE_STATUSES
from grctl_daemon.engine.decide import Start, decide
from grctl_daemon.storage import base as rec
from grctl_daemon.storage.base import partition_of
from grctl_daemon.timers import now_ms

if TYPE_CHECKING:
    from grctl_daemon.runtime import Runtime

log = logging.getLogger("grctl.daemon")

TIMER_PREFIX = "schedule:"  # the heap's key for a schedule's next fire: never a run id (ULID)
TIMER_KIND = "schedule"
OVERLAPS = ("skip", "allow")
DEFAULT_TIMEZONE = "UTC"


def parse_cron(expr: str, zone: str) -> tuple[str, ZoneInfo]:
    """Validate a cron expression and zone; the normalised expression and the zone.

    Five fields (minute hour day month weekday), or six with seconds first
    (``*/10 * * * * *``: every ten seconds). Raises InvalidInputError naming the culprit.
    """
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(
            f"unknown time zone {zone!r}; use an IANA name such as UTC, Europe/Paris or "
            "America/New_York"
        ) from None
    expr = " ".join(expr.split())
    fields = len(expr.split(" "))
    if fields not in (5, 6) or not croniter.is_valid(expr, second_at_beginning=True):
        raise InvalidInputError(
            f"invalid cron expression {expr!r}; use five fields (minute hour day-of-month month "
            "day-of-week, e.g. '0 3 * * *' for 03:00 daily) or six with seconds first "
            "(e.g. '*/10 * * * * *')"
        )
    return expr, tz


def next_fire_ms(cron: str, zone: str, after_ms: int) -> int:
    """The first fire time of ``cron`` in ``zone`` strictly after ``after_ms``."""
    expr, tz = parse_cron(cron, zone)
    start = datetime.fromtimestamp(after_ms / 1000, tz)
    try:
        nxt = croniter(expr, start, second_at_beginning=True).get_next(datetime)
    except CroniterError as exc:  # e.g. '0 0 30 2 *': a date that never comes
        raise InvalidInputError(f"cron expression {expr!r} never fires: {exc}") from None
    return int(nxt.timestamp() * 1000)


def fire_id(name: str, fire_ms: int) -> str:
    """The workflow_id of a fire: ``NAME-2026-12-05T03:00:00Z`` (UTC, to the second)."""
    at = datetime.fromtimestamp(fire_ms // 1000, UTC)
    return f"{name}-{at.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def wire(s: rec.ScheduleRecord) -> dict[str, Any]:
    """A schedule as clients see it (times in ms; the CLI shows them as ISO-8601)."""
    return {
        "name": s.name,
        "workflow_type": s.workflow_type,
        "cron": s.cron,
        "timezone": s.timezone,
        "input": p.packed(s.input),
        "overlap": s.overlap,
        "paused": s.paused,
        "next_fire_ms": None if s.paused else s.next_fire_ms,
        "last_fire_ms": s.last_fire_ms,
        "last_workflow_id": s.last_workflow_id,
        "last_run_id": s.last_run_id,
        "skips": s.skips,
        "last_skip_ms": s.last_skip_ms,
        "created_ms": s.created_ms,
        "updated_ms": s.updated_ms,
    }


class Schedules:
    """The schedule half of the Runtime (a mixin: see ``runtime/__init__.py``)."""

    _schedule_lock: asyncio.Lock

    # -- arming ---------------------------------------------------------------------------------

    async def arm_schedules(self: Runtime, partitions: frozenset[int]) -> None:
        """Arm the next fire of every active schedule of ``partitions`` (start-up, takeover)."""
        for s in await self.storage.load_schedules(partitions):
            self._arm_schedule(s)

    def _arm_schedule(self: Runtime, s: rec.ScheduleRecord) -> None:
        if s.paused:
            self.timers.cancel(TIMER_PREFIX + s.name, TIMER_KIND)
        else:
            self.timers.arm(TIMER_PREFIX + s.name, TIMER_KIND, s.next_fire_ms, str(s.next_fire_ms))

    def on_schedule_timer(self: Runtime, key: str, token: str) -> None:
        self.spawn(self._scheduled_fire(key.removeprefix(TIMER_PREFIX), int(token)))

    async def _scheduled_fire(self: Runtime, name: str, due_ms: int) -> None:
        async with self._schedule_lock:
            if not self.owns(partition_of(name)):
                return  # handed over: the new owner armed it
            s = await self.storage.get_schedule(name)
            if not self.owns(partition_of(name)):
                return
            if s is None or s.paused or s.next_fire_ms != due_ms:
                return  # deleted, paused or moved on since this timer was armed
            try:
                await self._fire_schedule(s, due_ms, advance=True)
            except GrctlError as exc:
                log.warning("schedule %r could not fire: %s", name, exc)

    async def _fire_schedule(
        self: Runtime, s: rec.ScheduleRecord, fire_ms: int, advance: bool
    ) -> dict[str, Any]:
        """Start a run for the fire at ``fire_ms`` (or record a skip), with the row, as one unit.

        ``advance``: move the next fire time on (a scheduled fire; ``trigger`` leaves it).
        """
        now = now_ms()
        new = dataclasses.replace(s, updated_ms=now)
        if advance:
            # From now, not from the slot: slots missed while down collapse into this one fire.
            new.next_fire_ms = next_fire_ms(s.cron, s.timezone, max(now, fire_ms))
        workflow_id = fire_id(s.name, fire_ms)
        outcome: dict[str, Any] = {"name": s.name, "fire_ms": fire_ms, "workflow_id": workflow_id}
        if s.overlap == "skip" and await self._last_run_active(s):
            new.skips += 1
            new.last_skip_ms = fire_ms
            await self.commit_schedule(rec.SaveSchedule(new))
            log.info("schedule %r skipped a fire: run %s is still active", s.name, s.last_run_id)
            self._arm_schedule(new)
            return {**outcome, "skipped": True, "run_id": None, "active_run_id": s.last_run_id}
        run_id = str(ULID())
        start = Start(
            self.types.get(s.workflow_type),
            s.workflow_type,
            workflow_id,
            run_id,
            s.input,
            fault=self.fault(),
            known_types=self.types.keys(),
            partition=s.partition,
        )
        d = decide(self.cache.latest(workflow_id), start, now)
        if d.error is None:
            new.last_fire_ms = fire_ms
            new.last_workflow_id = workflow_id
            new.last_run_id = run_id
            d.ops.append(rec.SaveSchedule(new))
            try:
                await self.commit(d)
            except rec.UnitRefused:
                d.error = WorkflowAlreadyRunningError(
                    f"workflow {workflow_id!r} is already running (schedule {s.name!r} fired "
                    "twice in one second?); wait a second and trigger again",
                    workflow_id=workflow_id,
                )
        if d.error is not None:
            if advance:  # the slot passes all the same, or the timer would fire at once again
                new = dataclasses.replace(s, updated_ms=now, next_fire_ms=new.next_fire_ms)
                await self.commit_schedule(rec.SaveSchedule(new))
                self._arm_schedule(new)
            raise d.error
        self._arm_schedule(new)
        return {**outcome, "skipped": False, "run_id": run_id}

    async def _last_run_active(self: Runtime, s: rec.ScheduleRecord) -> bool:
        if s.last_run_id is None or s.last_workflow_id is None:
            return False
        held = self.cache.get(s.last_run_id)
        if held is not None:
            return held.is_active
        found = await self.storage.find_run(s.last_workflow_id, s.last_run_id)
        return found is not None and found.status in ACTIVE_STATUSES

    # -- requests -------------------------------------------------------------------------------

    async def _schedule(self: Runtime, name: str) -> rec.ScheduleRecord:
        self.check_owned(partition_of(name))
        s = await self.storage.get_schedule(name)
        self.check_owned(partition_of(name))  # still ours after the read
        if s is None:
            raise ScheduleNotFoundError(
                f"schedule {name!r} not found; list schedules with: grctl schedule list"
            )
        return s

    async def create_schedule(self: Runtime, m: p.CreateSchedule) -> dict[str, Any]:
        self.check_owned(partition_of(m.name))
        if not m.name or any(c.isspace() for c in m.name):
            raise InvalidInputError(f"schedule name {m.name!r} must be non-empty, without spaces")
        if m.overlap not in OVERLAPS:
            raise InvalidInputError(f"overlap {m.overlap!r} must be one of: skip, allow")
        cron, _ = parse_cron(m.cron, m.timezone)
        self.tdef(m.workflow_type)  # refused now, not at the first fire
        async with self._schedule_lock:
            if await self.storage.get_schedule(m.name) is not None:
                raise ScheduleExistsError(
                    f"schedule {m.name!r} exists already; to replace it: grctl schedule delete "
                    f"{m.name}, then create it again"
                )
            now = now_ms()
            s = rec.ScheduleRecord(
                name=m.name,
                workflow_type=m.workflow_type,
                cron=cron,
                timezone=m.timezone,
                input=p.unwrap(m.workflow_input),
                overlap=m.overlap,
                paused=False,
                next_fire_ms=next_fire_ms(cron, m.timezone, now),
                created_ms=now,
                updated_ms=now,
                partition=partition_of(m.name),
            )
            await self.commit_schedule(rec.SaveSchedule(s))
            self._arm_schedule(s)
            return wire(s)

    async def describe_schedule(self: Runtime, m: p.DescribeSchedule) -> dict[str, Any]:
        s = await self.storage.get_schedule(m.name)  # any member can read it
        if s is None:
            raise ScheduleNotFoundError(
                f"schedule {m.name!r} not found; list schedules with: grctl schedule list"
            )
        out = wire(s)
        last = None
        if s.last_run_id and s.last_workflow_id:
            last = await self.storage.find_run(s.last_workflow_id, s.last_run_id)
        out["last_status"] = last.status if last is not None else None
        return out

    async def list_schedules(self: Runtime, m: p.ListSchedules) -> dict[str, Any]:
        return {"schedules": [wire(s) for s in await self.storage.load_schedules()]}

    async def pause_schedule(self: Runtime, m: p.PauseSchedule) -> dict[str, Any]:
        return await self._set_paused(m.name, True)

    async def resume_schedule(self: Runtime, m: p.ResumeSchedule) -> dict[str, Any]:
        return await self._set_paused(m.name, False)

    async def _set_paused(self: Runtime, name: str, paused: bool) -> dict[str, Any]:
        async with self._schedule_lock:
            s = await self._schedule(name)
            now = now_ms()
            new = dataclasses.replace(s, paused=paused, updated_ms=now)
            if not paused and s.paused:  # fires missed while paused are not made up
                new.next_fire_ms = next_fire_ms(s.cron, s.timezone, now)
            await self.commit_schedule(rec.SaveSchedule(new))
            self._arm_schedule(new)
            return wire(new)

    async def trigger_schedule(self: Runtime, m: p.TriggerSchedule) -> dict[str, Any]:
        async with self._schedule_lock:
            s = await self._schedule(m.name)
            return await self._fire_schedule(s, now_ms() // 1000 * 1000, advance=False)

    async def delete_schedule(self: Runtime, m: p.DeleteSchedule) -> dict[str, Any]:
        async with self._schedule_lock:
            s = await self._schedule(m.name)
            await self.commit_schedule(rec.RemoveSchedule(s))
            self.timers.cancel(TIMER_PREFIX + s.name, TIMER_KIND)
            return {"name": s.name, "deleted": True}

    async def commit_schedule(self: Runtime, op: rec.Op) -> None:
        """Commit one schedule change on its own and wait until it is durable."""
        try:
            await self.storage.commit([op])
        except rec.CommitFailed as exc:
            raise StorageUnavailableError(
                f"the daemon's database failed a commit ({exc}); the daemon is stopping. "
                "Restart it with: grctl daemon start"
            ) from None
