"""SymPy derivations and checks for nf-ppl.

- :func:`change_of_variables`: Jacobian, determinant, inverse branches and the
  pushforward density of a map given as SymPy expressions.
- :mod:`symbolic.layers`: the flow layer families with generic conditioners.
- :func:`check_transform`: a numeric NumPyro transform against its SymPy twin.
- :class:`SymbolicTransform`: a NumPyro transform compiled from SymPy.
- :func:`catalogue` and ``nf-ppl verify`` (:func:`symbolic.cli.main`; ``--latex`` writes a standalone
  document with every derivation step).
- :func:`plot` / :func:`push_samples`: base density, pushforward density and pushed draws side by side.

``nf_ppl`` itself never imports SymPy; this package depends on it, not vice versa.
"""

from . import layers
from .catalogue import Example, catalogue, get_example
from .change_of_variables import ChangeOfVariables, InverseNotFoundWarning, change_of_variables
from .plot import plot, push_samples
from .check import CheckReport, check_transform, reference_log_abs_det
from .transform import SymbolicTransform, SymPyRegion, TransformSpec
from .twins import Twin, nf_ppl_twin, numpyro_twins, register_twin

__all__ = [
    "ChangeOfVariables", "CheckReport", "Example", "InverseNotFoundWarning", "SymPyRegion",
    "SymbolicTransform", "TransformSpec", "Twin", "catalogue", "change_of_variables", "check_transform",
    "get_example", "layers", "nf_ppl_twin", "numpyro_twins", "plot", "push_samples", "reference_log_abs_det",
    "register_twin",
]
