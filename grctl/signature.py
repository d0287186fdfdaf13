"""How input and payloads become handler arguments, shared by the worker and the daemon.

A dict is unpacked as keyword arguments, ``None`` means no argument, and any other value is
passed as one positional argument. The daemon checks the binding against the parameters a
worker registered, so a mismatch is refused at ``start``/``send`` instead of failing a step.
"""

from __future__ import annotations

import inspect
from typing import Any


def describe_params(fn: Any) -> list[list[Any]]:
    """The handler's parameters after the context, as ``[name, kind, has_default]`` rows."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    return [[prm.name, prm.kind.name, prm.default is not inspect.Parameter.empty] for prm in params]


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
    try:
        _signature(params).bind(*args, **kwargs)
    except TypeError as exc:
        wanted = ", ".join(name for name, _, _ in params) or "no arguments"
        return f"{exc} (the handler takes: {wanted})"
    return None
