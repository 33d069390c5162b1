"""Objectives beyond the ELBO for NumPyro's ``SVI``: the importance-weighted bound and a mass-covering update.

Both draw ``K`` particles ``z_k ~ q_theta`` (reparametrised) per step and use the log-weights
``log w_k = log p(x, z_k) - log q_theta(z_k)`` of the whole model (every sample site, plates
included), with self-normalised weights ``w~_k = w_k / sum_j w_j``.

:class:`IWAE` (Burda, Grosse and Salakhutdinov 2016) maximises the importance-weighted bound

    L_K = E[ log (1/K) sum_k w_k ]  <=  log p(x),

which tightens as ``K`` grows, so the guide is pushed to put mass wherever the posterior has it
rather than only where it is largest (``K = 1`` is the ELBO).  Its plain reparametrised gradient
gets noisier as ``K`` grows (the signal-to-noise ratio of the guide's gradient falls as
``1/sqrt(K)``); the doubly-reparametrised estimator (``estimator="dreg"``, default; Tucker, Lawson,
Gu and Maddison 2019) removes the score-function term and keeps the guide's gradient at

    grad_theta L_K  =  E[ sum_k  w~_k^2  (d/dz log w_k)(z_k) . dz_k/dtheta ],

whose variance vanishes as ``q`` approaches the posterior (the ``K``-particle version of
sticking the landing).  Parameters of the model itself get the usual ``sum_k w~_k grad log p``.

:class:`MassCovering` is the guide update of reweighted wake-sleep (Bornschein and Bengio 2015;
Le et al. 2019): it descends the inclusive divergence ``KL(p || q)`` estimated by self-normalised
importance sampling from ``q`` itself,

    grad_theta  =  - sum_k  w~_k  grad_theta log q_theta(z_k)      (z_k held fixed),

so ``q`` is pulled toward every region where the weights are large, i.e. where ``q`` has too little
mass: the fit covers the posterior instead of seeking one mode.  When the weights are degenerate
(their effective sample size ``ESS = 1 / sum_k w~_k^2`` is a few particles, as for a guide still far
from a posterior of a few dozen dimensions) that estimate chases single draws and can diverge; so the
update is mixed with the ELBO's reparametrised gradient, ``rho * inclusive + (1 - rho) * ELBO`` with
``rho = min(1, ESS / elbo_below_ess)`` (default ``elbo_below_ess = 8``): pure inclusive-KL steps once
eight or more particles carry the weight, mostly ELBO steps while one or two do.  ``KL(p || q)`` is infinite for a
``q`` with lighter tails than ``p``, which is why this objective spreads guides out where the
ELBO shrinks them.  The reported loss is ``-L_K`` (the importance-weighted bound), so histories
compare with :class:`IWAE`'s.  It needs ``log q_theta`` at fixed points with its parameter
gradient, so it refuses guides whose log-density holds the parameters fixed (``AutoFlow`` with
sticking-the-landing gradients: pass ``stl=False``); for a flow guide, ``log q`` at a given point
uses the flow's inverse (one pass for ``maf``/``realnvp``/``nsf``; at most ``D`` sequential
sweeps, stopped at their fixed point, for ``iaf``).

Neither objective handles subsampled plates (the weights are of the whole model) or discrete
latent sites; both refuse them with a ``ValueError``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions import Delta
from numpyro.infer.elbo import ELBO
from numpyro.infer.util import log_density

__all__ = ["IWAE", "MassCovering", "ESTIMATORS"]

ESTIMATORS = ("dreg", "reparam")


def _check_particles(num_particles):
    if isinstance(num_particles, bool) or not isinstance(num_particles, (int, np.integer)) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive int; got {num_particles!r}")
    return int(num_particles)


def _reparam_sites(trace):
    """Names and values of the guide's own random sites (not ``Delta`` sites, which follow from the others)."""
    return {name: site["value"] for name, site in trace.items()
            if site["type"] == "sample" and not site["is_observed"] and not isinstance(site["fn"], Delta)}


def _check_trace(model_trace, guide_trace, owner):
    for name, site in model_trace.items():
        if site["type"] == "plate" and site["args"][1] is not None and site["args"][1] < site["args"][0]:
            raise ValueError(f"{owner} uses importance weights of the whole model and does not support "
                             f"subsampling; plate {name!r} subsamples {site['args'][1]} of {site['args'][0]}")
        if (site["type"] == "sample" and not site["is_observed"] and site["fn"].support.is_discrete
                and name not in guide_trace):
            raise ValueError(f"{owner} needs every latent site in the guide; {name!r} is discrete and not "
                             "in the guide (enumeration is not supported by this objective)")
    for name, site in guide_trace.items():
        if site["type"] == "sample" and not site["is_observed"] and site["fn"].support.is_discrete:
            raise ValueError(f"{owner} needs reparametrised guides; the guide's site {name!r} is discrete")


def _has_params(trace):
    return any(site["type"] == "param" for site in trace.values())


class _WeightedObjective(ELBO):
    """``K`` importance-weighted particles of the whole model; subclasses say how gradients combine them."""

    def __init__(self, num_particles: int = 8):
        super().__init__(num_particles=_check_particles(num_particles))

    def _particle(self, key, param_map, model, guide, args, kwargs):
        """Scalars of one particle: ``log w``, and the subclass's surrogate pieces."""
        raise NotImplementedError

    def _traces(self, key, param_map, model, guide, args, kwargs):
        k_guide, k_model = jax.random.split(key)
        log_q, guide_trace = log_density(handlers.seed(guide, k_guide), args, kwargs, param_map)
        seeded_model = handlers.replay(handlers.seed(model, k_model), guide_trace)
        log_p, model_trace = log_density(seeded_model, args, kwargs, param_map)
        _check_trace(model_trace, guide_trace, type(self).__name__)
        return log_p, log_q, model_trace, guide_trace

    @staticmethod
    def _log_density_at(fn, values, param_map, args, kwargs, key):
        """``log`` density of the model or guide ``fn`` with its random sites conditioned on ``values``."""
        conditioned = handlers.condition(handlers.seed(fn, key), data=values)
        return log_density(conditioned, args, kwargs, param_map)[0]

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        keys = jax.random.split(rng_key, self.num_particles)
        parts = jax.vmap(lambda k: self._particle(k, param_map, model, guide, args, kwargs))(keys)
        # a particle whose weight or surrogate piece is NaN or inf (an overflow far in the guide's tail) gets
        # weight 0 instead of turning every weight into NaN; with none finite the loss is NaN and
        # run_svi's stable update skips the step
        finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in parts.values()]), 0)
        log_w = jnp.where(finite, parts["log_w"], -jnp.inf)
        bound = jax.nn.logsumexp(log_w) - jnp.log(self.num_particles)
        weights = jax.lax.stop_gradient(jax.nn.softmax(log_w))
        parts = {k: jnp.where(finite, v, 0.0) for k, v in parts.items()}
        surrogate = self._surrogate(parts, weights, bound)
        value = jax.lax.stop_gradient(bound)
        return {"loss": -(value + surrogate - jax.lax.stop_gradient(surrogate)), "mutable_state": None}

    def loss(self, rng_key, param_map, model, guide, *args, **kwargs):
        return self.loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)["loss"]


class IWAE(_WeightedObjective):
    """The importance-weighted bound with ``num_particles`` particles, as an SVI loss (see the module docstring).

    Args:
        num_particles: ``K`` (default 8); ``K = 1`` is the ELBO.
        estimator: ``"dreg"`` (default): doubly-reparametrised gradients for the guide (low variance,
            unbiased); ``"reparam"``: the plain reparametrised gradient of ``L_K``.

    Use it as ``SVI(model, guide, optimizer, IWAE(16))`` or ``inference.run_svi(..., loss=IWAE(16))``.
    ``-loss`` is the bound, a lower bound on ``log p(x)`` at least as high as the ELBO in expectation.
    """

    def __init__(self, num_particles: int = 8, estimator: str = "dreg"):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}; got {estimator!r}")
        self.estimator = estimator
        super().__init__(num_particles)

    def _particle(self, key, param_map, model, guide, args, kwargs):
        log_p, log_q, model_trace, guide_trace = self._traces(key, param_map, model, guide, args, kwargs)
        out = {"log_w": log_p - log_q}
        if self.estimator == "reparam":
            return out
        if getattr(guide, "stl", False):  # the guide's log q already holds its parameters fixed
            log_q_fixed = log_q
        else:
            frozen = jax.lax.stop_gradient(param_map)
            log_q_fixed = self._log_density_at(guide, _reparam_sites(guide_trace), frozen, args, kwargs, key)
        out["log_w_path"] = log_p - log_q_fixed  # gradient: the path term only
        if _has_params(model_trace):  # model parameters at fixed z, for sum w~ grad log p
            values = jax.lax.stop_gradient(_reparam_sites(guide_trace))
            out["log_p_fixed"] = self._log_density_at(model, values, param_map, args, kwargs, key)
        return out

    def _surrogate(self, parts, weights, bound):
        if self.estimator == "reparam":
            return bound
        surrogate = jnp.sum(weights ** 2 * parts["log_w_path"])
        if "log_p_fixed" in parts:  # model params get w~ - w~^2 more, so sum w~ in all
            surrogate = surrogate + jnp.sum((weights - weights ** 2) * parts["log_p_fixed"])
        return surrogate


class MassCovering(_WeightedObjective):
    """Reweighted wake-sleep's guide update: descend ``KL(p || q)`` by self-normalised importance sampling.

    Args:
        num_particles: ``K`` draws from the guide per step (default 64); more particles give a
            less biased estimate of the inclusive divergence's gradient.
        elbo_below_ess: the effective sample size of the weights below which the step is partly an
            ELBO step (``rho = min(1, ESS / elbo_below_ess)``, see the module docstring; default 8);
            ``None`` gives the pure inclusive-KL update (it diverged on a 26-dimensional regression
            posterior, bench/RESULTS.md).

    The guide is pulled toward every region where its importance weights are large, so it keeps
    modes and tails that an ELBO-trained guide drops; the model's own parameters (if any) get the
    wake update ``sum_k w~_k grad log p(x, z_k)``.  ``-loss`` is the importance-weighted bound
    with ``K`` particles.  Needs a guide whose ``log q`` carries parameter gradients at fixed points
    (``AutoFlow(..., stl=False)``, any NumPyro autoguide); see the module docstring.
    """

    def __init__(self, num_particles: int = 64, elbo_below_ess: float | None = 8.0):
        if elbo_below_ess is not None and not (isinstance(elbo_below_ess, (int, float)) and elbo_below_ess > 0):
            raise ValueError(f"elbo_below_ess must be a positive number of particles or None; got {elbo_below_ess!r}")
        self.elbo_below_ess = None if elbo_below_ess is None else float(elbo_below_ess)
        super().__init__(num_particles)

    def _particle(self, key, param_map, model, guide, args, kwargs):
        if getattr(guide, "stl", False):
            raise ValueError("MassCovering needs the guide's log-density to carry its parameters' gradients, but "
                             f"this {type(guide).__name__} uses sticking-the-landing gradients (its log q holds the "
                             "parameters fixed): build it with stl=False")
        log_p, log_q, model_trace, guide_trace = self._traces(key, param_map, model, guide, args, kwargs)
        values = jax.lax.stop_gradient(_reparam_sites(guide_trace))
        out = {"log_w": log_p - log_q,
               "log_q_fixed_point": self._log_density_at(guide, values, param_map, args, kwargs, key)}
        if _has_params(model_trace):
            out["log_p_fixed"] = self._log_density_at(model, values, param_map, args, kwargs, key)
        return out

    def _surrogate(self, parts, weights, bound):
        surrogate = jnp.sum(weights * parts["log_q_fixed_point"])
        if "log_p_fixed" in parts:
            surrogate = surrogate + jnp.sum(weights * parts["log_p_fixed"])
        if self.elbo_below_ess is None:
            return surrogate
        ess = 1.0 / jnp.sum(weights ** 2)
        rho = jax.lax.stop_gradient(jnp.minimum(1.0, ess / self.elbo_below_ess))
        used = weights > 0  # the finite particles (the others hold 0 here)
        elbo = jnp.sum(jnp.where(used, parts["log_w"], 0.0)) / jnp.maximum(1, jnp.sum(used))
        return rho * surrogate + (1 - rho) * elbo
