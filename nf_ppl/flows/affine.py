"""Affine flows: ``maf`` and ``iaf`` (masked affine autoregressive layers) and ``realnvp`` (affine couplings).

Options shared by every builder are described in :mod:`nf_ppl.flows.common`.
"""

from __future__ import annotations

from typing import Sequence

from ..flow import Flow
from ..layers.autoregressive import MaskedAffineAutoregressive, MaskedAutoregressive, default_out_scale
from ..layers.coupling import AffineCoupling, Coupling, half_mask
from ..layers.transformers import Affine, Inverse
from ..registry import register_builder
from .common import _build, checked_builder, depth_scale, MIXTURE_COMPONENTS


AFFINE_FROM = ("data", "base")


def check_affine_from(affine_from) -> str:
    """``"data"`` or ``"base"``, or a ValueError naming ``affine_from``."""
    if affine_from not in AFFINE_FROM:
        raise ValueError(f"affine_from must be one of {AFFINE_FROM}; got {affine_from!r}")
    return affine_from


def _autoregressive(mode, key, dim, *, num_layers, hidden_dims, context_dim, permutation, affine_from,
                    activation, scale, log_scale_bound, out_scale, weight_init, trainable_base, scan, dtype, base="normal",
                    base_components=MIXTURE_COMPONENTS, conditioner_bound=None):
    """``num_layers`` masked affine layers in ``mode``, the affine map written from ``affine_from``.

    The layer's one-pass map ``g`` runs data -> base in a MAF and base -> data in an IAF, so the
    affine map is written from the data side by ``Affine`` in a MAF and by ``Inverse(Affine)`` in an
    IAF (and the other way round from the base side).  Unless told, the scale is a softplus from the
    data side and a bounded exp from the base side.
    """
    check_affine_from(affine_from)
    if out_scale is None:
        out_scale = depth_scale(num_layers) if mode == "maf" else default_out_scale(mode)
    if scale is None:
        scale = "softplus" if affine_from == "data" else "exp"
    in_g = (mode == "maf") == (affine_from == "data")  # Affine itself is the one-pass map g

    def make(k):
        if in_g:
            return MaskedAffineAutoregressive(
                k, dim, hidden_dims, mode=mode, context_dim=context_dim, activation=activation, scale=scale,
                log_scale_bound=log_scale_bound, out_scale=out_scale, weight_init=weight_init, dtype=dtype)
        return MaskedAutoregressive.init(
            k, dim, Inverse(Affine(scale, log_scale_bound)), hidden_dims, mode=mode, context_dim=context_dim,
            activation=activation, out_scale=out_scale, weight_init=weight_init, dtype=dtype)

    return _build(make, key, dim, num_layers, permutation, scan, context_dim, trainable_base, dtype, base, base_components,
                  conditioner_bound)


@checked_builder
def maf(key, dim: int, *, num_layers: int = 8, hidden_dims: Sequence[int] = (64, 64), context_dim: int = 0,
        permutation="auto", affine_from: str = "data", activation: str = "elu", scale: str | None = None,
        log_scale_bound: float = 5.0,
        out_scale: float | None = None, weight_init: str = "normal", conditioner_bound: float | None = None,
        trainable_base: bool = False, base: str = "normal",
        base_components: int = MIXTURE_COMPONENTS, scan: bool = True, dtype=None) -> Flow:
    """Masked autoregressive flow: one-pass log-density, at most ``dim`` sequential sweeps to sample
    (stopped at their fixed point, :mod:`nf_ppl.fixed_point`).

    Layers are :class:`~nf_ppl.layers.MaskedAffineAutoregressive` in ``mode="maf"``.  Eight layers by
    default (flowjax's count too): an affine MAF on two moons then separates the moons on every seed
    tried (held-out -1.23 nats over 7 seeds, worst -1.31; with 5 layers -1.29 to -1.35 on average,
    with seeds stuck at -1.4 to -1.55 behind a bridge of mass between the moons; bench/RESULTS.md).
    Between layers, ``permutation="auto"``: reversal for ``dim <= 2``, a random permutation per
    layer above, so every coordinate is conditioned on a different set of others from layer to
    layer (with reversal alone, the default before, every other layer has the same ordering):
    wine -20.6 -> -17.2 nats, breast_cancer 1.2 -> 2.8, dequantised digits -56.3 -> -54.3 (3 seeds;
    flowjax's MAF, which permutes at random too, -18.2 / -10.7 / -59.5).  ``AutoFlow``'s maf
    guides keep reversal; files saved with it still load.

    ``affine_from="data"`` (default) writes each layer's affine map from the data side: its one-pass
    (density) direction is ``x_i = y_i sigma_i(y_<i) + mu_i(y_<i)`` with a softplus ``sigma``
    (:class:`~nf_ppl.layers.MaskedAffineAutoregressive` in ``mode="maf"``); ``"base"`` writes it from
    the base side, ``x_i = (y_i - mu_i) exp(-s_i)`` in the density direction with a bounded exp
    scale (``Inverse(Affine("exp"))``), as ``iaf``'s ``"base"`` (see there).

    ``weight_init="uniform"`` draws the MADEs' weights uniformly in ``+-1/sqrt(fan_in)`` (PyTorch's
    and flowjax's draw, a third of the variance) instead of from a normal of sd ``1/sqrt(fan_in)``
    (``"normal"``, the default).  With the other defaults (3 seeds, held-out nats, flowjax's
    defaults in the same run; bench/RESULTS.md) it scored higher on two of the larger data sets:
    breast_cancer 4.42 -> 6.46, dequantised digits -54.1 -> -52.5 (every seed), wine -17.48 ->
    -17.51, two moons -1.193 -> -1.195, but it trained for more epochs before converging (two moons
    244 against 154, breast_cancer 164 against 140, digits 85 against 72): on two moons 1.6 times
    the wall time, which took maf past flowjax's fitting time, so it is an option rather than the
    default.

    ``conditioner_bound`` (:mod:`nf_ppl.flows.common`) is off by default (None), unlike ``realnvp``'s: a
    MAF's middle layers read a representation that spreads well beyond the data's standardised
    range (a trained two-moons MAF's layer inputs reach +-7 to +-12), which a bound of 3 squashes
    flat.  With 3.0 the demo's two moons scored -1.267 nats over twelve initial draws instead of
    -1.227 (worst -1.382 against -1.298; 5.0: -1.249, worst -1.438), although above two dimensions it
    scored higher (breast_cancer 4.74 -> 5.54, wine -16.91 -> -16.58, digits -53.90 -> -53.59; 3 seeds;
    bench/RESULTS.md).
    """
    return _autoregressive("maf", key, dim, num_layers=num_layers, hidden_dims=hidden_dims,
                           context_dim=context_dim, permutation=permutation, affine_from=affine_from,
                           activation=activation, scale=scale,
                           log_scale_bound=log_scale_bound, out_scale=out_scale, weight_init=weight_init,
                           trainable_base=trainable_base, scan=scan, dtype=dtype, base=base,
                           base_components=base_components, conditioner_bound=conditioner_bound)


@checked_builder
def iaf(key, dim: int, *, num_layers: int = 5, hidden_dims: Sequence[int] = (64, 64), context_dim: int = 0,
        permutation="auto", affine_from: str = "data", activation: str = "elu", scale: str | None = None,
        log_scale_bound: float = 5.0, out_scale: float | None = None, weight_init: str = "normal",
        conditioner_bound: float | None = None, trainable_base: bool = False, base: str = "normal",
        base_components: int = MIXTURE_COMPONENTS, scan: bool = True, dtype=None) -> Flow:
    """Inverse autoregressive flow: one-pass sampling (with the log-density of its own samples), at most
    ``dim`` sequential sweeps for the log-density of other points (stopped at their fixed point,
    :mod:`nf_ppl.fixed_point`).

    Each layer's conditioner reads the layer's base-side input ``x``: ``(mu_i, r_i) = MADE(x_<i)``.
    ``affine_from`` says in which direction the affine map is written (as for ``realnvp``):

    - ``"data"`` (default): from data ``y`` to base ``x``, as a MAF's layers: forward (one pass)
      ``y_i = (x_i - mu_i) / sigma_i``, inverse (sequential) ``x_i = y_i sigma_i + mu_i``,
      log|det J| ``= -sum_i log sigma_i``, with ``sigma = softplus`` of ``r`` (scale 1 at ``r = 0``,
      log-scale soft-clamped to ``+-log_scale_bound``).  The layer is
      :class:`~nf_ppl.layers.MaskedAutoregressive` with ``Inverse(Affine("softplus"))``.
    - ``"base"``: from base to data, IAF's own form (Kingma et al. 2016): forward
      ``y_i = x_i exp(s_i) + mu_i``, ``s = B tanh(r / B)``, log|det J| ``= sum_i s_i``
      (:class:`~nf_ppl.layers.MaskedAffineAutoregressive` in ``mode="iaf"``); ``inference.AutoFlow``'s
      iaf guides use it, as before.

    ``scale`` (``"softplus"`` or ``"exp"``) defaults to softplus from the data side and exp from the
    base side.  Each layer starts near the identity (``out_scale=0.01``).  Between layers,
    ``permutation="auto"`` (reversal for ``dim <= 2``, random permutations above), as ``maf``.

    Why these defaults: fitted by maximum likelihood with ``inference.fit`` defaults (3 seeds, held-out
    nats; bench/RESULTS.md), the data-side form and random permutations took iaf from below flowjax's
    affine MAF to above it on every data set of the bench: two moons -1.269 -> -1.222 (flowjax
    -1.235), wine -18.64 -> -16.46 (-18.22), breast_cancer -0.56 -> 2.31 (-10.72), dequantised digits
    -59.18 -> -54.61 (-59.52).  Files saved under the earlier defaults (``affine_from="base"``,
    ``permutation="reverse"``) still load.
    """
    return _autoregressive("iaf", key, dim, num_layers=num_layers, hidden_dims=hidden_dims,
                           context_dim=context_dim, permutation=permutation, affine_from=affine_from,
                           activation=activation, scale=scale,
                           log_scale_bound=log_scale_bound, out_scale=out_scale, weight_init=weight_init,
                           trainable_base=trainable_base, scan=scan, dtype=dtype, base=base,
                           base_components=base_components, conditioner_bound=conditioner_bound)


@checked_builder
def realnvp(key, dim: int, *, num_layers: int = 10, hidden_dims: Sequence[int] = (64, 64), context_dim: int = 0,
            mask=None, permutation="auto", activation: str = "elu", affine_from: str = "data",
            log_scale_bound: float | None = None, conditioner_bound: float | None = 3.0, trainable_base: bool = False,
            base: str = "normal", base_components: int = MIXTURE_COMPONENTS, scan: bool = True, dtype=None) -> Flow:
    """RealNVP: affine coupling layers, one pass in both directions.

    Each layer keeps the coordinates ``A`` (``mask`` True; default: the first half) and maps the
    others ``B`` affinely with shift ``t`` and scale from a network of ``A`` (and the context).
    ``affine_from`` says in which direction that map is written:

    - ``"data"`` (default): from data ``y`` to base ``x``, as MAF's layers (and flowjax's flows,
      whose ``invert=True`` default is the same choice): inverse ``x_B = y_B * softplus(r + log(e - 1))
      + t`` with the log-scale soft-clamped to ``(-B, B)``, forward ``y_B = (x_B - t) / scale``;
      log|det J| of the forward map ``= -sum_B log scale``.  The layer is
      :class:`~nf_ppl.layers.Coupling` with ``Inverse(Affine("softplus", B))``.
    - ``"base"``: from base to data, RealNVP's own form: forward ``y_B = x_B * exp(s) + t``,
      ``s = B tanh(raw / B)``, log|det J| ``= sum_B s`` (:class:`~nf_ppl.layers.AffineCoupling`);
      ``AutoFlow``'s realnvp guides use it, with ``log_scale_bound=3.0``.

    Both directions are one pass either way; the choice changes how fast maximum likelihood
    learns.  ``log_scale_bound`` (``B``) defaults to 5.0 from the data side and 3.0 from the base
    side.  Written from the data side, with the softplus scale (linear, not exponential, in the
    network's output) and ``B = 5``, the default flow scored (test log-likelihood,
    3 seeds) two moons -1.167 against -1.204 from the base side (bound 3.0), breast_cancer -2.5
    against -6.5, dequantised digits -56.4 against -58.5, wine -17.3 against -17.6; at flowjax's
    architecture and equal epochs -1.27 against -1.50 on two moons (flowjax's coupling flow -1.25;
    ``bench/RESULTS.md``).  The base-side form needed the tighter bound 3.0: with 5.0 held-out rows
    outside the training range were stretched so far that breast_cancer fell to -18.6 nats.  Files
    saved under earlier defaults still load (``inference.load`` rebuilds them with those).

    Ten layers with ``permutation="auto"`` (random permutations between layers above two
    dimensions; before: six layers and reversal) measured better on every data set of the bench:
    dequantised digits -62.3 -> -58.4 nats (flowjax's affine MAF -59.5), breast_cancer -9.6 ->
    -5.7; with reversal the two halves of the coordinates never condition on each other.

    ``conditioner_bound=3.0`` (default; :mod:`nf_ppl.flows.common`): each network reads
    ``3 tanh(y_A / 3)``, so a row unlike the training rows gets shifts and scales within what the
    network gives on that box.  Unbounded, they grew with the row layer after layer: on dequantised
    digits one test row (no coordinate beyond the training range) went from 9.5 to 46 in the base
    and scored -2359 nats, and over 8 seeds the test mean was -58.5 nats (median row -53.7); bounded,
    -54.9 (median row -52.4, worst row -348), higher on every seed; breast_cancer -1.39 -> 1.15
    (8 seeds, every one higher).  On two moons it costs about 0.01 nats (-1.220 -> -1.231 over twelve
    initial draws of the demo's data; bench/RESULTS.md).
    """
    mask = half_mask(dim) if mask is None else mask
    check_affine_from(affine_from)
    if log_scale_bound is None:
        log_scale_bound = 5.0 if affine_from == "data" else 3.0

    def make(k):
        if affine_from == "base":
            return AffineCoupling(k, dim, mask, hidden_dims, context_dim=context_dim, activation=activation,
                                  log_scale_bound=log_scale_bound, dtype=dtype)
        return Coupling.init(k, dim, Inverse(Affine("softplus", log_scale_bound)), mask, hidden_dims,
                             context_dim=context_dim, activation=activation, dtype=dtype)

    return _build(make, key, dim, num_layers, permutation, scan, context_dim, trainable_base, dtype, base, base_components,
                  conditioner_bound)


for _name, _builder in (("maf", maf), ("iaf", iaf), ("realnvp", realnvp)):
    register_builder(_name, _builder)
