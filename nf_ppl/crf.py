"""Deprecated path: this module moved to :mod:`nf_ppl.models.crf` (the exact-density models that are
not flows live in ``nf_ppl.models``).  Importing ``nf_ppl.crf`` still works for this release and
warns; import from ``nf_ppl.models.crf`` (or the names from ``nf_ppl``) instead."""

import warnings

from .models.crf import *  # noqa: F401,F403
from .models.crf import __all__  # noqa: F401

warnings.warn("nf_ppl.crf moved to nf_ppl.models.crf; "
              "the old path will be removed in the next release", DeprecationWarning, stacklevel=2)
