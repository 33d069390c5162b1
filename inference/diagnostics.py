"""Diagnostics of variational fits: ELBO, importance weights, Pareto k-hat, ESS, ArviZ conversion, comparison.

With guide ``q`` and model joint ``p(x, z)``, the log importance weights of guide draws are
``log w_s = log p(x, z_s) - log q(z_s)``.  From ``S`` of them:

* ELBO estimate ``mean_s log w_s``;
* importance-weighted bound ``log (1/S) sum_s w_s`` (Burda et al.), a lower bound on
  ``log p(x)`` in expectation that tightens as ``S`` grows; with large ``S`` it is the usual
  importance-sampling estimate of the log marginal likelihood;
* Pareto k-hat of the weights' upper tail (PSIS, Vehtari et al. 2024; computed in
  :mod:`inference.psis`, no ArviZ needed): below ``min(1 - 1/log10(S), 0.7)`` the importance
  estimates are reliable, above it the guide misses mass the posterior has;
* importance-sampling ESS ``1 / sum_s wbar_s^2`` with normalised weights ``wbar``.

ArviZ is used only to build ``InferenceData`` (ArviZ 0.x) or ``DataTree`` (ArviZ 1.x) objects,
through :func:`draws_to_inference_data`, which speaks both versions.
"""

from __future__ import annotations

import math
import time

import jax
import numpy as np
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.infer.util import log_density

from .psis import khat_threshold, psis_khat

__all__ = ["log_importance_weights", "iw_bound", "log_marginal_likelihood", "psis_khat", "importance_ess",
           "diagnose", "to_inference_data", "draws_to_inference_data", "compare", "posterior_errors",
           "KHAT_THRESHOLD", "khat_threshold"]

KHAT_THRESHOLD = 0.7  # the cap of khat_threshold(S); with fewer than 2154 draws the threshold is lower


MIN_KHAT_DRAWS = 25  # fewer finite weights give no k-hat (inference.psis: a tail of at least 5)
IMPORTANCE_BLOCK = 100  # draws evaluated together (vmap) per step of a lax.map over blocks


def log_importance_weights(model, guide, params, *args, num_samples: int = 1000, seed: int = 0, **kwargs):
    """``log p(x, z_s) - log q(z_s)`` for ``num_samples`` guide draws (a numpy array).

    The draws are evaluated ``IMPORTANCE_BLOCK`` at a time (``lax.map`` over blocks of a ``vmap``):
    with jaxlib 0.10.2 (Python 3.11's newest) a single ``vmap`` over 1000 draws of the gp_pois_regr
    posterior's guide hung in XLA's CPU runtime in 7 of 8 processes (every worker thread idle, the
    result never ready); in blocks of 100 it finished in all 12 calls tried (4 processes), at about
    the same speed.  (That jaxlib can hang elsewhere too: one of those processes never finished its fit.)
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int; got {num_samples!r}")

    first = _checked_traces(model, guide, params, args, kwargs)
    joint = _joint_log_density(model, guide, args, kwargs, first)

    def one(key):
        guide_lp, guide_trace = log_density(handlers.seed(guide, key), args, kwargs, params)
        return joint(key, guide_trace, params) - guide_lp

    keys = jax.random.split(jax.random.PRNGKey(seed), num_samples)
    block = min(num_samples, IMPORTANCE_BLOCK)
    return np.asarray(jax.jit(lambda ks: jax.lax.map(one, ks, batch_size=block))(keys), dtype=np.float64)


def _checked_traces(model, guide, params, args, kwargs):
    """One eager run of the guide (which also sets up a fresh autoguide outside any jit) and of the model
    replayed on it; refuses what importance weights of the whole model cannot mean: a subsampled plate
    (each weight would see another subsample) and a latent site of the model the guide does not cover
    (a guide of another model, or a data argument left out, which turns an observed site latent)."""
    with handlers.block():
        guide_trace = handlers.trace(handlers.seed(handlers.substitute(guide, data=params), 0)).get_trace(
            *args, **kwargs)
        model_trace = handlers.trace(handlers.replay(handlers.seed(model, 0), guide_trace)).get_trace(*args, **kwargs)
    enumerated = set(getattr(guide, "enumerated_sites", ()))
    for name, site in model_trace.items():
        if site["type"] == "plate" and site["args"][1] is not None and site["args"][1] < site["args"][0]:
            raise ValueError(f"diagnose weighs draws by the whole model, but plate {name!r} subsamples "
                             f"{site['args'][1]} of {site['args'][0]}: each weight would see another subsample. "
                             "Pass the model without subsample_size (all the data) to diagnose")
        if site["type"] == "sample" and not site["is_observed"] and name not in guide_trace and name not in enumerated:
            raise ValueError(f"the model's latent site {name!r} is not in the guide: diagnose needs the model and "
                             "the arguments the guide was trained with (a data argument left out makes an "
                             "observed site latent)")
    return model_trace


def _joint_log_density(model, guide, args, kwargs, first):
    """``(key, guide_trace, params) -> log p(x, z)`` at the guide's draw ``z``.  A guide that sums out
    discrete sites marked for enumeration (``AutoFlow(...).enumerated_sites``) is weighed against the
    model with those sites summed out too (funsor, as NumPyro's NUTS does): replaying the model would
    draw them from their prior and add ``log p(c)`` for one draw ``c``, a weight that is neither the
    ELBO's nor unbiased (an 8-point mixture's ELBO read 8 nats low)."""
    if not getattr(guide, "enumerated_sites", ()):
        def replayed(key, guide_trace, params):
            return log_density(handlers.replay(handlers.seed(model, key), guide_trace), args, kwargs, params)[0]

        return replayed
    from numpyro.contrib.funsor import config_enumerate, enum
    from numpyro.contrib.funsor import log_density as summed_log_density
    from numpyro.infer.util import _guess_max_plate_nesting

    summed = enum(config_enumerate(model), -_guess_max_plate_nesting(first) - 1)

    def enumerated(key, guide_trace, params):
        values = {name: site["value"] for name, site in guide_trace.items()
                  if site["type"] == "sample" and name in first and not first[name]["is_observed"]}
        return summed_log_density(summed, args, kwargs, {**params, **values})[0]

    return enumerated


def iw_bound(log_w) -> float:
    """Importance-weighted bound ``log mean exp(log_w)`` (numerically stable)."""
    log_w = np.asarray(log_w, np.float64)
    return float(logsumexp(log_w) - math.log(log_w.size))


def importance_ess(log_w) -> float:
    """Importance-sampling effective sample size ``1 / sum wbar^2`` (between 1 and S)."""
    log_w = np.asarray(log_w, np.float64)
    w = np.exp(log_w - logsumexp(log_w))
    return float(1.0 / np.sum(w ** 2))


def log_marginal_likelihood(model, guide, params, *args, num_samples: int = 10000, seed: int = 0, **kwargs):
    """Importance-sampling estimate of ``log p(x)`` with the guide as proposal, and its k-hat.

    Returns ``(estimate, khat)``; trust the estimate only when ``khat < khat_threshold(num_samples)``.
    """
    log_w = log_importance_weights(model, guide, params, *args, num_samples=num_samples, seed=seed, **kwargs)
    return iw_bound(log_w), psis_khat(log_w)


def _reading(khat: float, threshold: float, num_samples: int, elbo: float, iw: float, num_draws=None) -> str:
    """The diagnostics in words: whether the importance weights can be trusted, and what may be missing."""
    if not math.isfinite(khat) and (num_samples if num_draws is None else num_draws) < MIN_KHAT_DRAWS:
        return (f"unknown: {num_samples} importance weights are too few for a k-hat (PSIS fits the "
                f"largest fifth and needs at least {MIN_KHAT_DRAWS}); pass num_samples=2000 (the default)")
    if not math.isfinite(khat):
        return (f"unreliable: too few finite importance weights for a k-hat ({num_samples} draws); "
                "check the model's log-density where the guide puts mass")
    shown = f"{khat:.3f}" if min(abs(khat - 0.5), abs(khat - threshold)) < 0.005 else f"{khat:.2f}"  # not "0.50 < 0.5"
    if khat >= threshold:
        words = (f"unreliable (k-hat {shown} >= {threshold:.2f}, the threshold for {num_samples} draws): "
                 "the importance weights are heavy-tailed, so the guide misses mass the posterior has; "
                 "train longer, use a heavier-tailed base (base='student_t') or more flow layers, train with "
                 "the mass-covering objective (AutoFlow(model, 'maf', stl=False) with loss=inference.MassCovering()), "
                 "or refine with NeuTra NUTS")
    elif khat >= 0.5:
        words = (f"acceptable (k-hat {shown} < {threshold:.2f}, the threshold for {num_samples} draws), "
                 "but the importance estimates converge slowly; the guide's tails are somewhat light")
    else:
        words = f"good (k-hat {shown} < 0.5; threshold {threshold:.2f} for {num_samples} draws)"
    gap = iw - elbo
    if math.isfinite(gap) and gap > 1.0:
        words += (f"; the importance-weighted bound is {gap:.1f} nats above the ELBO, so the guide is "
                  "narrower than the posterior or misses part of it")
    return words


def diagnose(model, guide, params, *args, num_samples: int = 2000, seed: int = 0, **kwargs) -> dict:
    """ELBO, importance-weighted bound, k-hat against its sample-size threshold, IS-ESS, and a reading in words.

    Keys: ``elbo``, ``iw_bound``, ``khat``, ``khat_threshold`` (``min(1 - 1/log10(S), 0.7)`` for
    the ``S`` finite weights), ``reliable`` (``khat < khat_threshold``), ``reading`` (a sentence:
    whether the importance weights can be trusted and what to try if not, and, for a guide with a
    warm start such as ``AutoFlow``, whether its paths found several modes and whether training left
    it below its warm start's ELBO), ``is_ess``,
    ``is_ess_fraction``, ``num_samples``, ``num_nonfinite``.

    The weights are of the whole model: a subsampled plate is refused (pass the model without
    ``subsample_size``), as is a latent site of the model the guide does not cover (another model's
    guide, or a data argument left out).  A guide whose discrete sites are summed out by enumeration
    is weighed against the model with them summed out (funsor).  A guide never called before is set
    up by one eager run here.
    """
    log_w = log_importance_weights(model, guide, params, *args, num_samples=num_samples, seed=seed, **kwargs)
    finite = np.isfinite(log_w)
    num_finite = int(finite.sum())
    khat = psis_khat(log_w[finite]) if num_finite >= MIN_KHAT_DRAWS else math.inf
    threshold = khat_threshold(max(num_finite, 2))
    ess = importance_ess(log_w[finite]) if finite.any() else 0.0
    elbo, iw = float(np.mean(log_w)), iw_bound(log_w)
    reading = _reading(khat, threshold, num_finite, elbo, iw, num_draws=num_samples)
    start = getattr(guide, "warm_start_info", None)
    if start is not None and start.get("num_modes", 1) > 1:
        masses = ", ".join(f"{w:.2f}" for w in start["mode_weights"])
        reading += (f"; the warm start's L-BFGS paths ended in {start['num_modes']} separate modes (estimated "
                    f"masses {masses}): check that the guide covers them (path_pooling='resample' with "
                    "loss=inference.MassCovering() does)")
    if start is not None:
        start_elbo = float(start["elbo"])
        kept = log_w[finite]  # a robust standard error (median absolute deviation): one extreme weight must not hide it
        se = float(1.4826 * np.median(np.abs(kept - np.median(kept))) / np.sqrt(num_finite)) if num_finite > 1 else math.inf
        worse = not math.isfinite(elbo) or start_elbo - elbo > max(1.0, 3 * se)
        if math.isfinite(start_elbo) and worse:
            reading += (f"; the trained guide's ELBO ({elbo:.2f}) is below its warm start's ({start_elbo:.2f}): "
                        "training made it worse. inference.run_svi keeps the better of the two, and "
                        "inference.suggest_optimizer(num_steps, guide=guide) scales the step size to the "
                        "latent dimension")
    return {"elbo": elbo, "iw_bound": iw, "khat": khat, "khat_threshold": threshold, "is_ess": ess,
            "is_ess_fraction": ess / num_samples, "reliable": bool(khat < threshold),
            "reading": reading,
            "num_samples": num_samples, "num_nonfinite": int((~finite).sum())}


def _latent_draws(guide, params, args, kwargs, num_samples, seed, sample_shape=None):
    shape = (num_samples,) if sample_shape is None else tuple(sample_shape)
    draws = guide.sample_posterior(jax.random.PRNGKey(seed), params, *args, sample_shape=shape, **kwargs)
    proto = getattr(guide, "prototype_trace", None) or {}
    keep = {}
    for name, value in draws.items():
        site = proto.get(name)
        if name.startswith("_") or (site is not None and (site["type"] == "param" or site.get("is_observed"))):
            continue
        keep[name] = np.asarray(value)
    return keep


def to_inference_data(guide, params, *args, num_samples: int = 1000, num_chains: int = 1, seed: int = 0, **kwargs):
    """Guide draws as ArviZ data (group ``posterior``, the model's site names), for ``az.summary`` and plots.

    Draws have shape ``(num_chains, num_samples, *site_shape)``; the result is what
    :func:`draws_to_inference_data` returns for them.
    """
    draws = _latent_draws(guide, params, args, kwargs, None, seed, sample_shape=(num_chains, num_samples))
    return draws_to_inference_data(draws)


def draws_to_inference_data(posterior: dict):
    """A dict of site -> draws ``(chain, draw, *shape)`` as ArviZ data with one ``posterior`` group.

    An ``arviz.InferenceData`` under ArviZ 0.x and an ``xarray.DataTree`` under ArviZ 1.x; both
    give ``data.posterior[name]`` and are accepted by ``arviz.summary`` and ArviZ's plots.
    """
    import arviz as az

    posterior = {name: np.asarray(value) for name, value in posterior.items()}
    if _arviz_major(az) >= 1:
        return az.from_dict({"posterior": posterior})
    return az.from_dict(posterior=posterior)


def _arviz_major(az) -> int:
    return int(str(az.__version__).split(".")[0])


def posterior_errors(draws: dict, reference: dict) -> dict:
    """Error of means in reference sds and relative error of sds, averaged over every scalar of the shared sites."""
    mean_err, sd_err = [], []
    for name, ref in reference.items():
        if name not in draws:
            continue
        ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
        got = np.asarray(draws[name], np.float64).reshape(len(draws[name]), -1)
        ref_sd = ref.std(0)
        mean_err.append(np.abs(got.mean(0) - ref.mean(0)) / ref_sd)
        sd_err.append(np.abs(got.std(0) / ref_sd - 1))
    if not mean_err:
        raise ValueError(f"no common sites between draws {sorted(draws)} and reference {sorted(reference)}")
    return {"mean_err_sd": float(np.mean(np.concatenate(mean_err))), "sd_rel_err": float(np.mean(np.concatenate(sd_err)))}


def compare(model, guides: dict, *args, reference: dict | None = None, nuts: bool = False, num_samples: int = 2000,
            num_warmup: int = 1000, seed: int = 0, **kwargs):
    """Tabulate trained guides (and optionally NUTS) on one model; returns a pandas DataFrame.

    ``guides`` maps a label to ``(guide, params)`` or ``(guide, params, fit_seconds)``.  Columns:
    ELBO, importance-weighted bound, k-hat, IS-ESS and, against ``reference`` draws (a dict of
    site -> array with draws on axis 0; by default the NUTS draws when ``nuts=True``), the error
    of means in reference sds and the relative error of sds.  With ``nuts=True`` a NUTS row (with
    its run time and minimum bulk ESS) is added.
    """
    import pandas as pd

    rows = {}
    if nuts:
        from numpyro.infer import MCMC, NUTS
        import arviz as az

        mcmc = MCMC(NUTS(model), num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
        t0 = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(seed), *args, **kwargs)
        secs = time.perf_counter() - t0
        samples = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
        if reference is None:
            reference = samples
        min_ess = min(float(az.ess(column[None])) for v in samples.values()
                      for column in v.reshape(len(v), -1).T.astype(np.float64))
        row = {"seconds": secs, "nuts_min_ess": min_ess}
        if reference is not samples:
            row.update(posterior_errors(samples, reference))
        rows["NUTS"] = row
    for label, entry in guides.items():
        guide, params = entry[0], entry[1]
        row = {"seconds": entry[2] if len(entry) > 2 else float("nan")}
        d = diagnose(model, guide, params, *args, num_samples=num_samples, seed=seed + 1, **kwargs)
        row.update({k: d[k] for k in ("elbo", "iw_bound", "khat", "is_ess")})
        if reference is not None:
            draws = _latent_draws(guide, params, args, kwargs, num_samples, seed + 2)
            row.update(posterior_errors(draws, reference))
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")
