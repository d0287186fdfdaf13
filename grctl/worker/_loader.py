"""Import workflow modules by path and collect their Workflow objects.

A module that does not exist is told apart from a module that raised while importing
(uvicorn's importer does the same), because the fixes differ.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

from grctl.errors import ModuleLoadError, WorkflowDefinitionError
from grctl.workflow import Workflow


def load_workflows(modules: list[str]) -> list[Workflow]:
    """Every Workflow defined in these modules, each validated; raises ModuleLoadError."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    found: list[Workflow] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                raise ModuleLoadError(
                    f"workflow module {name!r} not found (looked on sys.path, which starts with "
                    f"{cwd}); give an import path such as 'myapp.flows', not a file path"
                ) from None
            raise ModuleLoadError(
                f"workflow module {name!r} failed to import: {exc}{_where()}"
            ) from None
        except WorkflowDefinitionError as exc:
            raise ModuleLoadError(f"workflow module {name!r}: {exc}") from None
        except Exception as exc:
            raise ModuleLoadError(
                f"workflow module {name!r} raised {type(exc).__name__} while importing: {exc}"
                f"{_where()}"
            ) from None
        mine = [v for v in vars(module).values() if isinstance(v, Workflow)]
        if not mine:
            raise ModuleLoadError(
                f"workflow module {name!r} defines no Workflow; create one with "
                "Workflow(workflow_type=...) at module level"
            )
        for wf in mine:
            if all(wf is not other for other in found):
                found.append(wf)
    for wf in found:
        wf.validate()
    return found


def _where() -> str:
    """Where the import broke, as `` (at FILE:LINE)``: one line, so the CLI prints no traceback."""
    exc = sys.exc_info()[1]
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" (at {exc.filename}:{exc.lineno})"
    frames = [f for f in traceback.extract_tb(sys.exc_info()[2]) if not f.filename.startswith("<")]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
