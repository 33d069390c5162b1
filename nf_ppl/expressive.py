"""Deprecated path: the spline and neural builders moved to :mod:`nf_ppl.flows.spline` and
:mod:`nf_ppl.flows.neural` (all builders live in ``nf_ppl.flows``, one module per family).
Importing ``nf_ppl.expressive`` still works for this release and warns; use ``nf_ppl.nsf`` etc. or
``nf_ppl.flows`` instead."""

import warnings

from .flows.neural import bnaf, naf, numerical_info  # noqa: F401
from .flows.spline import nsf, spline_coupling  # noqa: F401
from .roots import SolveInfo  # noqa: F401

__all__ = ["nsf", "spline_coupling", "bnaf", "naf", "numerical_info", "SolveInfo"]

warnings.warn("nf_ppl.expressive moved to nf_ppl.flows (nf_ppl.flows.spline, nf_ppl.flows.neural); "
              "the old path will be removed in the next release", DeprecationWarning, stacklevel=2)
