"""Seed 001 (Events), "Processing Multiple Events", exactly as written — it cannot run.

``async def greet`` rebinds the name of the ``greet`` workflow, so the next ``@greet.event()``
would decorate a function. grctl refuses this at import with a WorkflowDefinitionError.
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


# fmt: off
greet = Workflow(workflow_type="GreetEvents")

@greet.start()
async def start(ctx: Context, name: str) -> Directive:
    ctx.store.put("name", name)
    return ctx.next.wait_for_event()

@greet.event()
async def greet(ctx: Context) -> Directive:
    name = await ctx.store.get("name")
    greeting = await call_greeting_api(name)
    ctx.store.put("message", greeting)
    return ctx.next.wait_for_event() # wait for the next event

@greet.event()
async def farewell(ctx: Context) -> Directive:
    name = await ctx.store.get("name")
    result = await call_farewell_api(name)
    return ctx.next.complete(result)
# fmt: on
