"""The builders' helpers and the affine builders, under their first module name.

Every builder now lives in :mod:`nf_ppl.flows` (one module per family: ``affine``, ``spline``,
``neural``; shared code in ``common``).  This module keeps ``from nf_ppl.builders import ...``
working; note that the attribute ``nf_ppl.builders`` is the registry function
:func:`nf_ppl.registry.builders`, so import from this module with ``from ... import``.
"""

from .flows.affine import iaf, maf, realnvp  # noqa: F401
from .flows.common import _build, _check_common, _permutations, assemble, depth_scale  # noqa: F401
