"""How input and payloads become handler arguments, shared by the worker and the daemon.

A dict is unpacked as keyword arguments, ``None`` means no argument, and any other value is
passed as one positional argument, which only a handler with exactly one parameter (after the
context) accepts: with more, which one it lands on would be a guess. The daemon checks the binding against the parameters a
worker registered, so a mismatch is refused at ``start``/``send`` instead of failing a step.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from typing import Any


def describe_params(fn: Any, skip: Collection[str] | None = None) -> list[list[Any]]:
    """The handler's parameters after the context, as ``[name, kind, has_default]`` rows.

    ``skip`` names parameters the worker fills itself (Resources): no input binds to them.
    """
    params = list(inspect.signature(fn).parameters.values())[1:]
    return [
        [prm.name, prm.kind.name, prm.default is not inspect.Parameter.empty]
        for prm in params
        if not skip or prm.name not in skip
    ]


def split_args(value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if value is None:
        return (), {}
    if isinstance(value, dict):
        return (), {str(k): v for k, v in value.items()}
    return (value,), {}


def _signature(params: list[list[Any]]) -> inspect.Signature:
    return inspect.Signature(
        [
            inspect.Parameter(
                name,
                inspect._ParameterKind[kind],
                default=None if has_default else inspect.Parameter.empty,
            )
            for name, kind, has_default in params
        ]
    )


def binding_error(params: list[list[Any]], value: Any) -> str | None:
    """Why ``value`` cannot be bound to a handler with these parameters, or ``None`` if it can."""
    args, kwargs = split_args(value)
    wanted = ", ".join(name for name, _, _ in params) or "no arguments"
    if args and len(params) != 1:
        example = ", ".join(f'"{name}": ...' for name, _, _ in params)
        return (
            f"a value that is not an object binds to a handler with exactly one parameter, "
            f"and this one takes {wanted}"
            + (f": give an object of them, such as {{{example}}}" if params else "")
        )
    try:
        _signature(params).bind(*args, **kwargs)
    except TypeError as exc:
        return f"{exc} (the handler takes: {wanted})"
    return None
