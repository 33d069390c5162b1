"""Flow layers: each a ``numpyro.distributions.transforms.Transform`` (see :class:`Bijector`)."""

from . import transformers
from .autoregressive import MaskedAffineAutoregressive, MaskedAutoregressive
from .base import Bijector, forward_and_log_det, inverse_and_log_det
from .composition import Chain, Stack
from .coupling import AdditiveCoupling, AffineCoupling, Coupling, half_mask
from .elementwise import ELU, ElementwiseAffine, LeakyReLU, SinhArcsinh, Softplus, Tanh
from .linear import LULinear, Permutation
from .subspace import SubspaceFlow, orthonormal_basis
from .image import (ConvNet, FactorOut, ImageActNorm, ImageAffineCoupling, ImageBijector, ImageChain, ImageCoupling,
                    ImageStack,
                    InvConv1x1, Squeeze, Unsqueeze)
from .normalization import ActNorm
from .neural import BlockNeuralAutoregressive, NeuralAutoregressive
from .spline import MaskedSplineAutoregressive, RationalQuadraticSpline, SplineCoupling
from .vi import Householder, Planar, Radial, Sylvester

__all__ = [
    "BlockNeuralAutoregressive", "MaskedSplineAutoregressive", "NeuralAutoregressive", "RationalQuadraticSpline",
    "SplineCoupling",
    "ConvNet", "FactorOut", "Householder", "ImageActNorm", "ImageAffineCoupling", "ImageBijector", "ImageChain",
    "ImageCoupling",
    "ImageStack", "InvConv1x1", "Planar", "Radial", "Squeeze", "Sylvester", "Unsqueeze",
    "SubspaceFlow", "orthonormal_basis",
    "ActNorm", "AdditiveCoupling", "AffineCoupling", "Bijector", "Chain", "Coupling", "MaskedAutoregressive",
    "transformers", "ELU", "ElementwiseAffine",
    "LULinear", "LeakyReLU", "MaskedAffineAutoregressive", "Permutation", "SinhArcsinh", "Softplus",
    "Stack", "Tanh", "forward_and_log_det", "half_mask", "inverse_and_log_det",
]
