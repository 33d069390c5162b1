"""nf-ppl: normalizing flows and exact-density models as NumPyro transforms and distributions.

Layers (``nf_ppl.layers``) are ``numpyro.distributions.transforms.Transform`` subclasses; flows
(``nf_ppl.maf``, ``nf_ppl.iaf``, ``nf_ppl.realnvp``) are ``numpyro.distributions.Distribution``
subclasses whose pytree leaves are their trainable parameters.
"""

from .builders import BUILDERS, assemble, iaf, maf, realnvp
from .flow import Flow
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layer_names
from .nn import MADE, MLP
from .numpyro_utils import data_init, flow_module

__version__ = "0.1.0"

__all__ = ["BUILDERS", "Flow", "MADE", "MLP", "assemble", "data_init", "flow_module", "iaf", "maf",
           "realnvp", *_layer_names]
