"""Deprecated path: this module moved to :mod:`nf_ppl.models.sequence` (the exact-density models that are
not flows live in ``nf_ppl.models``).  Importing ``nf_ppl.sequence`` still works for this release and
warns; import from ``nf_ppl.models.sequence`` (or the names from ``nf_ppl``) instead."""

import warnings

from .models.sequence import *  # noqa: F401,F403
from .models.sequence import __all__  # noqa: F401

warnings.warn("nf_ppl.sequence moved to nf_ppl.models.sequence; "
              "the old path will be removed in the next release", DeprecationWarning, stacklevel=2)
