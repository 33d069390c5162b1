"""The transformer protocol in the property harness (merged by ``tests/layer_cases.py``).

``TwoSlope`` is a transformer written here, in a few lines, as a user would: it plugs into both
generic layers (:class:`~nf_ppl.layers.MaskedAutoregressive` in both modes and
:class:`~nf_ppl.layers.Coupling`) and so gets every check of the harness: round trips, log-dets
against autodiff Jacobians, batching, jit/vmap, dtypes, extreme inputs, gradients.  A built-in
transformer appears in a combination no named layer uses (a coupling with a numerical inverse);
the others are checked one by one in ``tests/test_transformers.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from nf_ppl.layers import Coupling, MaskedAutoregressive
from nf_ppl.layers import transformers as T

HIDDEN = (6,)
CONTEXT_DIM = 3


@dataclass(frozen=True)
class TwoSlope(T.Transformer):
    """``tau(x) = mu + x e^{a}`` for ``x >= 0``, ``mu + x e^{b}`` below: 3 parameters, closed form."""

    num_params = 3

    def _unpack(self, params):
        return params[..., 0, :], jnp.tanh(params[..., 1, :]), jnp.tanh(params[..., 2, :])

    def forward_with_info(self, x, params):
        mu, a, b = self._unpack(params)
        log_d = jnp.where(x >= 0, a, b)
        return mu + x * jnp.exp(log_d), log_d, None

    def inverse_with_info(self, y, params):
        mu, a, b = self._unpack(params)
        log_d = jnp.where(y >= mu, a, b)
        return (y - mu) * jnp.exp(-log_d), log_d, None


def _context(key, dtype):
    return jax.random.normal(key, (CONTEXT_DIM,), dtype)


LAYERS = {
    "TwoSlope-MAF": lambda k, d, t: MaskedAutoregressive.init(k, d, TwoSlope(), HIDDEN, mode="maf", dtype=t),
    "TwoSlope-IAF-conditional": lambda k, d, t: MaskedAutoregressive.init(
        k, d, TwoSlope(), HIDDEN, mode="iaf", ordering="random", context_dim=CONTEXT_DIM,
        dtype=t).condition(_context(k, t)),
    "TwoSlope-Coupling": lambda k, d, t: Coupling.init(k, d, TwoSlope(), None, HIDDEN, dtype=t),
    "DeepSigmoid-Coupling": lambda k, d, t: Coupling.init(k, d, T.DeepSigmoid(3), None, HIDDEN, dtype=t),
}
