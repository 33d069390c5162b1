"""Flow builders (``nf_ppl.flows``, as in zuko), one module per family, each registered by name (:mod:`nf_ppl.registry`).

- :mod:`.common`: what every builder shares (checks, permutations, ``assemble``, ``depth_scale``);
- :mod:`.affine`: ``maf``, ``iaf``, ``realnvp``;
- :mod:`.spline`: ``nsf``, ``spline_coupling``;
- :mod:`.neural`: ``bnaf``, ``naf`` and :func:`numerical_info`.

Glow (``nf_ppl.glow``) builds image flows and lives with its dequantisers.  A new builder goes in the
module of its family and registers itself at the bottom (``register_builder("name", fn)``).
"""

from .common import _build, _check_common, _permutations, assemble, depth_scale  # noqa: F401
from .affine import iaf, maf, realnvp  # registers maf, iaf, realnvp (in this order)
from .spline import nsf, spline_coupling
from .neural import bnaf, naf, numerical_info

__all__ = ["assemble", "bnaf", "depth_scale", "iaf", "maf", "naf", "nsf", "numerical_info", "realnvp",
           "spline_coupling"]
