"""Spline flows (Durkan et al. 2019): ``nsf`` (autoregressive rational-quadratic splines) and
``spline_coupling`` (coupling splines), stacked under ``lax.scan`` like ``maf``/``realnvp``.

Options shared by every builder are described in :mod:`nf_ppl.flows.common`.
"""

from __future__ import annotations

from typing import Sequence

from ..flow import Flow
from ..layers.coupling import half_mask
from ..layers.spline import MaskedSplineAutoregressive, SplineCoupling, check_num_bins, check_tail_bound
from ..registry import register_builder
from .common import _build, checked_builder, MIXTURE_COMPONENTS


@checked_builder
def nsf(key, dim: int, *, num_layers: int = 5, hidden_dims: Sequence[int] = (64, 64), num_bins: int = 8,
        tail_bound: float = 3.0, context_dim: int = 0, mode: str = "maf", permutation="auto",
        activation: str = "elu", min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3, conditioner_bound: float | None = 3.0, trainable_base: bool = False,
        base: str = "normal", base_components: int = MIXTURE_COMPONENTS, scan: bool = True, dtype=None) -> Flow:
    """Autoregressive neural spline flow (Durkan et al. 2019).

    Layers are :class:`~nf_ppl.layers.spline.MaskedSplineAutoregressive` with ``num_bins``
    rational-quadratic bins on ``[-tail_bound, tail_bound]`` (identity outside).  ``mode="maf"``
    (default): one-pass log-density, at most ``dim`` sequential sweeps to sample; ``mode="iaf"``: the reverse.
    ``permutation="auto"``: reversal between layers for ``dim <= 2``, a random permutation per layer
    above (as ``maf``): wine -16.2 -> -15.5 nats, breast_cancer -8.5 -> -4.2, dequantised digits
    -46.7 -> -43.0 against reversal, the default before (3 seeds; flowjax's spline MAF -17.4 /
    -12.0 / -50.4; bench/RESULTS.md).  ``AutoFlow``'s nsf guides keep reversal; files saved with
    it still load.  ``conditioner_bound=3.0`` (default; :mod:`nf_ppl.flows.common`): breast_cancer
    -3.14 -> -2.77 nats, digits -42.27 -> -42.06, two moons and wine unchanged (3 seeds).
    """
    check_num_bins(num_bins)
    check_tail_bound(tail_bound)

    def make(k):
        return MaskedSplineAutoregressive(
            k, dim, hidden_dims, num_bins=num_bins, tail_bound=tail_bound, mode=mode, context_dim=context_dim,
            activation=activation, min_bin_width=min_bin_width, min_bin_height=min_bin_height,
            min_derivative=min_derivative, dtype=dtype)

    return _build(make, key, dim, num_layers, permutation, scan, context_dim, trainable_base, dtype, base, base_components,
                  conditioner_bound)


@checked_builder
def spline_coupling(key, dim: int, *, num_layers: int = 6, hidden_dims: Sequence[int] = (64, 64),
                    num_bins: int = 8, tail_bound: float = 3.0, context_dim: int = 0, mask=None,
                    permutation="auto", activation: str = "elu", min_bin_width: float = 1e-3,
                    min_bin_height: float = 1e-3, min_derivative: float = 1e-3,
                    conditioner_bound: float | None = 3.0, trainable_base: bool = False, base: str = "normal",
                    base_components: int = MIXTURE_COMPONENTS, scan: bool = True, dtype=None) -> Flow:
    """Coupling neural spline flow: :class:`~nf_ppl.layers.spline.SplineCoupling` layers, one pass both ways.

    ``mask`` (default: the first half conditions the second) is shared by all layers; the
    permutation after each layer changes which coordinates the next one transforms
    (``permutation="auto"``: reversal for ``dim <= 2``, random above; with reversal alone the two
    halves never condition on each other: dequantised digits -50.4 -> -47.7 nats, breast_cancer
    -11.6 -> -8.6, flowjax's spline MAF -50.4 and -12.1; two moons unchanged).  ``conditioner_bound=3.0``
    (default; :mod:`nf_ppl.flows.common`): breast_cancer -7.73 -> -6.61 nats, digits -46.46 -> -46.08,
    wine -15.43 -> -15.34, two moons unchanged (3 seeds).
    """
    check_num_bins(num_bins)
    check_tail_bound(tail_bound)
    mask = half_mask(dim) if mask is None else mask

    def make(k):
        return SplineCoupling(k, dim, mask, hidden_dims, num_bins=num_bins, tail_bound=tail_bound,
                              context_dim=context_dim, activation=activation, min_bin_width=min_bin_width,
                              min_bin_height=min_bin_height, min_derivative=min_derivative, dtype=dtype)

    return _build(make, key, dim, num_layers, permutation, scan, context_dim, trainable_base, dtype, base, base_components,
                  conditioner_bound)


for _name, _builder in (("nsf", nsf), ("spline_coupling", spline_coupling)):
    register_builder(_name, _builder)
