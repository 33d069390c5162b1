"""NumPyro versions of some posteriordb Stan models, with their data and reference draws.

Written from the published model definitions (same parameter names and constraints, flat priors
where Stan has none); the data and reference draws are read from the posteriordb copy in
``../shared/posteriordb`` next to the checkout (or ``$POSTERIORDB``).  ``POSTERIORS[name]`` gives
``(model, data_to_kwargs)``; ``load(name)`` returns ``(model, kwargs, reference)`` with
``reference`` a dict of site name -> draws (draws on axis 0, vector sites stacked by index).
"""

from __future__ import annotations

import json
import os
import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

# the checkout's sibling shared/ folder (../shared/posteriordb from the repository root) unless told
ROOT = os.environ.get("POSTERIORDB", os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                    "..", "..", "shared", "posteriordb")))


def _read_zip_json(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read(z.namelist()[0]))


def data(name: str) -> dict:
    return _read_zip_json(os.path.join(ROOT, "data", "data", f"{name}.json.zip"))


def reference(posterior: str) -> dict:
    """Reference draws grouped by site: ``{"theta": (10000, 8), "mu": (10000,), ...}``."""
    chains = _read_zip_json(os.path.join(ROOT, "reference_posteriors", "draws", f"{posterior}.json.zip"))
    flat = {k: np.concatenate([np.asarray(c[k], float) for c in chains]) for k in chains[0]}
    grouped: dict = {}
    for key, draws in flat.items():
        m = re.fullmatch(r"(\w+)\[(\d+)\]", key)
        if m:
            grouped.setdefault(m.group(1), {})[int(m.group(2))] = draws
        else:
            grouped[key] = draws
    return {k: (np.stack([v[i] for i in sorted(v)], -1) if isinstance(v, dict) else v) for k, v in grouped.items()}


# -- models ------------------------------------------------------------------------------------------

def eight_schools_noncentered(J, y, sigma):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def arK(K, T, y):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(jnp.zeros(K), 10.0).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    y = jnp.asarray(y)
    lags = jnp.stack([y[K - k - 1:T - k - 1] for k in range(K)], -1)  # lags[t, k] = y[t + K - (k + 1)]
    mu = alpha + lags @ beta
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y[K:])


def logmesquite_logvas(N, weight, diam1, diam2, canopy_height, total_height, density, group):
    d1, d2, ch = jnp.asarray(diam1), jnp.asarray(diam2), jnp.asarray(canopy_height)
    X = jnp.stack([jnp.ones(N), jnp.log(d1 * d2 * ch), jnp.log(d1 * d2), jnp.log(d1 / d2),
                   jnp.log(jnp.asarray(total_height)), jnp.log(jnp.asarray(density)), jnp.asarray(group, float)], -1)
    beta = numpyro.sample("beta", dist.ImproperUniform(dist.constraints.real_vector, (), (7,)))
    sigma = numpyro.sample("sigma", dist.ImproperUniform(dist.constraints.positive, (), ()))
    numpyro.sample("log_weight", dist.Normal(X @ beta, sigma), obs=jnp.log(jnp.asarray(weight)))


def kidscore_momhsiq(N, kid_score, mom_hs, mom_iq):
    X = jnp.stack([jnp.ones(N), jnp.asarray(mom_hs, float), jnp.asarray(mom_iq, float)], -1)
    beta = numpyro.sample("beta", dist.ImproperUniform(dist.constraints.real_vector, (), (3,)))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    numpyro.sample("kid_score", dist.Normal(X @ beta, sigma), obs=jnp.asarray(kid_score, float))


def garch11(T, y, sigma1):
    # Stan: flat priors on the constrained supports, beta1 in (0, 1 - alpha1) with no 1/(1 - alpha1) normaliser.
    # A sample site with the dynamic support interval(0, 1 - alpha1) is mishandled by NumPyro 0.22:
    # ImproperUniform wraps it in constraints.independent, so MCMC's postprocess_fn misses the dynamic
    # bound and reports beta1 through the initial point's transform (values past 1 - alpha1), and the
    # autoguides push to every site's support as it was in the prototype trace.  So beta1 is sampled as its
    # fraction of the bound, beta1_frac = beta1 / (1 - alpha1) in (0, 1), with the Jacobian log(1 - alpha1)
    # that keeps the density flat in beta1: the same unconstrained coordinate (logit of the fraction) and
    # the same unconstrained density as Stan's lower/upper-bound transform.
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
    alpha0 = numpyro.sample("alpha0", dist.ImproperUniform(constraints.positive, (), ()))
    alpha1 = numpyro.sample("alpha1", dist.ImproperUniform(constraints.unit_interval, (), ()))
    beta1_frac = numpyro.sample("beta1_frac", dist.ImproperUniform(constraints.unit_interval, (), ()))
    numpyro.factor("beta1_jacobian", jnp.log1p(-alpha1))
    beta1 = numpyro.deterministic("beta1", (1.0 - alpha1) * beta1_frac)
    y = jnp.asarray(y)

    def step(sigma_prev, y_prev):
        sigma = jnp.sqrt(alpha0 + alpha1 * jnp.square(y_prev - mu) + beta1 * jnp.square(sigma_prev))
        return sigma, sigma

    _, sigmas = jax.lax.scan(step, jnp.asarray(sigma1, y.dtype), y[:-1])
    sigma = jnp.concatenate([jnp.full((1,), sigma1, y.dtype), sigmas])
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def diamonds(N, Y, K, X, prior_only=0):
    # brms-generated: the non-intercept columns of X are centred in transformed data.
    X = jnp.asarray(X)
    Xc = X[:, 1:] - X[:, 1:].mean(0)
    Kc = int(K) - 1
    b = numpyro.sample("b", dist.Normal(jnp.zeros(Kc), 1.0).to_event(1))
    intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    # student_t(3, 0, 10) truncated to sigma > 0 (brms's "- student_t_lccdf(0 | 3, 0, 10)" = log 2)
    sigma = numpyro.sample("sigma", dist.FoldedDistribution(dist.StudentT(3.0, 0.0, 10.0)))
    if not prior_only:
        numpyro.sample("Y", dist.Normal(intercept + Xc @ b, sigma), obs=jnp.asarray(Y))


def low_dim_gauss_mix(N, y):
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum())  # mu ~ normal(0, 2) on ordered[2]
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    mix = dist.MixtureSameFamily(dist.Categorical(probs=jnp.stack([theta, 1.0 - theta], -1)),
                                 dist.Normal(mu, sigma))
    numpyro.sample("y", mix, obs=jnp.asarray(y))


def gp_pois_regr(N, x, k):
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    f_tilde = numpyro.sample("f_tilde", dist.Normal(jnp.zeros(int(N)), 1.0).to_event(1))
    x = jnp.asarray(x)
    corr = jnp.exp(-0.5 * jnp.square((x[:, None] - x[None, :]) / rho))
    if corr.dtype == jnp.float64:  # Stan's cov_exp_quad + 1e-10 I
        cov = jnp.square(alpha) * corr + 1e-10 * jnp.eye(int(N))
    else:  # float32: 1e-10 does not make the Cholesky factor finite at rho ~ 6; a 1e-5 relative jitter does
        cov = jnp.square(alpha) * (corr + 1e-5 * jnp.eye(int(N)))
    f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ f_tilde)
    numpyro.sample("k", dist.Poisson(jnp.exp(f)), obs=jnp.asarray(k).astype(jnp.int32))


POSTERIORS = {
    "eight_schools-eight_schools_noncentered": (eight_schools_noncentered, "eight_schools", ("J", "y", "sigma")),
    "arK-arK": (arK, "arK", ("K", "T", "y")),
    "mesquite-logmesquite_logvas": (logmesquite_logvas, "mesquite",
                                    ("N", "weight", "diam1", "diam2", "canopy_height", "total_height", "density",
                                     "group")),
    "kidiq-kidscore_momhsiq": (kidscore_momhsiq, "kidiq", ("N", "kid_score", "mom_hs", "mom_iq")),
    "garch-garch11": (garch11, "garch", ("T", "y", "sigma1")),
    "diamonds-diamonds": (diamonds, "diamonds", ("N", "Y", "K", "X", "prior_only")),
    "low_dim_gauss_mix-low_dim_gauss_mix": (low_dim_gauss_mix, "low_dim_gauss_mix", ("N", "y")),
    "gp_pois_regr-gp_pois_regr": (gp_pois_regr, "gp_pois_regr", ("N", "x", "k")),
}


def load(posterior: str):
    """``(model, kwargs, reference_draws)`` for a posterior name in :data:`POSTERIORS`."""
    model, data_name, keys = POSTERIORS[posterior]
    raw = data(data_name)
    kwargs = {k: (np.asarray(raw[k], float) if isinstance(raw[k], list) else raw[k]) for k in keys}
    ref = reference(posterior)
    return model, kwargs, ref
