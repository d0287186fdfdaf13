"""Import typer's help renderer without the rich modules the CLI never uses (~35 ms a command).

``typer.rich_utils`` (imported for every help screen and usage error) imports ``rich.markdown``
(markdown_it) and ``rich.traceback`` (pygments) at module level, but uses ``Markdown`` only with
``rich_markup_mode="markdown"`` and ``Traceback`` only for pretty exceptions; grctl uses
neither. ``install()`` puts a finder on ``sys.meta_path`` that, when typer imports
``typer.rich_utils``, lets it bind stand-ins for those two names: each imports the real class
on first use (a call or an attribute), so a typer that does use them still works, only the
import moves to that first use. Nothing else is changed: the stand-in modules are only in
``sys.modules`` while ``typer.rich_utils`` runs, and any later ``import rich.markdown`` gets the
real module.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import Any

# module -> the names typer.rich_utils imports from it
DEFERRED = {"rich.markdown": "Markdown", "rich.traceback": "Traceback"}
TARGET = "typer.rich_utils"


class _Deferred(type):
    """Metaclass of a stand-in: calls and attribute reads go to the real class, imported then."""

    _module: str
    _name: str

    def _real(cls) -> Any:
        return getattr(importlib.import_module(cls._module), cls._name)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._real()(*args, **kwargs)

    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(cls._real(), attr)


class _Loader:
    """The real loader of ``typer.rich_utils``, run with the stand-ins in ``sys.modules``."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        placed = {}
        for mod_name, attr in DEFERRED.items():
            if mod_name in sys.modules:
                continue  # already imported for real: typer binds the real class
            stand_in = types.ModuleType(mod_name)
            setattr(stand_in, attr, _Deferred(attr, (), {"_module": mod_name, "_name": attr}))
            placed[mod_name] = sys.modules[mod_name] = stand_in
        try:
            self._loader.exec_module(module)
        finally:
            for mod_name, stand_in in placed.items():
                if sys.modules.get(mod_name) is stand_in:
                    del sys.modules[mod_name]


class _Finder:
    """A ``sys.meta_path`` finder for ``typer.rich_utils`` only (no importlib.abc: ~2 ms)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        sys.meta_path.remove(self)  # once is enough; and lets the lookup below not see us
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Make the next import of ``typer.rich_utils`` defer ``rich.markdown``/``rich.traceback``."""
    if TARGET not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
