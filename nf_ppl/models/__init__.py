"""Exact-density models that are not flows: autoregressive densities (MADE/NADE families,
``autoregressive_density``), the linear-chain CRF (``crf``), autoregressive sequence models
(``sequence``) with their encoders (``encoders``) and decoding algorithms (``decoding``), and the
conditional multivariate normal baseline (``mvn``)."""

from . import encoders
from .autoregressive_density import (AUTOREGRESSIVE_FAMILIES, AutoregressiveModel, autoregressive_model,
                                     bits_per_dim, random_orderings)
from .crf import LinearChainCRF, crf_forward, crf_score, crf_viterbi
from .mvn import ConditionalMVN, conditional_mvn
from .sequence import (MBRResult, SequenceModel, eos_terminated, pad_sequences, sequence_lengths, top_k_filter,
                       top_p_filter)

__all__ = ["AUTOREGRESSIVE_FAMILIES", "AutoregressiveModel", "ConditionalMVN", "LinearChainCRF", "MBRResult",
           "SequenceModel", "autoregressive_model", "bits_per_dim", "conditional_mvn", "crf_forward", "crf_score",
           "crf_viterbi", "encoders", "eos_terminated", "pad_sequences", "random_orderings", "sequence_lengths",
           "top_k_filter", "top_p_filter"]
