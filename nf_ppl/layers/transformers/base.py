"""The transformer protocol: the scalar maps that coupling and autoregressive layers apply.

A *transformer* ``tau(v; theta)`` is a strictly increasing map of one real number, applied to each
transformed coordinate with that coordinate's parameters ``theta``.  A layer's conditioner (a
MADE for :class:`~nf_ppl.layers.MaskedAutoregressive`, an MLP for
:class:`~nf_ppl.layers.Coupling`) outputs the parameters *unconstrained*, ``num_params`` numbers
per coordinate, as an array of shape ``(..., num_params, n)``; the transformer constrains them.

The protocol (every method elementwise over ``(..., n)``)::

    forward_with_info(x, params) -> (y, log tau'(x), info)     y = tau(x)
    inverse_with_info(y, params) -> (x, log tau'(x), info)     x = tau^{-1}(y)
    forward(x, params), inverse(y, params)                     the same without info
    unpack(params) -> tuple of the constrained parameters      (what ``layer.transformer_params`` gives)
    init_bias(dtype) -> (num_params,) array                    added to the conditioner's initial output
    forward_is_numerical, inverse_is_numerical                  whether a direction solves for a root

The log-derivative is always at the *base-side* point ``x`` (the input of ``forward``, the output
of ``inverse``), so a layer sums it and signs it by direction.  ``info`` is ``None`` for closed-form
directions and a :class:`~nf_ppl.roots.SolveInfo` (one entry per vector) for numerical ones.

A transformer is a frozen dataclass: hashable, compared by value, so it sits in a layer's static
pytree data and ``jit`` caches on it.  To write a new one, subclass :class:`Transformer`, give
``num_params`` and the two ``*_with_info`` methods (see ``tests/cases_transformers.py`` for one in
a dozen lines); :class:`Inverse` turns any transformer around.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp


class Transformer:
    """Base class of elementwise transformers (see the module docstring for the protocol)."""

    forward_is_numerical = False
    inverse_is_numerical = False
    max_iter = 0  # numerical transformers: the iteration limit named in non-convergence errors

    @property
    def num_params(self) -> int:
        raise NotImplementedError

    def forward_with_info(self, x, params):
        raise NotImplementedError

    def inverse_with_info(self, y, params):
        raise NotImplementedError

    def forward(self, x, params):
        """``(tau(x), log tau'(x))``."""
        return self.forward_with_info(x, params)[:2]

    def inverse(self, y, params):
        """``(tau^{-1}(y), log tau'(tau^{-1}(y)))``."""
        return self.inverse_with_info(y, params)[:2]

    def unpack(self, params):
        """The constrained parameters, a tuple of ``(..., n)`` (or ``(..., n, K)``) arrays."""
        return tuple(params[..., j, :] for j in range(self.num_params))

    def init_bias(self, dtype):
        """Numbers added to the conditioner's initial output bias, one per parameter (zeros: the
        conditioner's small initial output then starts the transformer near ``tau(0 params)``)."""
        return jnp.zeros(self.num_params, dtype)


@dataclass(frozen=True)
class Inverse(Transformer):
    """The inverse of a transformer: ``forward`` is ``inner.inverse`` and ``inverse`` is ``inner.forward``.

    With ``x = inner^{-1}(v)``: ``log (inner^{-1})'(v) = -log inner'(x)``, so the log-derivatives
    change sign.  The numerical direction swaps with them.  Instead of direction flags, a layer
    that should run a transformer's inverse where another runs its forward takes ``Inverse(t)``.
    """

    inner: Transformer

    def __post_init__(self):
        if not isinstance(self.inner, Transformer):
            raise TypeError(f"Inverse expects a Transformer; got {type(self.inner).__name__}")

    @property
    def num_params(self) -> int:
        return self.inner.num_params

    @property
    def forward_is_numerical(self):
        return self.inner.inverse_is_numerical

    @property
    def inverse_is_numerical(self):
        return self.inner.forward_is_numerical

    @property
    def max_iter(self):
        return self.inner.max_iter

    def forward_with_info(self, x, params):
        y, log_d, info = self.inner.inverse_with_info(x, params)
        return y, -log_d, info

    def inverse_with_info(self, y, params):
        x, log_d, info = self.inner.forward_with_info(y, params)
        return x, -log_d, info

    def unpack(self, params):
        return self.inner.unpack(params)

    def init_bias(self, dtype):
        return self.inner.init_bias(dtype)

    def __getattr__(self, name):  # the inner transformer's options (num_bins, tail_bound, ...)
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def check_transformer(transformer, name: str = "transformer") -> Transformer:
    """A :class:`Transformer` instance, or a TypeError naming the argument."""
    if isinstance(transformer, type) and issubclass(transformer, Transformer):
        raise TypeError(f"{name} must be a Transformer instance; got the class {transformer.__name__} "
                        f"(call it: {transformer.__name__}())")
    if not isinstance(transformer, Transformer):
        raise TypeError(f"{name} must be a Transformer (nf_ppl.layers.transformers); got {type(transformer).__name__}")
    return transformer
