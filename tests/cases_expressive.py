"""Expressive-flow cases for the property harness (merged by ``tests/layer_cases.py``).

Tiny networks and few bins keep every case cheap; numerical inverses use the default
tolerances (``1e-10`` in float64), which the harness's 1e-8 round trips need.
"""

from __future__ import annotations

import jax

from nf_ppl import flows as E
from nf_ppl.layers.neural import BlockNeuralAutoregressive, NeuralAutoregressive
from nf_ppl.layers.spline import MaskedSplineAutoregressive, RationalQuadraticSpline, SplineCoupling

HIDDEN = (6,)
CONTEXT_DIM = 3
BINS = 4


def _context(key, dtype):
    return jax.random.normal(key, (CONTEXT_DIM,), dtype)


# Every case costs ~10 (layer) or ~15 (builder) jitted harness tests, so the set is small:
# each layer type once, each mode and conditional variant at least once somewhere.
LAYERS = {
    "RQSpline": lambda k, d, t: RationalQuadraticSpline.init(d, BINS, 2.0, t),
    "SplineCoupling-conditional": lambda k, d, t: SplineCoupling(
        k, d, None, HIDDEN, num_bins=BINS, tail_bound=2.0, context_dim=CONTEXT_DIM, dtype=t).condition(_context(k, t)),
    "SplineMAF-layer": lambda k, d, t: MaskedSplineAutoregressive(k, d, HIDDEN, num_bins=BINS, tail_bound=2.0, dtype=t),
    "SplineIAF-layer": lambda k, d, t: MaskedSplineAutoregressive(
        k, d, HIDDEN, num_bins=BINS, tail_bound=2.0, mode="iaf", ordering="random", dtype=t),
    "BNAF-layer": lambda k, d, t: BlockNeuralAutoregressive(k, d, (3,), dtype=t),
    "BNAF-layer-iaf-conditional": lambda k, d, t: BlockNeuralAutoregressive(
        k, d, (2, 2), mode="iaf", context_dim=CONTEXT_DIM, dtype=t).condition(_context(k, t)),
    "NAF-layer-iaf": lambda k, d, t: NeuralAutoregressive(k, d, HIDDEN, num_components=3, mode="iaf", dtype=t),
    "NAF-layer-conditional": lambda k, d, t: NeuralAutoregressive(
        k, d, HIDDEN, num_components=3, ordering="reversed", context_dim=CONTEXT_DIM, dtype=t).condition(_context(k, t)),
}

BUILDERS = {
    "nsf": lambda k, d, t: E.nsf(k, d, num_layers=2, hidden_dims=HIDDEN, num_bins=BINS, dtype=t),
    "spline_coupling-conditional": lambda k, d, t: E.spline_coupling(
        k, d, num_layers=2, hidden_dims=HIDDEN, num_bins=BINS, context_dim=CONTEXT_DIM, dtype=t).condition(_context(k, t)),
    "bnaf": lambda k, d, t: E.bnaf(k, d, num_layers=2, hidden_dims=(3,), dtype=t),
    "naf": lambda k, d, t: E.naf(k, d, num_layers=2, hidden_dims=HIDDEN, num_components=3, dtype=t),
}
