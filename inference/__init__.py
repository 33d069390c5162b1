"""nf-ppl inference: fit flows by maximum likelihood, save them safely, and use flows as NumPyro guides and priors.

Public API (see each docstring):

* ``fit(flow, data, ...) -> (flow, FitHistory)``: minibatch maximum likelihood with validation,
  early stopping, checkpoints/resume, sharding over local devices.
* ``save(flow, path, spec=...)``, ``load(path)``, ``build_flow(name, seed, dim, **options)``,
  ``build(spec)``: safe (.npz + JSON header + SHA-256, no pickle), atomic storage of flows.
* ``AutoFlow(model, flow="iaf", ...)``: flow guide for SVI (an ``AutoContinuous``), warm-started
  by ``gaussian_path_start`` and trained with sticking-the-landing gradients (``pathwise``);
  ``flow_sample(name, flow, ...)`` for hand-written guides; ``AmortizedFlowGuide`` for local latents.
* ``diagnose``, ``log_importance_weights``, ``iw_bound``, ``log_marginal_likelihood``, ``psis_khat``,
  ``khat_threshold``, ``psis_expectation``, ``importance_ess``, ``to_inference_data``,
  ``draws_to_inference_data``, ``compare``: diagnostics of trained guides (PSIS computed here,
  ArviZ 0.x and 1.x both accepted for the ArviZ output).
* ``run_svi``, ``suggest_optimizer``, ``neutra_nuts``: SVI and NeuTra-NUTS helpers; ``IWAE(K)``
  (importance-weighted bound, doubly-reparametrised gradients) and ``MassCovering(K)`` (reweighted
  wake-sleep's inclusive-KL update) as SVI losses beyond the ELBO.
"""

from ._fit import FitHistory, fit, make_optimizer
from ._io import FlowFileError, LegacyFileWarning, PrecisionCastWarning, build, build_flow, builders, load, register_builder, save, spec_of
from .autoguide import AutoFlow, check_continuous
from .guide_sites import flow_sample
from .objectives import IWAE, MassCovering
from .pathwise import PathwiseFlow, pathwise
from .diagnostics import (compare, diagnose, draws_to_inference_data, importance_ess, iw_bound,
                          log_importance_weights, log_marginal_likelihood, posterior_errors, to_inference_data)
from .psis import khat_threshold, psis, psis_expectation, psis_khat
from .svi import AmortizedFlowGuide, neutra_nuts, run_svi, suggest_optimizer
from .warm_start import GaussianStart, PathsStart, gaussian_path_start, multi_path_start

__all__ = ["AmortizedFlowGuide", "AutoFlow", "IWAE", "MassCovering", "FitHistory", "FlowFileError", "GaussianStart", "LegacyFileWarning", "PathwiseFlow",
           "PrecisionCastWarning",
           "build",
           "build_flow", "builders", "check_continuous", "compare", "diagnose", "draws_to_inference_data", "fit",
           "flow_sample", "gaussian_path_start", "multi_path_start", "PathsStart", "importance_ess", "iw_bound", "khat_threshold", "load",
           "log_importance_weights", "log_marginal_likelihood", "make_optimizer", "neutra_nuts", "pathwise",
           "posterior_errors", "psis", "psis_expectation", "psis_khat",
           "register_builder", "run_svi", "save", "spec_of", "suggest_optimizer", "to_inference_data"]
