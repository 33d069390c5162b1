"""Orderings of an :class:`~nf_ppl.models.AutoregressiveModel`: the same weights under another
autoregressive ordering, order-agnostic training (NADE/MADE: a random ordering per minibatch) and
the exact density of an ensemble over orderings.  A mixin of the model; the MADE masks follow the
ordering (:func:`nf_ppl.nn.made_degrees`)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp

from ..nn import MADE, made_degrees, resolve_ordering

__all__ = ["OrderingsMixin", "random_orderings"]


def random_orderings(key, dim: int, num: int) -> tuple[tuple[int, ...], ...]:
    """``num`` random permutations of ``0..dim-1`` (a static ensemble for order-agnostic training)."""
    for value, name in ((dim, "dim"), (num, "num")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return tuple(resolve_ordering("random", dim, k) for k in jax.random.split(key, num))


def _check_orderings(orderings, dim):
    if isinstance(orderings, str) or not isinstance(orderings, (tuple, list)) or not orderings:
        raise ValueError("orderings must be a non-empty tuple of permutations (see random_orderings)")
    return tuple(resolve_ordering(o, dim) for o in orderings)


class OrderingsMixin:
    """``with_ordering``, ``order_agnostic_log_prob`` and ``ensemble_log_prob`` of an autoregressive model."""

    def with_ordering(self, ordering, *, key=None, connectivity_key=None):
        """The same weights under another autoregressive ordering.

        ``ordering`` is ``"natural" | "reversed" | "random"`` (needs ``key``) or a permutation.
        Only the MADE's input degrees (hence its masks) change; hidden degrees are kept (any
        hidden degrees in ``1..dim-1`` give a valid MADE) unless ``connectivity_key`` re-draws
        them, as in the MADE paper: layer ``l`` degrees uniform on ``[min degree of layer l-1,
        dim-1]``.  The result is a normalised density for any ordering.
        """
        dim = self.dim
        order = resolve_ordering(ordering, dim, key)
        degrees = made_degrees(dim, [len(d) for d in self.made.degrees[1:]], order)
        if connectivity_key is None:
            degrees = (degrees[0],) + tuple(self.made.degrees[1:])
        elif dim > 1:
            hidden = []
            low = 1
            for size, k in zip([len(d) for d in self.made.degrees[1:]],
                               jax.random.split(connectivity_key, len(self.made.degrees) - 1)):
                d = np.asarray(jax.random.randint(k, (size,), low, dim))
                hidden.append(tuple(int(v) for v in d))
                low = int(d.min()) if size else low
            degrees = (degrees[0],) + tuple(hidden)
        m = self.made
        made = MADE(m.weights, m.biases, m.context_weight, degrees, m.num_params, m.activation, m.input_bound)
        return self._replace(made=made)

    def order_agnostic_log_prob(self, value, key, orderings, *, context=None):
        """``log p_o(y)`` under ONE ordering ``o`` drawn uniformly from ``orderings`` with ``key``.

        ``orderings`` is a static tuple of permutations (:func:`random_orderings`).  The choice
        is a traced index into a ``lax.switch`` over the ensemble, so a jitted training step
        compiled once re-draws the ordering (the MADE masks) every minibatch.  Training on this
        objective is NADE/MADE order-agnostic training.
        """
        m = self._resolved(context)
        orderings = _check_orderings(orderings, self.dim)
        value = m._check_value(value)
        index = jax.random.randint(key, (), 0, len(orderings))
        branches = [lambda mm, v, o=o: mm.with_ordering(o)._log_prob_core(v) for o in orderings]
        return lax.switch(index, branches, m, value)

    def ensemble_log_prob(self, value, orderings, *, context=None):
        """``log (1/n) sum_o p_o(y)``: the exact density of the uniform mixture over ``orderings``."""
        m = self._resolved(context)
        orderings = _check_orderings(orderings, self.dim)
        value = m._check_value(value)
        lps = jnp.stack([m.with_ordering(o)._log_prob_core(value) for o in orderings])
        return logsumexp(lps, axis=0) - math.log(len(orderings))
