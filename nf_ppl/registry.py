"""One registry of flow builders by name, read by ``inference.build_flow``, ``inference.load``,
``AutoFlow`` and the ``nf-ppl fit`` CLI.

A builder is ``fn(key, dim, **options) -> Flow``.  The package's own vector builders (``maf``,
``iaf``, ``realnvp``, ``nsf``, ``spline_coupling``, ``bnaf``, ``naf``) register themselves at the
bottom of the module that defines them; a user's builder is registered the same way
(``register_builder("mine", fn)``, or ``@register_builder("mine")`` as a decorator) and is then
usable by name everywhere, including saving and loading (``inference.save`` records the name and
options).
"""

from __future__ import annotations

from typing import Callable

__all__ = ["BUILDERS", "builders", "get_builder", "register_builder"]

BUILDERS: dict[str, Callable] = {}  # name -> builder; the one table (``nf_ppl.BUILDERS`` is this dict)


def register_builder(name: str, fn: Callable | None = None):
    """Make ``fn(key, dim, **options) -> Flow`` available by ``name``.

    ``register_builder(name, fn)`` registers and returns ``fn``; ``@register_builder(name)`` does
    the same as a decorator.  A later registration under the same name replaces the earlier one.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"builder name must be a non-empty string; got {name!r}")

    def register(builder):
        if not callable(builder):
            raise TypeError(f"builder {name!r} must be callable; got {type(builder).__name__}")
        BUILDERS[name] = builder
        return builder

    return register if fn is None else register(fn)


def builders() -> dict[str, Callable]:
    """Every builder usable by name (a copy of the registry)."""
    return dict(BUILDERS)


def get_builder(name: str) -> Callable:
    """The builder registered as ``name``; a ``ValueError`` lists the valid names otherwise."""
    if not isinstance(name, str) or name not in BUILDERS:
        raise ValueError(f"unknown flow {name!r}; valid names are {sorted(BUILDERS)} "
                         f"(or pass a callable builder(key, dim, **options) -> Flow)")
    return BUILDERS[name]
