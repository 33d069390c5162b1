"""Flow guides for NumPyro's SVI: ``AutoFlow`` (whole latent space) and ``flow_sample`` (chosen sites).

``AutoFlow(model, flow="iaf", **flow_options)`` is an ``AutoContinuous`` guide.  With ``z`` the
model's unconstrained latent vector (all sites raveled, dimension ``D``)::

    u ~ N(0, I_D),   v = f(u),   z = loc + scale * (L v)

where ``f`` is one of our flows (``nf_ppl.BUILDERS`` by name, or any builder callable) whose
conditioners start near the identity map (MADE's last layer starts small) and ``L`` is a learned
unit lower-triangular matrix (``affine="tril"``, the default), so ``diag(scale) L`` is the
Cholesky factor of ``AutoMultivariateNormal`` in its own parametrisation (the entries of ``L`` are
free of the coordinates' units) and the flow, acting in these whitened coordinates, learns what
is not Gaussian.  ``affine="diag"`` drops ``L`` (``D`` instead of ``D^2 / 2`` parameters for
very large latent spaces); ``affine=False`` uses the flow alone.

Two defaults make the guide accurate and robust across seeds at the step budgets SVI is usually
given (bench/RESULTS.md, "Inference"):

* ``warm_start="pathfinder"``: ``loc``, ``scale`` and ``L`` start at the best Gaussian (by an ELBO
  estimate) along an L-BFGS path from the initial point (:mod:`inference.warm_start`), so a
  badly scaled or far-away posterior costs tens of quasi-Newton steps instead of thousands of
  Adam steps.  ``warm_start=None`` starts at ``init_loc_fn``'s point (NumPyro's
  ``init_to_uniform`` by default) with ``scale = init_scale`` and ``L = I``: ``AutoNormal``'s start.
* ``stl=True``: sticking-the-landing gradients (:mod:`inference.pathwise`): the ELBO gradient
  keeps only its path term, whose variance vanishes as the guide approaches the posterior, so
  the flow settles instead of jittering around the optimum.

Structure by latent dimension (``structure="auto"``, the default):

* ``D <= 256`` (``DENSE_MAX_DIM``): ``"dense"``, as above.  Its cost per draw grows as ``D^2``
  (``L`` and conditioners of width ``D``), and it is the most accurate guide measured there.
* ``D > 256``: ``"globals"``, whose cost grows linearly in ``D``.  The flow ``f`` covers ``k``
  chosen coordinates ``S`` (at most ``flow_dim``, default 8): those of the smallest sites, whole
  sites only (in a hierarchical model, its global parameters; the first ``flow_dim`` coordinates
  of the smallest site when no site is that small); every other coordinate gets its own
  ``loc`` and ``scale``, as in ``AutoNormal``::

      u ~ N(0, I_D),   y_S = f(u_S),   y_i = u_i  (i not in S),   z = loc + scale * y

  With ``cross=True`` every other coordinate also depends linearly on the flow's output,
  ``y_i = u_i + cross_i . f(u_S)`` (a learned ``D x k`` matrix), which makes the family exact for a
  Gaussian hierarchical model whose groups are independent given the globals; at the usual step
  budgets its ``D k`` extra parameters cost more in gradient noise than they gain, so it is off by
  default.  Both are :class:`nf_ppl.layers.SubspaceFlow` with the fixed basis of the coordinates
  in ``S``.  The structure starts as ``AutoNormal`` does (no warm start: the warm start's dense
  Hessians cost ``D`` Hessian-vector products), with the plain ELBO gradient (``stl="auto"``), the
  undamped step size for ``loc`` and ``scale`` and a tenth of it for the flow's parameters
  (:meth:`AutoFlow.learning_rate_factor`).  bench/RESULTS.md ("AutoFlow at
  scale") has the measurements behind these choices.

``get_transform``/``get_base_dist`` expose ``z = T(u)`` for ``NeuTraReparam``.
"""

from __future__ import annotations

import contextlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.transforms import IdentityTransform, biject_to
from numpyro.distributions.util import sum_rightmost
from numpyro.infer.autoguide import AutoContinuous
from numpyro.infer.initialization import init_to_uniform

import nf_ppl
from nf_ppl._checks import check_finite_params, is_concrete, is_int
from nf_ppl.layers import Chain, ElementwiseAffine, LULinear, SubspaceFlow

from ._io import builders, get_builder
from .pathwise import pathwise
from .warm_start import POOLINGS, dispersed_points, multi_path_start


def __getattr__(name):  # flow_sample moved to inference.guide_sites; the old import path keeps working
    if name == "flow_sample":
        from .guide_sites import flow_sample
        return flow_sample
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["AutoFlow", "check_continuous", "default_flow_options", "default_flow_dim"]

STRUCTURES = ("auto", "dense", "globals")
_BASE_WORDS = {"student_t": "Student-t", "mixture": "Gaussian-mixture"}
DENSE_MAX_DIM = 256  # "auto" uses the dense structure up to this many latent coordinates, "globals" above
GLOBALS_FLOW_STEP = 0.1  # "globals": factor on the default step size for the flow's parameters


MULTI_PATH_MAX_DIM = 32  # num_paths="auto": 4 paths up to this many latent coordinates, 1 above


def default_num_paths(dim: int) -> int:
    """Warm-start paths for ``num_paths="auto"``: 4 up to ``MULTI_PATH_MAX_DIM`` latent coordinates, 1 above.

    Each path costs ``D`` Hessian-vector products per iterate (its dense Laplace Gaussians), so four
    paths cost four times the set-up; where that is cheap they buy the report of separate modes. On
    posteriordb the extra paths changed no guide's accuracy beyond seed noise (bench/RESULTS.md)."""
    return 4 if int(dim) <= MULTI_PATH_MAX_DIM else 1


def default_flow_dim(dim: int) -> int:
    """Most coordinates the flow of ``structure="globals"`` acts on: ``min(D, 8)``."""
    return min(int(dim), 8)


def guide_form(name: str) -> dict:
    """Builder options that give a flow guide the form the guides were measured with, whatever the
    builders' maximum-likelihood defaults: maf/iaf layers start near the identity (``out_scale=0.01``,
    so the guide starts at its Gaussian); maf, iaf and nsf keep reversal between layers (the builders'
    own default is ``"auto"``); iaf's and realnvp's affine maps are written from the base side
    (realnvp's exp scales bounded by e^3); no builder bounds its conditioners' inputs
    (``conditioner_bound=None``).  Used by ``AutoFlow`` and ``AmortizedFlowGuide``."""
    opts = {}
    if name in ("maf", "iaf"):
        opts["out_scale"] = 0.01
    if name in ("maf", "iaf", "nsf"):
        opts["permutation"] = "reverse"
    if name == "iaf":
        opts["affine_from"] = "base"
    if name == "realnvp":
        opts.update(affine_from="base", log_scale_bound=3.0)
    if name in ("maf", "iaf", "realnvp", "nsf", "spline_coupling"):
        opts["conditioner_bound"] = None
    return opts


def default_flow_options(name: str, dim: int) -> dict:
    """Defaults used by ``AutoFlow`` for a latent space of size ``dim``: 5 layers, hidden width ``max(8, dim)``,
    in the guides' form (:func:`guide_form`).

    Narrow conditioners (about ``dim`` units, the least a MADE allows) train with less gradient
    noise than wide ones at the step budgets SVI is usually given; five layers rather than three
    reach into Neal's funnel (sd(v) error 0.05 instead of 0.17 over 4 seeds) and lower k-hat on
    every posteriordb posterior tried (bench/RESULTS.md).
    """
    if name == "realnvp" and dim < 2:
        raise ValueError("realnvp needs a latent dimension of at least 2; use 'iaf' or 'maf'")
    width = max(8, dim)
    return {"num_layers": 5, "hidden_dims": (width, width), **guide_form(name)}


def check_continuous(model, args=(), kwargs=None, *, owner="AutoFlow"):
    """Raise a clear ``ValueError`` when ``model`` has discrete latent sample sites."""
    kwargs = kwargs or {}
    with handlers.block():
        # values from init_to_uniform, so improper priors (no .sample) are fine; discrete sites are sampled
        trace = handlers.trace(handlers.substitute(handlers.seed(model, 0), substitute_fn=init_to_uniform)
                               ).get_trace(*args, **kwargs)
    discrete = [name for name, site in trace.items()
                if site["type"] == "sample" and not site["is_observed"]
                and site["fn"].support.is_discrete and not site.get("infer", {}).get("enumerate")]
    if discrete:
        raise ValueError(
            f"{owner} needs continuous latent variables, but the model has discrete latent site(s) "
            f"{discrete}. Marginalise them out by enumeration (decorate the model with "
            f"numpyro.contrib.funsor.config_enumerate / infer={{'enumerate': 'parallel'}} and use "
            f"TraceEnum_ELBO), or use AutoGuideList with {owner} on the continuous sites "
            f"(handlers.block(model, hide={discrete})) and a discrete guide for the others.")
    return trace


ENUMERATION_MIN_NUMPYRO = (0, 21)  # TraceEnum_ELBO skips guide-only (auxiliary) sites from 0.21 on


def _numpyro_version() -> tuple:
    parts = []
    for piece in numpyro.__version__.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _is_enumerated(site) -> bool:
    """A discrete latent sample site marked for enumeration (``config_enumerate``, ``infer={'enumerate': ...}``)."""
    return (site["type"] == "sample" and not site["is_observed"] and site["fn"].support.is_discrete
            and bool(site.get("infer", {}).get("enumerate")))


@contextlib.contextmanager
def _enumerated_sites_pass(active: bool):
    """Let NumPyro's guide set-up accept discrete sites marked for enumeration.

    ``AutoGuide._setup_prototype`` asks ``biject_to`` for every discrete latent site only to raise
    "Continuous inference cannot handle discrete sample site" early; the rest of the set-up already
    handles enumerated sites (``initialize_model`` sums them out of the potential with funsor and
    leaves them out of the latent vector).  For the duration of the set-up, and only when the model
    has enumerated sites (``check_continuous`` has refused every other discrete site by then),
    ``biject_to`` answers the identity for discrete supports."""
    if not active:
        yield
        return
    import numpyro.infer.autoguide as numpyro_autoguide

    original = numpyro_autoguide.biject_to

    def identity_for_discrete(constraint):
        return IdentityTransform() if constraint.is_discrete else original(constraint)

    numpyro_autoguide.biject_to = identity_for_discrete
    try:
        yield
    finally:
        numpyro_autoguide.biject_to = original


def _resolve_builder(flow):
    if isinstance(flow, str):
        return flow, get_builder(flow)
    if isinstance(flow, nf_ppl.Flow):
        return "instance", flow
    if callable(flow):
        return getattr(flow, "__name__", "custom"), flow
    raise TypeError(f"flow must be a builder name {sorted(builders())}, a builder callable or an nf_ppl.Flow; "
                    f"got {type(flow).__name__}")


class AutoFlow(AutoContinuous):
    """Normalizing-flow guide over the whole (unconstrained) latent space.

    Args:
        model: a NumPyro model with continuous latent sites.
        flow: builder name (``"iaf"`` default, ``"maf"``, ``"realnvp"``, any name in
            ``nf_ppl.BUILDERS`` or registered with ``inference.register_builder``), a callable
            ``builder(key, dim, **options) -> Flow``, or a ready ``nf_ppl.Flow`` of event size ``D``.
        prefix: prefix of the param sites (``{prefix}_flow$params``, ``{prefix}_loc_shift``,
            ``{prefix}_scale``, ``{prefix}_lower``).
        init_loc_fn: NumPyro init strategy for ``loc`` (default ``init_to_uniform``, NumPyro's default).
        init_scale: initial ``scale`` of every latent coordinate (default 0.1, as ``AutoNormal``).
        scale_bounds: ``(low, high)`` the scale is clipped to (numerical safety).
        affine: the output layer after the flow: ``"tril"`` (default; ``z = loc + scale * (L v)``
            with a learned unit lower-triangular ``L``), ``"diag"`` (``z = loc + scale * v``) or
            ``False`` (the flow alone).  ``True`` means ``"tril"``.
        seed: seed of the flow's initial parameters; ``None`` (default) draws them from the SVI key.
        sites: optional list of site names; the guide then covers only these (the model is
            wrapped in ``handlers.block(model, expose=sites)``), for use in ``AutoGuideList``.
        warm_start: ``"pathfinder"`` (default) starts ``loc``, ``scale`` and ``L`` at the best
            Gaussian along an L-BFGS path from the initial point (see :mod:`inference.warm_start`;
            the plain start is kept when it scores better; for latent spaces larger than
            ``warm_start_max_dim``, with ``affine=False`` or with ``structure="globals"`` the warm
            start is skipped); ``None`` starts at ``init_loc_fn``'s point with ``init_scale``, ``L = I``.
        stl: "sticking the landing" gradients: the guide's log-density holds its parameters
            fixed, so the ELBO gradient keeps only its path term (unbiased, and its variance
            vanishes as the guide approaches the posterior; see :mod:`inference.pathwise`).
            ``"auto"`` (default): on for the dense structure, off for ``"globals"``; ``False``
            gives the plain reparametrised ELBO gradient.
        structure: ``"auto"`` (default; ``"dense"`` up to ``DENSE_MAX_DIM = 256`` latent
            coordinates, ``"globals"`` above, see the module docstring), ``"dense"`` or
            ``"globals"``.  ``"auto"`` keeps ``"dense"`` when ``affine`` is not ``"tril"`` or
            ``flow`` is a ready ``Flow``.  ``guide.structure`` says which is in use after set-up.
        flow_dim: for ``"globals"``, the most coordinates the flow covers (default ``min(D, 8)``):
            those of the smallest sites (see the module docstring); after set-up
            ``guide.flow_coordinates`` lists them and ``guide.flow_dim`` is their number.
        cross: for ``"globals"``, also learn a linear dependence of every other coordinate on the
            flow's output (default ``False``; see the module docstring).
        num_paths: L-BFGS paths of the warm start, run at once (``vmap``; ``"auto"``, the default: 4 up to
            32 latent coordinates, 1 above, :func:`default_num_paths`): the first from
            ``init_loc_fn``'s point, the others from points uniform in ``(-2, 2)^D`` in unconstrained
            space (NumPyro's ``init_to_uniform`` rule), as in multi-path Pathfinder.  The paths'
            Gaussians are grouped into modes; when they end in more than one, a warning gives the
            modes' estimated masses and ``guide.warm_start_info`` holds ``num_modes``,
            ``mode_locs`` (unconstrained) and ``mode_weights``.  ``num_paths=1`` is the single path.
        path_pooling: ``"best"`` (default) starts from the path with the best ELBO estimate;
            ``"resample"`` starts, when the paths found several modes, from the moments of the
            importance-weighted draws of the modes' mixture, a broad Gaussian covering all of them
            (for ``loss=inference.MassCovering()``, which keeps the modes a guide starts with; the
            ELBO drops all but one again).
        **flow_options: passed to the builder (defaults: ``num_layers=5``, ``hidden_dims=(w, w)`` with
            ``w = max(8, D)``, and for maf/iaf ``out_scale=0.01``, a near-identity start; for
            ``"globals"`` the builder makes a flow of ``flow_dim`` coordinates, ``w = max(8, flow_dim)``).

    After set-up (the first SVI call), ``guide.warm_start_info`` holds the warm start's ELBO
    estimate, the L-BFGS iteration it chose (-1: the plain start; -2: the pooled Gaussian) and the
    modes the paths found, or None without a warm start.

    Discrete latent sites marked for enumeration (``numpyro.contrib.funsor.config_enumerate``) are
    summed out exactly: train with ``TraceEnum_ELBO()`` (the guide covers the continuous sites and
    samples each inside its plates, which ``TraceEnum_ELBO`` needs) and draw the discrete sites'
    posterior with ``Predictive(model, guide=guide, params=params, infer_discrete=True)``;
    ``guide.enumerated_sites`` names them.  Other discrete sites are refused with a ``ValueError``.
    Enumeration needs ``funsor`` (``pip install nf-ppl[enum]``).

    Suggested optimiser: ``optax.adam(1e-2)`` or ``numpyro.optim.ClippedAdam(1e-2, clip_norm=10)``
    for a few thousand steps (see :func:`inference.suggest_optimizer`).
    """

    def __init__(self, model, flow="iaf", *, prefix="auto", init_loc_fn=init_to_uniform,
                 init_scale: float = 0.1, scale_bounds=(1e-5, 1e3), affine="tril", seed: int | None = None,
                 sites=None, warm_start: str | None = "pathfinder", stl="auto", structure: str = "auto",
                 flow_dim: int | None = None, cross: bool = False, num_paths="auto", path_pooling: str = "best",
                 **flow_options):
        self._flow_name, self._builder = _resolve_builder(flow)
        if num_paths != "auto" and (isinstance(num_paths, bool) or not isinstance(num_paths, (int, np.integer))
                                    or num_paths < 1):
            raise ValueError(f"num_paths must be a positive int or 'auto'; got {num_paths!r}")
        if path_pooling not in POOLINGS:
            raise ValueError(f"path_pooling must be one of {POOLINGS}; got {path_pooling!r}")
        self._num_paths, self._path_pooling = num_paths, path_pooling
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}; got {structure!r}")
        if flow_dim is not None and (isinstance(flow_dim, bool) or not isinstance(flow_dim, (int, np.integer))
                                     or flow_dim < 1):
            raise ValueError(f"flow_dim must be a positive int or None; got {flow_dim!r}")
        if not isinstance(cross, bool):
            raise TypeError(f"cross must be True or False; got {cross!r}")
        self._structure_choice, self._flow_dim_choice, self.structure = structure, flow_dim, None
        self._cross = cross
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive; got {init_scale}")
        lo, hi = scale_bounds
        if not 0 < lo < hi:
            raise ValueError(f"scale_bounds must be (low, high) with 0 < low < high; got {scale_bounds}")
        if affine is True:
            affine = "tril"
        if affine not in ("tril", "diag", False, None):
            raise ValueError(f"affine must be 'tril', 'diag' or False; got {affine!r}")
        self._init_scale, self._scale_bounds, self._affine = float(init_scale), (float(lo), float(hi)), affine or None
        self._seed = None if seed is None else int(seed)
        if stl not in ("auto", True, False):
            raise ValueError(f"stl must be 'auto', True or False; got {stl!r}")
        self._stl_choice = stl
        if warm_start not in ("pathfinder", None, False):
            raise ValueError(f"warm_start must be 'pathfinder' or None; got {warm_start!r}")
        self._warm_start, self.warm_start_info = warm_start or None, None
        self._flow_options, self._template, self._base_params = dict(flow_options), None, None
        self._sites = None if sites is None else list(sites)
        if self._sites is not None:
            model = handlers.block(model, expose=self._sites)
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    warm_start_max_dim = 256  # dense Hessians along the path cost D Hessian-vector products each

    # -- setup --------------------------------------------------------------------------------
    def _setup_prototype(self, *args, **kwargs):
        trace = check_continuous(self.model, args, kwargs, owner=type(self).__name__)
        self.enumerated_sites = tuple(name for name, site in trace.items() if _is_enumerated(site))
        if self.enumerated_sites and _numpyro_version() < ENUMERATION_MIN_NUMPYRO:
            raise RuntimeError(f"{type(self).__name__} on a model with enumerated discrete sites "
                               f"{list(self.enumerated_sites)} needs NumPyro >= "
                               f"{'.'.join(map(str, ENUMERATION_MIN_NUMPYRO))} (older TraceEnum_ELBO fails on an "
                               f"autoguide's auxiliary latent site); this is NumPyro {numpyro.__version__}: "
                               "pip install -U numpyro")
        try:
            with _enumerated_sites_pass(bool(self.enumerated_sites)):
                super()._setup_prototype(*args, **kwargs)
        except RuntimeError as err:
            if "valid initial parameters" not in str(err):
                raise
            raise ValueError(f"{type(self).__name__}: no initial point where the model's log-density and its gradient "
                             "are finite (NumPyro tried init_loc_fn's values): pass init_loc_fn=numpyro.infer."
                             "init_to_value(values={...}) with finite values inside each site's support, or check "
                             "the model's log-density") from err
        key = jax.random.PRNGKey(0 if self._seed is None else self._seed)
        dtype = jnp.result_type(self._init_latent)
        dim = self.latent_dim
        self.structure = self._resolve_structure(dim)
        self.flow_coordinates = None
        if self.structure == "globals":
            self.flow_coordinates = self._smallest_sites(min(dim, self._flow_dim_choice or default_flow_dim(dim)))
        self.flow_dim = None if self.flow_coordinates is None else len(self.flow_coordinates)
        self._template = self._make_flow(key, self.flow_dim or dim, dtype)
        check_finite_params(self._template, "AutoFlow's flow")
        if self._template.base_parts() and self.structure == "globals":
            kind = self._template.base_kind
            why = ("structure='globals' was asked for" if self._structure_choice == "globals" else
                   f"this model has {dim} latent coordinates (> {DENSE_MAX_DIM}), so structure='auto' chose 'globals'")
            raise ValueError(f"a {_BASE_WORDS.get(kind, kind)} base (base={kind!r}) needs AutoFlow's dense structure: "
                             f"its parameters are per latent coordinate, and {why}; pass structure='dense'")
        self._treedef = jax.tree_util.tree_structure(self._template)
        self._start_scale = jnp.full(dim, self._init_scale, dtype)
        self._loc_unit = jnp.ones(dim, dtype)  # loc = start + loc_unit * shift (see _get_posterior)
        dense_tril = self.structure == "dense" and self._affine == "tril"
        self._start_lower = jnp.zeros((dim, dim), dtype) if dense_tril else None
        if self.structure == "globals":  # the flow's coordinates as a fixed basis; nothing carried across yet
            k = len(self.flow_coordinates)  # one-hot columns, without a D x D identity in memory
            self._basis = jnp.zeros((dim, k), dtype).at[jnp.asarray(self.flow_coordinates), jnp.arange(k)].set(1)
        elif self._warm_start and self._affine and dim <= self.warm_start_max_dim:
            self._start_from_path(key)

    def _smallest_sites(self, k):
        """Indices (sorted) of the latent coordinates of the smallest sites, whole sites only, at most ``k``;
        the first ``k`` coordinates of the smallest site when no whole site fits."""
        offsets, start = [], 0
        for name, value in self._init_locs.items():
            offsets.append((int(np.size(value)), start))
            start += int(np.size(value))
        chosen = []
        for size, first in sorted(offsets, key=lambda t: t[0]):  # stable: model order among equal sizes
            if len(chosen) + size > k:
                break
            chosen += range(first, first + size)
        if not chosen:
            size, first = min(offsets, key=lambda t: t[0])
            chosen = list(range(first, first + k))
        return tuple(sorted(chosen))

    def _resolve_structure(self, dim):
        if self._structure_choice == "globals":
            if self._affine != "tril":
                raise ValueError(f"structure='globals' brings its own affine part (z = loc + scale * v); "
                                 f"leave affine at its default; got affine={self._affine!r}")
            return "globals"
        if self._structure_choice == "dense" or self._affine != "tril" or self._flow_name == "instance":
            return "dense"
        return "globals" if dim > DENSE_MAX_DIM else "dense"

    def learning_rate_factor(self) -> float | dict:
        """Factor on the default step size (read by ``suggest_optimizer(..., guide=self)``): a float, or
        a dict from parameter name to factor (the others get 1).

        ``min(1, 30 / D)`` for a warm-started dense guide, whose ``O(D^2)`` parameters each move by about
        the step size per Adam step (:func:`inference.learning_rate_factor`), so that training does not
        undo a good start; 1 for a dense guide without a warm start, which has to travel from
        ``init_loc_fn``'s point as ``AutoNormal`` does (at D = 1000 the damped step left such a guide at
        mean errors of 1.7 posterior sds after 2000 steps, the undamped one at 0.08).  For
        ``"globals"``: 1 for the locations and scales (parameters growing as ``D``, like
        ``AutoNormal``'s) and ``GLOBALS_FLOW_STEP = 0.1`` for the flow's parameters: each of its
        layers' shifts moves the same few coordinates that ``loc`` moves, so at the full step they
        overshoot together (on the D = 10,000 hierarchical model a group scale fell from 6.6 to 0.03
        in 200 steps and was still at 0.16, 13.6 posterior sds low, after 2000; at 0.1 the
        guide ends within 3 sds on every seed tried, bench/RESULTS.md)."""
        from .svi import learning_rate_factor

        if self.structure == "globals":
            return {self._flow_param_name: GLOBALS_FLOW_STEP}
        if self.warm_start_info is None:
            return 1.0
        return learning_rate_factor(self.latent_dim)

    def _log_density(self):
        potential_fn, unpack = self._potential_fn, self._unpack_latent

        def log_density(z):
            with handlers.block():
                return -potential_fn(unpack(z))

        return log_density

    def _finite_start(self, *arrays):
        if is_concrete(arrays[0]) and not all(np.all(np.isfinite(np.asarray(a))) for a in arrays):
            warnings.warn(f"{type(self).__name__}: the Pathfinder-style warm start gave a non-finite Gaussian (the "
                          "model's log-density is NaN or inf along the L-BFGS path); starting from init_loc_fn's "
                          "point instead", RuntimeWarning, stacklevel=3)
            return False
        return True

    def _start_from_path(self, key):
        """Replace the initial ``loc``/``scale``/``L`` by the multi-path warm start's Gaussian
        (:func:`inference.warm_start.multi_path_start`: path 0 from ``init_loc_fn``'s point, the others
        from points uniform in ``(-2, 2)^D``), and say so when the paths end in different modes."""
        self.num_paths = default_num_paths(self.latent_dim) if self._num_paths == "auto" else int(self._num_paths)
        x0s = dispersed_points(self._init_latent, jax.random.fold_in(key, 2), self.num_paths)
        found = multi_path_start(self._log_density(), x0s, key, pooling=self._path_pooling,
                                 init_scale=self._init_scale)
        start = found.start
        if not self._finite_start(start.loc, start.scale_tril):
            return
        lo, hi = self._scale_bounds
        if self._affine == "diag":  # marginal sds: the flow, acting on whitened coordinates, learns the rest
            scale = jnp.clip(jnp.sqrt(jnp.sum(start.scale_tril ** 2, -1)), lo, hi)
        else:
            scale = jnp.clip(jnp.diagonal(start.scale_tril), lo, hi)
        self._init_latent = start.loc.astype(self._init_latent.dtype)
        self._start_scale = scale.astype(self._start_scale.dtype)
        self._loc_unit = self._start_scale  # loc moves in units of the warm start's posterior scale
        if self._start_lower is not None:
            self._start_lower = jnp.tril(start.scale_tril / jnp.diagonal(start.scale_tril)[:, None], -1).astype(
                self._start_lower.dtype)
        self.warm_start_info = {"elbo": start.elbo, "iteration": start.iteration, "num_paths": self.num_paths,
                                "num_modes": found.num_modes, "mode_locs": found.mode_locs,
                                "mode_weights": found.mode_weights, "pooling": self._path_pooling}
        if found.num_modes > 1 and self._path_pooling == "best":
            masses = ", ".join(f"{w:.2f}" for w in found.mode_weights)
            warnings.warn(f"{type(self).__name__}: the warm start's {self.num_paths} L-BFGS paths ended in "
                          f"{found.num_modes} separate modes (estimated posterior masses {masses}; their unconstrained "
                          "locations are in guide.warm_start_info['mode_locs']). An ELBO-trained guide keeps one "
                          "mode. To cover them all: AutoFlow(model, 'maf', stl=False, path_pooling='resample') "
                          "trained with loss=inference.MassCovering()", RuntimeWarning, stacklevel=4)

    def _make_flow(self, key, dim, dtype):
        if self._flow_name == "instance":
            flow = self._builder
            if flow.flow_event_shape != (dim,):
                raise ValueError(f"the given flow has event shape {flow.flow_event_shape} but the model's latent "
                                 f"space has {dim} unconstrained coordinates")
        else:
            opts = default_flow_options(self._flow_name, dim) if self._flow_name in builders() else {}
            opts.update(self._flow_options)
            opts.setdefault("dtype", dtype)
            flow = self._builder(key, dim, **opts)
        if not isinstance(flow, nf_ppl.Flow):
            raise TypeError(f"the flow builder must return an nf_ppl.Flow; got {type(flow).__name__}")
        if flow.context_dim:
            raise ValueError("AutoFlow needs an unconditional flow (context_dim=0); see AmortizedFlowGuide")
        return flow

    # -- enumerated discrete sites ------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        """Sample the latent sites; for a model with enumerated discrete sites each site is sampled inside
        its plates (``TraceEnum_ELBO`` needs every plate of the model in the guide's trace, which
        NumPyro's ``AutoContinuous`` guides leave out, so they fail there with a ``KeyError``)."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        if not self.enumerated_sites:
            return super().__call__(*args, **kwargs)
        latent = self._sample_latent(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        result = {}
        for name, unconstrained in self._unpack_latent(latent).items():
            site = self.prototype_trace[name]
            transform = biject_to(site["fn"].support)
            value = transform(unconstrained)
            event_dim = site["fn"].event_dim
            log_density = -transform.log_abs_det_jacobian(unconstrained, value)
            log_density = sum_rightmost(log_density, jnp.ndim(log_density) - jnp.ndim(value) + event_dim)
            with contextlib.ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    stack.enter_context(plates[frame.name])
                result[name] = numpyro.sample(name, dist.Delta(value, log_density=log_density, event_dim=event_dim))
        return result

    # -- the distribution ---------------------------------------------------------------------
    @staticmethod
    def _flow_layers(flow):
        layers = [] if flow.base_loc is None else [ElementwiseAffine(flow.base_loc, flow.base_log_scale)]
        return layers + [flow.transform]

    def _layers(self, flow, loc, scale, linear):
        """``u -> v -> z = loc + scale * v``: ``v = L f(u)`` (dense; ``L`` absent for ``affine="diag"``) or
        ``v = SubspaceFlow(basis, f, cross)(u)`` (globals: ``f`` on the chosen coordinates)."""
        if self.structure == "globals":
            basis, cross = linear
            layers = [SubspaceFlow(basis, Chain(self._flow_layers(flow)), cross)]
        else:
            layers = self._flow_layers(flow)
            if linear is not None:  # v -> L v (unit lower-triangular: LULinear with U = I, P = I, no bias)
                zeros = jnp.zeros_like(loc)
                layers.append(LULinear(linear, jnp.zeros_like(linear), zeros, zeros))
        if loc is not None:
            lo, hi = self._scale_bounds
            layers.append(ElementwiseAffine(loc, jnp.log(jnp.clip(scale, lo, hi))))
        return layers

    @property
    def _flow_param_name(self) -> str:
        """The one param site holding the flow's leaves (the name ``nf_ppl.flow_module`` gives too)."""
        return f"{self.prefix}_flow$params"

    def _get_posterior(self):
        if self._seed is None and self._flow_name != "instance":
            # initial flow parameters drawn from the SVI key (like AutoIAFNormal), same site as flow_module
            dtype = jnp.result_type(self._init_latent)
            leaves = numpyro.param(self._flow_param_name, lambda key: jax.tree_util.tree_leaves(
                self._make_flow(key, self.flow_dim or self.latent_dim, dtype)))
            flow = jax.tree_util.tree_unflatten(self._treedef, leaves)
        else:
            flow = nf_ppl.flow_module(f"{self.prefix}_flow", self._template)
        loc = scale = linear = None
        if self._affine:
            shift = numpyro.param(f"{self.prefix}_loc_shift", jnp.zeros_like(self._init_latent))
            loc = self._init_latent + self._loc_unit * shift
            scale = numpyro.param(f"{self.prefix}_scale", self._start_scale, constraint=constraints.softplus_positive)
            if self.structure == "globals":
                cross = (numpyro.param(f"{self.prefix}_cross", jnp.zeros_like(self._basis)) if self._cross else None)
                linear = (self._basis, cross)
            elif self._affine == "tril":  # only the strict lower triangle is used
                linear = numpyro.param(f"{self.prefix}_lower", self._start_lower)
        posterior = nf_ppl.Flow(Chain(self._layers(flow, loc, scale, linear)), (self.latent_dim,),
                                **flow.base_parts())
        return pathwise(posterior) if self.stl else posterior

    @property
    def stl(self) -> bool:
        """Whether the guide uses sticking-the-landing gradients (``"auto"``: for the dense structure only)."""
        if self._stl_choice == "auto":
            return self.structure != "globals"
        return bool(self._stl_choice)

    def get_base_dist(self):
        """The base of ``z = T(u)`` (for ``NeuTraReparam``): ``N(0, I)``, or the trained learned base of a guide
        with ``base="student_t"`` or ``base="mixture"`` (it comes from the params given to
        :meth:`use_base_params`, which :func:`inference.neutra_nuts` calls)."""
        if self._template is None or not self._template.base_parts():
            return dist.Normal(jnp.zeros(self.latent_dim), 1.0).to_event(1)
        if self._base_params is None:
            kind = self._template.base_kind
            raise ValueError(f"this AutoFlow has a learned {_BASE_WORDS.get(kind, kind)} base: call "
                             "guide.use_base_params(params) first (inference.neutra_nuts does)")
        flow = jax.tree_util.tree_unflatten(self._treedef, self._base_params[self._flow_param_name])
        if flow.base_mixture is not None:
            return flow.base_dist
        df = flow.base_df
        return dist.StudentT(df, jnp.zeros_like(df), jnp.ones_like(df)).to_event(1)

    def use_base_params(self, params):
        """Remember trained ``params`` for :meth:`get_base_dist` (a learned base depends on them)."""
        self._base_params = params

    def get_flow(self, params):
        """The trained guide as a plain ``nf_ppl.Flow`` over the unconstrained latent vector."""
        posterior = handlers.substitute(self._get_posterior, params)()
        children, aux = posterior.tree_flatten()
        return nf_ppl.Flow.tree_unflatten(aux, children)  # ordinary gradients, e.g. for further fitting

    def median(self, params):
        """The image of the base's centre ``u = 0``: the median for an elementwise-monotone guide with a
        normal or Student-t base.  For a mixture base, or for the marginal medians of a general flow,
        use ``quantiles(params, [0.5])``."""
        z = self.get_transform(params)(jnp.zeros(self.latent_dim))
        return self._unpack_and_constrain(z, params)

    def quantiles(self, params, quantiles, *, num_samples: int = 10000, seed: int = 0):
        """Marginal quantiles of each latent site (in its support), from ``num_samples`` draws of the guide:
        ``{site: array of shape (len(quantiles),) + site shape}``.  A flow's marginals have no closed form,
        so these are Monte Carlo estimates (NumPyro's Gaussian guides compute theirs exactly; NumPyro's
        ``AutoGuide.quantiles`` raised a bare ``NotImplementedError`` here)."""
        if not is_int(num_samples) or num_samples < 2:
            raise ValueError(f"num_samples must be an int >= 2; got {num_samples!r}")
        q = jnp.asarray(quantiles)
        if q.ndim > 1 or not bool(jnp.all((q >= 0) & (q <= 1))):
            raise ValueError(f"quantiles must be numbers in [0, 1]; got {quantiles!r}")
        z = self.get_flow(params).sample(jax.random.PRNGKey(seed), (int(num_samples),))
        draws = self._unpack_and_constrain(z, params)
        return {name: jnp.quantile(value, q, axis=0) for name, value in draws.items()}
