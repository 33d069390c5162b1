"""Deprecated path: this module moved to :mod:`nf_ppl.models.encoders` (the exact-density models that are
not flows live in ``nf_ppl.models``).  Importing ``nf_ppl.encoders`` still works for this release and
warns; import from ``nf_ppl.models.encoders`` (or the names from ``nf_ppl``) instead."""

import warnings

from .models.encoders import *  # noqa: F401,F403
from .models.encoders import __all__  # noqa: F401

warnings.warn("nf_ppl.encoders moved to nf_ppl.models.encoders; "
              "the old path will be removed in the next release", DeprecationWarning, stacklevel=2)
