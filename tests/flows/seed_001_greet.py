"""Seed 001 (Events), "Processing Multiple Events", with distinct names.

As written, the seed binds both the workflow and its event handler to ``greet``, so the second
``def`` rebinds the name (see seed_001_greet_verbatim). Here the workflow variable is
``greet_events``; the handlers, and so the event names, are as documented.
"""

from grctl.models import Directive
from grctl.worker.context import Context
from grctl.worker.task import task
from grctl.workflow import Workflow


@task
async def call_greeting_api(name: str) -> str:
    return f"Hello, {name}!"


@task
async def call_farewell_api(name: str) -> str:
    return f"Goodbye, {name}!"


greet_events = Workflow(workflow_type="GreetEvents")


@greet_events.start()
async def start(ctx: Context, name: str) -> Directive:
    ctx.store.put("name", name)
    return ctx.next.wait_for_event()


@greet_events.event()
async def greet(ctx: Context) -> Directive:
    name = await ctx.store.get("name")
    greeting = await call_greeting_api(name)
    ctx.store.put("message", greeting)
    return ctx.next.wait_for_event()  # wait for the next event


@greet_events.event()
async def farewell(ctx: Context) -> Directive:
    name = await ctx.store.get("name")
    result = await call_farewell_api(name)
    return ctx.next.complete(result)
