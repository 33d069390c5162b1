"""What every flow builder shares: argument checks, permutations between layers, the assembly of
layers into a :class:`~nf_ppl.flow.Flow`, and the depth-scaled initialisation.

Each builder (``nf_ppl.flows.affine``: ``maf``, ``iaf``, ``realnvp``; ``.spline``: ``nsf``,
``spline_coupling``; ``.neural``: ``bnaf``, ``naf``) is called as
``builder(key, dim, *, num_layers=..., hidden_dims=..., **options)`` and returns a :class:`~nf_ppl.flow.Flow` with event shape ``(dim,)`` over a standard normal base.
Identical layers are stacked and run by ``lax.scan`` (``scan=True``), so compile time stays flat
as ``num_layers`` grows; layer ``l`` is followed by a permutation (see ``permutation``).

Common options:
    context_dim: size of a context vector for a conditional flow ``p(y | context)``.
    permutation: ``"reverse"`` (``bnaf``'s and ``naf``'s default), ``"random"`` (a
        different fixed permutation per layer, drawn from ``key``), ``"auto"`` (the default of
        ``maf``, ``iaf``, ``nsf`` and the coupling builders: ``"reverse"`` for ``dim <= 2``, above it a
        different random permutation per layer drawn from one fixed stream, the same whatever
        ``key``; with a half mask, reversal alone keeps the same two halves apart in every layer,
        so coordinates of one half never condition on each other, and an autoregressive flow sees
        only two orderings) or ``None``.  Permutations are part of a flow's structure (its pytree
        definition), so with ``"auto"`` the flows one builder makes with the same options differ
        only in their parameters, whatever the key, and ``inference.fit`` reuses its compiled
        training program from one of them to the next (2-5 s of compilation saved per fit on a
        CPU; bench/RESULTS.md); ``"random"`` gives each key its own permutations.
    activation: conditioner activation (``"elu"``, ``"relu"``, ``"tanh"``, ``"gelu"``, ...).
    affine_from: (maf, iaf, realnvp) the side each layer's affine map is written from: ``"data"``
        (the default: ``x = y * scale + shift`` in the density direction) or ``"base"``
        (``y = x * scale + shift`` in the sampling direction); see each builder.
    scale: (maf, iaf) how a layer's scale comes from its network: ``"softplus"`` (the default from
        the data side) or ``"exp"`` of a soft-clamped log-scale (the default from the base side); see
        :class:`~nf_ppl.layers.MaskedAffineAutoregressive`.
    log_scale_bound: soft bound on each layer's log-scale (numerical safety) for ``"exp"`` scales.
    out_scale: (maf, iaf) scale of each MADE's initial output weights: None picks
        ``1/sqrt(num_layers)`` for maf (a random start, which maximum likelihood trains faster from,
        kept near the base at any depth; :func:`depth_scale`) and 0.01 for iaf (each layer starts
        near the identity, as a variational guide wants; maximum likelihood with iaf's data-side
        layers did better from there too, bench/RESULTS.md).
    weight_init: (maf, iaf) how the MADEs' weights are drawn: ``"normal"`` with sd ``1/sqrt(fan_in)``
        (default, as every other builder's networks) or ``"uniform"`` in ``+-1/sqrt(fan_in)``.
    conditioner_bound: (maf, iaf, realnvp, nsf, spline_coupling) each layer's network reads
        ``B tanh(v / B)`` instead of its input ``v`` (``B = conditioner_bound``; the context is read
        as it is), so the shifts and scales it gives a point far outside the training data stay
        within what it gives on the box ``[-B, B]``: they cannot grow with the point, layer after
        layer, into a log-density of thousands of nats below the rest.  Default 3.0 for ``realnvp``,
        ``nsf`` and ``spline_coupling`` (in standardised units the training data lie almost all
        inside, and these layers' inputs stay near that range; see ``realnvp``), None (no bound) for
        ``maf`` and ``iaf``, whose networks read representations that spread well beyond it (see
        ``maf``), and for ``inference.AutoFlow``'s guides.
    trainable_base: also learn the base's location and log-scale.
    base: ``"normal"`` (default), ``"student_t"``: a Student-t base with learned degrees of freedom
        per coordinate (starting at 30), for heavy-tailed data or posteriors, or ``"mixture"``: a
        mixture of ``base_components`` diagonal Gaussians with learned weights, locations and
        scales (starting with equal weights, scales 0.6 and locations spread at sd 1, a base of
        marginal sd 1.17), for multimodal data and posteriors.
    base_components: number of components of a ``"mixture"`` base (default 4).
    scan: ``False`` unrolls the layers in a ``Chain`` instead of a ``Stack``.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
from collections.abc import Iterable
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..flow import Flow
from ..layers.composition import Chain, Stack
from ..layers.linear import Permutation
from ..nn import MADE, MLP, check_input_bound


def _check_common(dim: int, num_layers: int) -> None:
    if not _is_int(dim) or dim < 1:
        raise ValueError(f"dim must be a positive int (the event size); got {dim!r}")
    if not _is_int(num_layers) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int; got {num_layers!r}")


def _is_int(value) -> bool:
    """An integer (Python's, NumPy's, a JAX integer scalar: anything with ``__index__``), not a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def checked_builder(builder: Callable) -> Callable:
    """The package's builders check their shared arguments before building anything, by name:
    ``dim`` and ``num_layers`` positive ints, ``hidden_dims`` a sequence of positive ints (a string
    or a bare int is refused: ``"16"`` was read as ``(1, 6)``), ``context_dim`` an int >= 0, ``dtype`` a
    floating-point dtype.  NumPy integers are taken as ints."""
    signature = inspect.signature(builder)

    @functools.wraps(builder)
    def build(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        values = bound.arguments
        _check_common(values.get("dim"), values.get("num_layers", signature.parameters["num_layers"].default))
        values["dim"] = operator.index(values["dim"])
        if "num_layers" in values:
            values["num_layers"] = operator.index(values["num_layers"])
        if "hidden_dims" in values:
            values["hidden_dims"] = check_hidden_dims(values["hidden_dims"])
        if "context_dim" in values:
            if not _is_int(values["context_dim"]) or values["context_dim"] < 0:
                raise ValueError(f"context_dim must be an int >= 0 (0: not conditional); got {values['context_dim']!r}")
            values["context_dim"] = operator.index(values["context_dim"])
        if values.get("dtype") is not None and not jnp.issubdtype(values["dtype"], jnp.floating):
            raise TypeError(f"dtype must be a floating-point dtype (float32, float64); got {values['dtype']!r}")
        return builder(*bound.args, **bound.kwargs)

    return build


def check_hidden_dims(hidden_dims) -> tuple[int, ...]:
    """``hidden_dims`` as a tuple of positive ints (``()``: a linear conditioner), or a TypeError/ValueError naming it."""
    if isinstance(hidden_dims, (str, bytes)) or not isinstance(hidden_dims, Iterable):
        raise TypeError(f"hidden_dims must be a sequence of positive ints, e.g. (64, 64) or (16,); got {hidden_dims!r}")
    dims = tuple(hidden_dims)
    if not all(_is_int(h) and h >= 1 for h in dims):
        raise ValueError(f"hidden_dims must be a sequence of positive ints, e.g. (64, 64), or () for a linear "
                         f"conditioner; got {hidden_dims!r}")
    return tuple(operator.index(h) for h in dims)


def _auto_permutation_key(num_layers: int):
    """The fixed stream of ``permutation="auto"``: the key a builder called with ``PRNGKey(0)`` draws
    its permutations from (so seed 0's flows are those of ``"random"``)."""
    return jax.random.split(jax.random.PRNGKey(0), num_layers + 1)[0]


def _permutations(key, dim: int, num_layers: int, permutation):
    if permutation is None:
        return None
    if permutation == "auto":
        if dim <= 2:
            permutation = "reverse"
        else:  # a fixed key: concrete values even when the builder runs under jit or vmap
            with jax.ensure_compile_time_eval():
                return _permutations(_auto_permutation_key(num_layers), dim, num_layers, "random")
    if permutation in ("reverse", "reversed"):  # "reversed" as in MADE's ordering=, which takes both too
        return [tuple(range(dim - 1, -1, -1))] * num_layers
    if permutation == "random":
        return [Permutation.random(k, dim).perm for k in jax.random.split(key, num_layers)]
    raise ValueError(f"permutation must be 'reverse', 'random', 'auto' or None; got {permutation!r}")


BASES = ("normal", "student_t", "mixture")
MIXTURE_COMPONENTS = 4  # components of base="mixture" unless base_components says otherwise
MIXTURE_INITIAL_SPREAD = 1.0  # sd of the components' initial locations (distinct, so they learn apart)
MIXTURE_INITIAL_SCALE = 0.6  # the components' initial scale: marginal sd sqrt(0.6^2 + 1) = 1.17 at the start
STUDENT_T_INITIAL_DF = 30.0  # a Student-t base starts close to the normal; training moves its tails


def check_base(base) -> str:
    """``"normal"``, ``"student_t"`` or ``"mixture"``, or a ValueError naming ``base``."""
    if base not in BASES:
        raise ValueError(f"base must be one of {BASES}; got {base!r}")
    return base


def assemble(layers: Sequence, dim: int, *, permutations=None, scan: bool = True,
             context_dim: int = 0, trainable_base: bool = False, base: str = "normal", dtype=None,
             base_components: int = MIXTURE_COMPONENTS, base_key=None) -> Flow:
    """Compose layers (each followed by ``permutations[l]``) into a ``Flow`` over ``N(0, I_dim)``, over a
    Student-t with learned degrees of freedom per coordinate (``base="student_t"``, starting at
    ``STUDENT_T_INITIAL_DF``) or over a mixture of ``base_components`` Gaussians (``base="mixture"``;
    ``base_key`` draws the components' initial locations)."""
    check_base(base)
    if base == "mixture" and trainable_base:
        raise ValueError("base='mixture' learns its own locations and scales; leave trainable_base=False")
    if scan:
        transform = Stack.from_layers(layers, permutations)
    else:
        parts = []
        for i, layer in enumerate(layers):
            parts.append(layer)
            if permutations is not None:
                parts.append(Permutation(permutations[i]))
        transform = Chain(parts)
    if trainable_base:
        base_args = dict(base_loc=jnp.zeros(dim, dtype), base_log_scale=jnp.zeros(dim, dtype))
    else:
        base_args = {}
    if base == "student_t":
        base_args["base_tail"] = jnp.full(dim, math.sqrt(1.0 / STUDENT_T_INITIAL_DF - 0.001), dtype)
    if base == "mixture":
        base_args["base_mixture"] = initial_mixture(base_key if base_key is not None else jax.random.PRNGKey(0),
                                                    dim, base_components, dtype)
    return Flow(transform, (dim,), context_dim=context_dim, **base_args)


def initial_mixture(key, dim: int, num_components: int, dtype=None):
    """``(logits, locs, log_scales)`` of a mixture base at its start: equal weights, scales
    ``MIXTURE_INITIAL_SCALE``, locations drawn at sd ``MIXTURE_INITIAL_SPREAD`` (distinct, so the components'
    gradients differ; on three separated clusters this start beat spread 0.5 with unit scales by 0.2-0.6
    nats of held-out log-likelihood on three seeds, and a Gaussian base by 0.6-1.2)."""
    if isinstance(num_components, bool) or not isinstance(num_components, int) or num_components < 1:
        raise ValueError(f"base_components must be a positive int; got {num_components!r}")
    dtype = dtype or jnp.result_type(float)
    locs = MIXTURE_INITIAL_SPREAD * jax.random.normal(key, (num_components, dim), dtype)
    log_scales = jnp.full((num_components, dim), math.log(MIXTURE_INITIAL_SCALE), dtype)
    return jnp.zeros(num_components, dtype), locs, log_scales


def bound_conditioner(layer, bound):
    """``layer`` with its conditioner network (a coupling's ``net``, an autoregressive layer's ``made``)
    reading ``bound * tanh(v / bound)`` instead of ``v`` (:meth:`nf_ppl.nn.MLP.with_input_bound`);
    ``layer`` itself for ``bound=None``."""
    bound = check_input_bound(bound, "conditioner_bound")
    nets = {name: getattr(layer, name) for name in ("net", "made") if isinstance(getattr(layer, name, None), (MLP, MADE))}
    if bound is None or not nets:
        return layer
    return layer.replace(**{name: net.with_input_bound(bound) for name, net in nets.items()})


def _build(make_layer: Callable, key, dim, num_layers, permutation, scan, context_dim, trainable_base, dtype,
           base: str = "normal", base_components: int = MIXTURE_COMPONENTS, conditioner_bound=None):
    _check_common(dim, num_layers)
    check_base(base)
    check_input_bound(conditioner_bound, "conditioner_bound")
    k_perm, *keys = jax.random.split(key, num_layers + 1)
    layers = [bound_conditioner(make_layer(k), conditioner_bound) for k in keys]
    perms = _permutations(k_perm, dim, num_layers, permutation)
    return assemble(layers, dim, permutations=perms, scan=scan, context_dim=context_dim,
                    trainable_base=trainable_base, base=base, dtype=dtype, base_components=base_components,
                    base_key=jax.random.fold_in(key, 0x6D6978))  # its own stream: other leaves are unchanged


def depth_scale(num_layers) -> float:
    r"""``1/sqrt(num_layers)``: the initial scale on each layer's random part that keeps a stack of
    ``num_layers`` layers near its base at any depth (1.0 for a value that is not a positive int,
    which the builder then refuses with its own message).  Used for the MAF's output weights and
    BNAF's cross-coordinate weights.

    MAF: each layer starts as a random affine autoregressive map (full gradients for every hidden unit
    from the first step, which maximum likelihood wants); scaling its output weights by
    ``1/sqrt(L)`` keeps the composition of ``L`` of them near the base for any depth: at 1.0 per
    layer a 10-layer (64, 64) stack started with sample sd 1.6e7, at ``1/sqrt(L)`` every depth and
    width starts with sd in [0.5, 2] (tests/test_builder_init.py).  Fits gained too: two moons
    -1.352 -> -1.294 nats over 7 seeds, breast_cancer -3.0 -> +0.5 over 3 (bench/RESULTS.md).
    BNAF: ten layers of (32, 32) blocks started with a coordinate's sd 3.4 at 1.0, 0.96-1.08 at
    ``1/sqrt(10)``.
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        return 1.0
    return 1.0 / math.sqrt(num_layers)
