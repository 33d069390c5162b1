"""nf-ppl: normalizing flows and exact-density models as NumPyro transforms and distributions.

Layers (``nf_ppl.layers``) are ``numpyro.distributions.transforms.Transform`` subclasses; flows
(``nf_ppl.maf``, ``nf_ppl.iaf``, ``nf_ppl.realnvp``) are ``numpyro.distributions.Distribution``
subclasses whose pytree leaves are their trainable parameters.
"""

from .flows import assemble, bnaf, iaf, maf, naf, nsf, realnvp, spline_coupling
from .flow import Flow
from .glow import VariationalDequantizer, glow, glow_data_init, uniform_dequantize
from .glow import bits_per_dim as dequantized_bits_per_dim
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layer_names
from .nn import MADE, MLP
from .registry import BUILDERS, builders, get_builder, register_builder
from .models import (AUTOREGRESSIVE_FAMILIES, AutoregressiveModel, ConditionalMVN, LinearChainCRF, MBRResult,
                     SequenceModel, autoregressive_model, bits_per_dim, conditional_mvn, crf_forward, crf_score,
                     crf_viterbi, encoders, eos_terminated, pad_sequences, random_orderings, sequence_lengths,
                     top_k_filter, top_p_filter)
from .initialization import data_init
from .numpyro_utils import flow_module
from ._versions import warn_if_jaxlib_can_hang as _warn_if_jaxlib_can_hang

import jaxlib as _jaxlib

_warn_if_jaxlib_can_hang(_jaxlib.__version__)

__version__ = "0.1.0"

__all__ = [
    "AUTOREGRESSIVE_FAMILIES", "AutoregressiveModel", "ConditionalMVN", "autoregressive_model", "bits_per_dim",
    "conditional_mvn", "random_orderings",
    "VariationalDequantizer", "dequantized_bits_per_dim", "glow", "glow_data_init", "uniform_dequantize",
    "bnaf", "naf", "nsf", "spline_coupling",
    "BUILDERS", "builders", "get_builder", "register_builder",
    "Flow", "LinearChainCRF", "MADE", "MBRResult", "MLP", "SequenceModel", "assemble", "crf_forward",
    "crf_score", "crf_viterbi", "data_init", "encoders", "eos_terminated", "flow_module", "iaf", "maf",
    "pad_sequences", "realnvp", "sequence_lengths", "top_k_filter", "top_p_filter", *_layer_names,
]
