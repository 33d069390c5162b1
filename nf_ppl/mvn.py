"""Deprecated path: this module moved to :mod:`nf_ppl.models.mvn` (the exact-density models that are
not flows live in ``nf_ppl.models``).  Importing ``nf_ppl.mvn`` still works for this release and
warns; import from ``nf_ppl.models.mvn`` (or the names from ``nf_ppl``) instead."""

import warnings

from .models.mvn import *  # noqa: F401,F403
from .models.mvn import __all__  # noqa: F401

warnings.warn("nf_ppl.mvn moved to nf_ppl.models.mvn; "
              "the old path will be removed in the next release", DeprecationWarning, stacklevel=2)
