"""LlamaIndex workflows (in memory): the chain, latency and event workloads.

Run in bench/.peers-venv: ``python llama_bench.py --workload chain``; prints one JSON line.

How the workloads map: a grctl step is one @step invocation here; the chain's step reads, bumps
and writes ``ctx.store`` and emits the event that triggers the next invocation (as grctl's
``bump`` returns ``ctx.next.step(bump)``), the last one returns StopEvent. Nothing is durable:
the state lives in memory, which is the overhead floor a durable engine is compared with. The
event is ``handler.ctx.send_event`` to a step blocked in ``ctx.wait_for_event``.
"""

from __future__ import annotations

import asyncio
import time
from importlib.metadata import version

import _common
from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

READY: dict[int, asyncio.Event] = {}


class ChainStart(StartEvent):
    steps: int


class Bump(Event):
    pass


class Go(Event):
    value: int


class WaiterStart(StartEvent):
    key: int


class ChainFlow(Workflow):
    @step
    async def bump(self, ctx: Context, ev: ChainStart | Bump) -> Bump | StopEvent:
        if isinstance(ev, ChainStart):
            await ctx.store.set("steps", ev.steps)
        i = await ctx.store.get("i", default=0) + 1
        await ctx.store.set("i", i)
        if i >= await ctx.store.get("steps"):
            return StopEvent(result=i)
        return Bump()


class EventFlow(Workflow):
    @step
    async def wait(self, ctx: Context, ev: WaiterStart) -> StopEvent:
        READY[ev.key].set()
        go = await ctx.wait_for_event(Go, waiter_id=f"go-{ev.key}", timeout=120)
        return StopEvent(result=go.value)


async def main() -> None:
    args = _common.parse_args()
    chain = ChainFlow(timeout=600)
    waiter = EventFlow(timeout=600)
    await chain.run(start_event=ChainStart(steps=args.steps))  # warm up
    if args.workload == "chain":

        async def one_run(i: int) -> int:
            return await chain.run(start_event=ChainStart(steps=args.steps))

        metrics = await _common.chain(one_run, args.runs, args.steps)
    elif args.workload == "latency":

        async def timed_run(i: int) -> float:
            t0 = time.perf_counter()
            assert await chain.run(start_event=ChainStart(steps=args.steps)) == args.steps
            return time.perf_counter() - t0

        metrics = await _common.sampled(timed_run, args.samples, args.budget_s)
    else:

        async def timed_event(i: int) -> float:
            READY[i] = asyncio.Event()
            handler = waiter.run(start_event=WaiterStart(key=i))
            await READY[i].wait()
            await asyncio.sleep(0.002)  # let the step reach wait_for_event
            t0 = time.perf_counter()
            handler.ctx.send_event(Go(value=i))
            assert await handler == i
            return time.perf_counter() - t0

        metrics = await _common.sampled(timed_event, args.samples, args.budget_s)
    _common.emit("llama-workflows", version("llama-index-workflows"), args.workload, metrics)


if __name__ == "__main__":
    asyncio.run(main())
