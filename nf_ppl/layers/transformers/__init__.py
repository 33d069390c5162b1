"""Elementwise transformers for :class:`~nf_ppl.layers.MaskedAutoregressive` and
:class:`~nf_ppl.layers.Coupling` (the protocol is in :mod:`.base`)."""

from .affine import Affine, Shift, log_softplus_scale, soft_clamp
from .base import Inverse, Transformer, check_transformer
from .sigmoid import DeepSigmoid, sigmoidal_map
from .sinh_arcsinh import SinhArcsinhTransformer
from .spline import RQSpline, rational_quadratic_spline

SinhArcsinh = SinhArcsinhTransformer  # inside this namespace: ``transformers.SinhArcsinh()``

__all__ = ["Affine", "DeepSigmoid", "Inverse", "RQSpline", "Shift", "SinhArcsinh", "SinhArcsinhTransformer",
           "Transformer", "check_transformer", "log_softplus_scale", "rational_quadratic_spline", "sigmoidal_map",
           "soft_clamp"]
