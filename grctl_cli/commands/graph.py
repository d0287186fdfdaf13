"""``grctl graph MODULE[:TYPE]``: draw each workflow's steps, events and transitions (no daemon).

The graph is the one the worker's start-up check reads (``Workflow.graph()``, used by
``Workflow.validate()``), and the module is loaded by the worker's loader, with its errors.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from grctl.errors import WorkflowDefinitionError
from grctl_cli.options import JsonOpt, complete_module


class GraphFormat(StrEnum):
    """How ``grctl graph`` draws: a tree for the terminal, or source for docs and Graphviz."""

    TEXT = "text"
    MERMAID = "mermaid"
    DOT = "dot"


def graph(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE[:TYPE]",
            help="Import path of a workflow module, e.g. myapp.flows; :TYPE keeps one workflow type.",
            autocompletion=complete_module,
        ),
    ],
    fmt: Annotated[
        GraphFormat,
        typer.Option(
            "--format",
            "-f",
            help="text: a tree in the terminal; mermaid: a flowchart for docs; dot: Graphviz.",
        ),
    ] = GraphFormat.TEXT,
    json_: JsonOpt = False,
) -> None:
    """Draw each workflow's steps, events and the transitions between them.

    The graph comes from the check a worker runs at start, so a module the worker would refuse
    is refused here with the same message. No daemon is needed. The current directory is on
    the import path.

    Example: grctl graph myapp.flows:ProcessOrder --format mermaid
    """
    from grctl.worker._loader import load_workflows  # imports the module: only when run
    from grctl_cli import render_graph

    module, _, workflow_type = target.partition(":")
    workflows = load_workflows([module])
    if workflow_type:
        known = [wf.workflow_type for wf in workflows]
        workflows = [wf for wf in workflows if wf.workflow_type == workflow_type]
        if not workflows:
            raise WorkflowDefinitionError(
                f"module {module!r} defines no workflow type {workflow_type!r}; it defines "
                f"{', '.join(sorted(known))} (use one of them after the colon, or leave :TYPE out)"
            )
    graphs = [wf.graph() for wf in workflows]
    if json_:
        render_graph.as_json(graphs)
    elif fmt is GraphFormat.MERMAID:
        render_graph.mermaid(graphs)
    elif fmt is GraphFormat.DOT:
        render_graph.dot(graphs)
    else:
        render_graph.tree(graphs)
