"""A workflow module that raises while importing: ``grctl worker`` must say so in one line."""

from grctl.workflow import Workflow

broken = Workflow(workflow_type="GdBroken")

raise RuntimeError("gd_broken fails on purpose while importing")
