"""Harness cases for the variational-inference layers (planar, radial, Householder, Sylvester)."""

from __future__ import annotations

import jax

import nf_ppl
from nf_ppl.layers import vi as V

LAYERS = {
    "Planar": lambda k, d, t: V.Planar.init(k, d, t),
    "Radial": lambda k, d, t: V.Radial.init(k, d, t),
    "Householder": lambda k, d, t: V.Householder.init(k, d, 2, t),
    "Sylvester": lambda k, d, t: V.Sylvester.init(k, d, dtype=t),
}


def _stack(make, num_layers, scan=True):
    def factory(key, dim, dtype):
        layers = [make(k, dim, dtype) for k in jax.random.split(key, num_layers)]
        return nf_ppl.assemble(layers, dim, scan=scan, dtype=dtype)

    return factory


def _chain(key, dim, dtype):
    k1, k2, k3 = jax.random.split(key, 3)
    layers = [V.Radial.init(k1, dim, dtype), V.Householder.init(k2, dim, 1, dtype), V.Sylvester.init(k3, dim, dtype=dtype)]
    return nf_ppl.assemble(layers, dim, scan=False, dtype=dtype)


BUILDERS = {
    "planar-stack": _stack(lambda k, d, t: V.Planar.init(k, d, t), 2),  # lax.scan over stacked planar layers
    "vi-chain": _chain,                                                   # radial -> Householder -> Sylvester
}
