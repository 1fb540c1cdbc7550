"""Option groups: a dataclass of Typer options declared once and taken whole by every command that needs it.

    @app.command()
    @grouped
    def generate(prompt: ..., sampler: SamplerOptions, load: LoadOptions, debug: DebugOpt = False): ...

Typer reads a command's signature; :func:`grouped` gives it one in which each parameter typed as a group dataclass
stands expanded into the group's fields (their ``Annotated`` Typer options and defaults), and calls the command
with the fields packed back into one instance of the group. The ``--help`` lists the options where the group stands.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable


def grouped(command: Callable) -> Callable:
    """``command`` with every parameter typed as a dataclass expanded into that dataclass's fields as options."""
    hints = typing.get_type_hints(command, include_extras=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[str]]] = {}
    for p in inspect.signature(command).parameters.values():
        kind = hints.get(p.name)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            fields = _group_fields(kind)
            params += fields
            groups[p.name] = (kind, [f.name for f in fields])
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation)))
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise TypeError(f"{command.__name__}: option {', '.join(twice)} is declared twice (a group repeats it)")

    @functools.wraps(command)
    def run(**kwargs):
        """Typer passes every option; a Python caller may pass some (the others keep their defaults)."""
        for name, (kind, fields) in groups.items():
            kwargs[name] = kind(**{f: kwargs.pop(f) for f in fields if f in kwargs})
        return command(**kwargs)

    run.__signature__ = inspect.Signature(params)
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


def _group_fields(kind: type) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(kind, include_extras=True)
    return [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
        for f in dataclasses.fields(kind)
    ]
