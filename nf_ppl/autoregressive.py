"""Deprecated path: this module moved to :mod:`nf_ppl.models.autoregressive_density` (the exact-density models that are
not flows live in ``nf_ppl.models``).  Importing ``nf_ppl.autoregressive`` still works for this release and
warns; import from ``nf_ppl.models.autoregressive_density`` (or the names from ``nf_ppl``) instead."""

import warnings

from .models.autoregressive_density import *  # noqa: F401,F403
from .models.autoregressive_density import __all__  # noqa: F401

warnings.warn("nf_ppl.autoregressive moved to nf_ppl.models.autoregressive_density; "
              "the old path will be removed in the next release", DeprecationWarning, stacklevel=2)
