"""NumPyro versions of some posteriordb Stan models, with their data and reference draws.

Written from the published model definitions (same parameter names and constraints, flat priors
where Stan has none); the data and reference draws are read from the posteriordb copy in
``/work/shared/posteriordb`` (or ``$POSTERIORDB``).  ``POSTERIORS[name]`` gives
``(model, data_to_kwargs)``; ``load(name)`` returns ``(model, kwargs, reference)`` with
``reference`` a dict of site name -> draws (draws on axis 0, vector sites stacked by index).
"""

from __future__ import annotations

import json
import os
import re
import zipfile

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

ROOT = os.environ.get("POSTERIORDB", "/work/shared/posteriordb")


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


POSTERIORS = {
    "eight_schools-eight_schools_noncentered": (eight_schools_noncentered, "eight_schools", ("J", "y", "sigma")),
    "arK-arK": (arK, "arK", ("K", "T", "y")),
    "mesquite-logmesquite_logvas": (logmesquite_logvas, "mesquite",
                                    ("N", "weight", "diam1", "diam2", "canopy_height", "total_height", "density",
                                     "group")),
    "kidiq-kidscore_momhsiq": (kidscore_momhsiq, "kidiq", ("N", "kid_score", "mom_hs", "mom_iq")),
}


def load(posterior: str):
    """``(model, kwargs, reference_draws)`` for a posterior name in :data:`POSTERIORS`."""
    model, data_name, keys = POSTERIORS[posterior]
    raw = data(data_name)
    kwargs = {k: (np.asarray(raw[k], float) if isinstance(raw[k], list) else raw[k]) for k in keys}
    ref = reference(posterior)
    return model, kwargs, ref
