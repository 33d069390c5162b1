"""The registry of every layer and builder checked by the property harness.

Adding a layer or builder here gives it every check in ``test_layer_properties.py`` and
``test_flow_properties.py``.  Factories take ``(key, dim, dtype)`` and return an object with
*non-trivial* parameters (every leaf perturbed), because a log-det that is zero at
initialisation hides sign errors.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import nf_ppl
from nf_ppl import layers as L

HIDDEN = (6,)
CONTEXT_DIM = 3


def perturb(obj, key, scale=0.3):
    """Add Gaussian noise to every float leaf of a pytree.

    The noise is drawn on the host (NumPy, seeded from ``key``) and moved with ``device_put``:
    eager ``jax.random`` calls would compile once per leaf shape and dominate the suite's time.
    """
    leaves, treedef = jax.tree_util.tree_flatten(obj)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key) if _is_typed_key(key) else key).tolist())
    noisy = []
    for leaf in leaves:
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.floating):
            arr = (arr + scale * rng.normal(size=arr.shape)).astype(arr.dtype)
        noisy.append(jax.device_put(arr))
    return jax.tree_util.tree_unflatten(treedef, noisy)


def _is_typed_key(key):
    return jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key)


def cast(obj, dtype):
    def to(a):
        arr = np.asarray(a)
        return jax.device_put(arr.astype(dtype)) if np.issubdtype(arr.dtype, np.floating) else a

    return jax.tree_util.tree_map(to, obj)


def context_for(key, dtype):
    return jax.random.normal(key, (CONTEXT_DIM,), dtype)


def _random_mask(key, dim):
    perm = jax.random.permutation(key, dim)
    return tuple(bool(v) for v in (perm < dim // 2))


# name -> factory(key, dim, dtype) -> layer
LAYERS = {
    "ElementwiseAffine": lambda k, d, t: L.ElementwiseAffine.init(d, t),
    "LeakyReLU": lambda k, d, t: L.LeakyReLU(0.3),
    "ELU": lambda k, d, t: L.ELU(1.5),
    "Softplus": lambda k, d, t: L.Softplus(),
    "Tanh": lambda k, d, t: L.Tanh(),
    "SinhArcsinh": lambda k, d, t: L.SinhArcsinh.init(d, t),
    "LULinear": lambda k, d, t: L.LULinear.init(k, d, t, perm=tuple(range(d - 1, -1, -1))),
    "Permutation": lambda k, d, t: L.Permutation.random(k, d),
    "ActNorm": lambda k, d, t: L.ActNorm.init(d, t),
    "AffineCoupling": lambda k, d, t: L.AffineCoupling(k, d, None, HIDDEN, dtype=t),
    "AffineCoupling-random-mask": lambda k, d, t: L.AffineCoupling(k, d, _random_mask(k, d), HIDDEN, dtype=t),
    "AffineCoupling-conditional": lambda k, d, t: L.AffineCoupling(
        k, d, None, HIDDEN, context_dim=CONTEXT_DIM, dtype=t).condition(context_for(k, t)),
    "AdditiveCoupling": lambda k, d, t: L.AdditiveCoupling(k, d, None, HIDDEN, dtype=t),
    "MAF-layer": lambda k, d, t: L.MaskedAffineAutoregressive(k, d, HIDDEN, mode="maf", dtype=t),
    "IAF-layer": lambda k, d, t: L.MaskedAffineAutoregressive(k, d, HIDDEN, mode="iaf", ordering="random", dtype=t),
    "MAF-layer-conditional": lambda k, d, t: L.MaskedAffineAutoregressive(
        k, d, (6, 6), mode="maf", ordering="reversed", context_dim=CONTEXT_DIM, dtype=t).condition(context_for(k, t)),
    "SubspaceFlow": lambda k, d, t: L.SubspaceFlow(
        jax.random.normal(k, (d, (d + 1) // 2), t),
        L.Chain([L.SinhArcsinh.init((d + 1) // 2, t), L.LULinear.init(k, (d + 1) // 2, t)]),
        jax.random.normal(jax.random.fold_in(k, 1), (d, (d + 1) // 2), t)),
    "Chain": lambda k, d, t: L.Chain([L.ElementwiseAffine.init(d, t), L.SinhArcsinh.init(d, t),
                                      L.LULinear.init(k, d, t), L.LeakyReLU(0.5)]),
}

# name -> factory(key, dim, dtype) -> Flow.  "maf" starts near the identity (out_scale=0.01) like the
# others, so the harness's perturbation gives maps of the same moderate curvature that its 2-D grid
# integration resolves; "maf-random-perm-unrolled" keeps maf's default random start (out_scale=1/sqrt(num_layers)).
BUILDERS = {
    "maf": lambda k, d, t: nf_ppl.maf(k, d, num_layers=3, hidden_dims=HIDDEN, out_scale=0.01, dtype=t),
    "iaf": lambda k, d, t: nf_ppl.iaf(k, d, num_layers=3, hidden_dims=HIDDEN, dtype=t),
    "realnvp": lambda k, d, t: nf_ppl.realnvp(k, d, num_layers=3, hidden_dims=HIDDEN, dtype=t),
    "maf-random-perm-unrolled": lambda k, d, t: nf_ppl.maf(
        k, d, num_layers=2, hidden_dims=HIDDEN, permutation="random", scan=False, dtype=t),
    "iaf-trainable-base": lambda k, d, t: nf_ppl.iaf(k, d, num_layers=2, hidden_dims=HIDDEN,
                                                     trainable_base=True, dtype=t),
    "maf-conditional": lambda k, d, t: nf_ppl.maf(
        k, d, num_layers=2, hidden_dims=HIDDEN, context_dim=CONTEXT_DIM, dtype=t).condition(context_for(k, t)),
    "realnvp-conditional": lambda k, d, t: nf_ppl.realnvp(
        k, d, num_layers=2, hidden_dims=HIDDEN, context_dim=CONTEXT_DIM, dtype=t).condition(context_for(k, t)),
}

def _load_extension_cases():
    """Each ``tests/cases_*.py`` module may define ``LAYERS`` and ``BUILDERS`` dicts to merge."""
    import importlib
    import pathlib

    for path in sorted(pathlib.Path(__file__).parent.glob("cases_*.py")):
        module = importlib.import_module(path.stem)
        LAYERS.update(getattr(module, "LAYERS", {}))
        BUILDERS.update(getattr(module, "BUILDERS", {}))


_load_extension_cases()

# Each builder's composed transform (a Stack or Chain) is also checked as a layer.  Extension
# builders stack layers that are already checked one by one, and the stacking mechanisms are the
# same for every family, so only these representatives are repeated as transforms: scanned
# autoregressive and coupling stacks, an unrolled Chain with permutations, a conditional Stack.
TRANSFORM_CASES = {"maf", "iaf", "realnvp", "maf-conditional", "maf-random-perm-unrolled"}
for _name, _make in list(BUILDERS.items()):
    if _name not in TRANSFORM_CASES:
        continue
    LAYERS[f"{_name}.transform"] = (lambda m: lambda k, d, t: m(k, d, t).bound_transform())(_make)


def make_layer(name, dim, dtype=jnp.float64, seed=0):
    return _made("layer", name, dim, jnp.dtype(dtype), seed, 0.3, bool(jax.config.jax_enable_x64))


def make_flow(name, dim, dtype=jnp.float64, seed=0, scale=0.3):
    return _made("flow", name, dim, jnp.dtype(dtype), seed, scale, bool(jax.config.jax_enable_x64))


@functools.lru_cache(maxsize=None)
def _made(kind, name, dim, dtype, seed, scale, x64):
    """Layers and flows are immutable pytrees, so the tests of one case share one build (``x64`` keys the
    cache: the same request gives float32 arrays when float64 is off)."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    obj = (LAYERS if kind == "layer" else BUILDERS)[name](k1, dim, dtype)
    return cast(perturb(obj, k2, scale), dtype)


def trainable(obj):
    """Leaves excluding a bound context (data, not a parameter)."""
    if getattr(obj, "context", None) is not None:
        obj = obj.replace(context=None)
    return obj
