"""What coupling and autoregressive layers share: a transformer applied with conditioner parameters.

:class:`TransformerLayer` is the base of :class:`~nf_ppl.layers.MaskedAutoregressive` and
:class:`~nf_ppl.layers.Coupling`.  It holds the one copy of

- the context broadcast (a bound context and the input share their batch shape),
- the handling of numerical transformer directions: a direction that solves for roots is compiled
  once per layer structure (also when called eagerly); outside ``jit`` a failed solve raises
  :class:`~nf_ppl.roots.NumericalInverseError`, under ``jit``/``vmap``/``grad`` failed rows come back
  as NaN; ``forward_with_info``/``inverse_with_info`` return the :class:`~nf_ppl.roots.SolveInfo`
  and never raise or mask,
- ``transformer_params(v)``: the transformer's constrained parameters as the layer uses them.

Subclasses implement ``conditioner(v)`` (raw parameters ``(..., num_params, n)``),
``_compute(v, inverse) -> (out, log_det, info)`` and ``_is_numerical(inverse)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..roots import SolveInfo, raise_if_not_converged
from .base import Bijector


class TransformerLayer(Bijector):
    """Base of the layers that apply a :class:`~nf_ppl.layers.transformers.Transformer`."""

    transformer = None  # a Transformer (an attribute, or a property built from a subclass's options)

    def _with_context(self, v):
        """``(v, context)`` broadcast to one batch shape; context None when the layer has none."""
        ctx = self._context() if self.context_dim else None
        if ctx is None:
            return v, None
        batch = jnp.broadcast_shapes(v.shape[:-1], ctx.shape[:-1])
        return jnp.broadcast_to(v, batch + v.shape[-1:]), jnp.broadcast_to(ctx, batch + ctx.shape[-1:])

    def _direction(self, v, inverse):
        """``(out, log_det, info)``; numerical directions run through one compiled entry point."""
        if self._is_numerical(inverse):
            return _jit_compute(self, v, inverse)
        return self._compute(v, inverse)

    def _finish(self, out, log_det, info):
        """Numerical transformers: raise eagerly on failure, NaN for failed rows under jit."""
        return finish_numerical(out, log_det, info, type(self).__name__, self.transformer.max_iter)

    def forward_and_log_det(self, x):
        self._check_input(x)
        return self._finish(*self._direction(x, inverse=False))

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        return self._finish(*self._direction(y, inverse=True))

    def forward_with_info(self, x):
        """``(y, log_det, info)``; ``info`` is a :class:`~nf_ppl.roots.SolveInfo` (trivial if closed form)."""
        return self._with_info(x, inverse=False)

    def inverse_with_info(self, y):
        """``(x, log_det, info)``; ``info`` is a :class:`~nf_ppl.roots.SolveInfo` (trivial if closed form).

        Unlike ``inverse_and_log_det`` this never raises and never replaces values by NaN.
        """
        return self._with_info(y, inverse=True)

    def _with_info(self, v, inverse):
        self._check_input(v, "y" if inverse else "x")
        out, log_det, info = self._direction(v, inverse)
        if info is None:
            info = SolveInfo(jnp.ones(log_det.shape, bool), jnp.zeros(log_det.shape, jnp.int32),
                             jnp.zeros(log_det.shape, log_det.dtype))
        return out, log_det, info

    def transformer_params(self, v):
        """The transformer's constrained parameters for input ``v`` (full vectors ``(..., dim)``), as the
        layer uses them: ``transformer.unpack(conditioner(v))``, e.g. ``(shift, log_scale)`` for
        :class:`~nf_ppl.layers.transformers.Affine`."""
        return self.transformer.unpack(self.conditioner(jnp.asarray(v)))


def finish_numerical(out, log_det, info, owner: str, max_iter: int):
    """The rule for a direction that may have solved for roots (``info`` a :class:`~nf_ppl.roots.SolveInfo`,
    one entry per event; None for closed forms): outside ``jit`` a failed solve raises
    :class:`~nf_ppl.roots.NumericalInverseError` naming ``owner``; under ``jit`` the failed events' values
    and log-dets become NaN.  ``out`` may have any event rank (vectors, images)."""
    if info is None:
        return out, log_det
    raise_if_not_converged(info, owner, max_iter)
    ok = info.converged
    nan = jnp.asarray(jnp.nan, out.dtype)
    ok_out = ok.reshape(ok.shape + (1,) * (out.ndim - ok.ndim))
    return jnp.where(ok_out, out, nan), jnp.where(ok, log_det, nan)


def with_init_bias(bias, transformer, size: int):
    """A conditioner's last bias ``(num_params * size,)`` (parameter-major) plus the transformer's
    ``init_bias`` for every coordinate."""
    offsets = transformer.init_bias(bias.dtype)
    return (bias.reshape(transformer.num_params, size) + offsets[:, None]).reshape(-1)


# The pytree structure (static settings, transformer included) is the cache key, so eager calls of a
# numerical direction compile once instead of re-tracing the solver loops.
_jit_compute = jax.jit(lambda layer, v, inverse: layer._compute(v, inverse), static_argnums=2)
