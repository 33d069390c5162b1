"""SVI helpers: a default optimiser, a one-call SVI run, NeuTra-preconditioned NUTS and amortised flow guides."""

from __future__ import annotations

import time
import warnings
from functools import partial
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO, TraceEnum_ELBO
from numpyro.infer.reparam import NeuTraReparam

import nf_ppl
from nf_ppl._checks import check_finite_params, is_int
from nf_ppl.nn import MLP

from ._background import BackgroundCompiled
from ._fit import ON_NONFINITE
from ._io import get_builder
from .autoguide import guide_form

__all__ = ["suggest_optimizer", "learning_rate_factor", "run_svi", "neutra_nuts", "AmortizedFlowGuide"]


DIMENSION_KNEE = 30  # latent dimensions up to which the default learning rate is used unscaled


def learning_rate_factor(latent_dim) -> float:
    """``min(1, 30 / D)``: the factor on the default step size for a ``D``-dimensional flow guide.

    Adam moves every parameter by about the learning rate per step whatever its gradient, so the
    noise a guide with ``O(D^2)`` parameters picks up per step grows with ``D``: on a 100-dimensional
    Gaussian regression, 1000 steps at 1e-2 left a warm-started ``AutoFlow`` at mean errors of 0.76
    posterior sds (start: 0.066) while the scaled 3e-3 kept it at 0.082 (bench/RESULTS.md,
    ``bench/bench_svi_dimension.py``).  ``None`` (unknown) gives 1.
    """
    if latent_dim is None:
        return 1.0
    return float(min(1.0, DIMENSION_KNEE / max(int(latent_dim), 1)))


class _DimensionScaleState(NamedTuple):
    factor: object  # an array, or a dict of arrays keyed by parameter name


def _factor_tree(factor, params):
    """The guide's factor as a state: a scalar array, or one array per top-level parameter name (a
    mapping from the guide names some parameters; the others get 1)."""
    if isinstance(factor, Mapping):
        unknown = sorted(set(factor) - set(params))
        if unknown:
            raise ValueError(f"learning_rate_factor() names parameters the guide does not have: {unknown}")
        return {name: jnp.asarray(float(factor.get(name, 1.0))) for name in params}
    return jnp.asarray(float(factor))


def _scale_by_latent_dim(guide, latent_dim):
    """Multiply updates by the guide's step-size factor, read at ``init`` (SVI sets the guide up before
    it initialises the optimiser, so ``guide.latent_dim`` is known then): the guide's own
    ``learning_rate_factor()`` (a float, or a mapping from parameter name to factor) when it has one,
    else :func:`learning_rate_factor` of its latent dimension."""

    def init(params):
        if latent_dim is None and callable(getattr(guide, "learning_rate_factor", None)):
            return _DimensionScaleState(_factor_tree(guide.learning_rate_factor(), params))  # e.g. AutoFlow's
        dim = latent_dim if latent_dim is not None else getattr(guide, "latent_dim", None)
        return _DimensionScaleState(jnp.asarray(learning_rate_factor(dim)))

    def update(updates, state, params=None):
        if isinstance(state.factor, Mapping):
            return {name: jax.tree_util.tree_map(lambda u, f=state.factor[name]: u * f.astype(u.dtype), value)
                    for name, value in updates.items()}, state
        return jax.tree_util.tree_map(lambda u: u * state.factor.astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


def suggest_optimizer(num_steps: int, learning_rate: float = 1e-2, clip_norm: float = 10.0,
                      max_consecutive_nonfinite: int = 50, *, guide=None, latent_dim: int | None = None):
    """Adam with global-norm clipping and a cosine decay to ``learning_rate / 10`` over ``num_steps``.

    A safe default for flow guides: a step whose ELBO gradient is not finite (one extreme guide
    draw) is skipped instead of writing NaN into the parameters (``optax.apply_if_finite``; the
    step's loss still shows as NaN/inf in the history, and after ``max_consecutive_nonfinite``
    such steps in a row the update goes through so the failure becomes visible); clipping stops
    one bad draw from throwing the parameters far away; the decay lowers the final noise.

    With ``guide=`` (an ``AutoFlow`` or any autoguide with ``latent_dim``) or ``latent_dim=``, the
    step size is multiplied by ``min(1, 30 / D)`` (:func:`learning_rate_factor`): large latent
    spaces get smaller steps, so training does not undo a good warm start.  A guide with a
    ``learning_rate_factor()`` method gives its own factor, a float or a mapping from parameter name
    to factor (``AutoFlow``: 1 for a guide without a warm start, which has a long way to travel; for
    its linear-cost ``"globals"`` structure 1 for the locations and scales and 0.1 for the flow's
    parameters, see ``AutoFlow.learning_rate_factor``).  ``run_svi`` passes
    its guide when it picks this optimiser itself.
    """
    schedule = optax.cosine_decay_schedule(learning_rate, max(1, num_steps), alpha=0.1)
    parts = [optax.clip_by_global_norm(clip_norm), optax.adam(schedule)]
    if guide is not None or latent_dim is not None:
        parts.append(_scale_by_latent_dim(guide, latent_dim))
    return optax.apply_if_finite(optax.chain(*parts), max_consecutive_errors=max_consecutive_nonfinite)


def run_svi(model, guide, *args, num_steps: int = 2000, optimizer=None, loss=None, seed: int = 0,
            progress_bar: bool = False, on_nonfinite: str = "skip", keep_best: bool = True,
            num_check_draws: int = 256, **kwargs):
    """Run SVI (jitted, ``lax.scan``) and return ``(params, elbo_history, seconds)``.

    ``elbo_history`` is ``-loss`` per step (the ELBO estimate of each step).  A step whose loss
    is NaN or inf never reaches the parameters (NumPyro's ``SVI.stable_update``): with
    ``on_nonfinite="skip"`` (default) its update is dropped and training goes on; with
    ``"stop"`` training stops there and the parameters from before that step are returned
    (later entries of ``elbo_history`` are NaN).  Either way one warning after the run gives the
    count and the first such step.  Initial parameters holding NaN or inf are refused with a
    ``ValueError`` naming them.  Without ``optimizer``, ``suggest_optimizer(num_steps, guide=guide)``.

    ``keep_best`` (default): training never returns a guide worse than its start without saying
    so.  Steps run in spans of ``max(50, num_steps // 20)``; the parameters at the end of the span
    with the best mean ELBO are kept, and at the end the start (e.g. ``AutoFlow``'s warm start),
    that best span and the final parameters are scored by the same ``num_check_draws``-draw ELBO
    estimate.  The final parameters are returned unless another candidate beats them by more
    than two standard errors, or is higher on three in four of the draws (they share their keys; a
    wrecked guide's draws are too heavy-tailed for standard errors); when the start wins, a warning
    gives both numbers.  That estimate's
    program is built before training and compiled on a background thread, so on a machine with more
    than one core its compilation overlaps training's.
    """
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE}; got {on_nonfinite!r}")
    if not isinstance(num_steps, (int, np.integer)) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int; got {num_steps!r}")
    optimizer = optimizer if optimizer is not None else suggest_optimizer(num_steps, guide=guide)
    svi = SVI(model, guide, optimizer, loss if loss is not None else Trace_ELBO())
    t0 = time.perf_counter()
    state = svi.init(jax.random.PRNGKey(seed), *args, **kwargs)
    start_params = svi.get_params(state)
    check_finite_params(start_params, "SVI guide")
    stop = on_nonfinite == "stop"
    score = _ElboScore(model, guide, args, kwargs, seed, num_check_draws, start_params, loss) if keep_best else None

    def one_step(carry, _):
        state, halted = carry
        new_state, step_loss = svi.stable_update(state, *args, **kwargs)
        halt = halted | (stop & ~jnp.isfinite(step_loss))
        state = jax.tree_util.tree_map(lambda new, old: jnp.where(halt, old, new), new_state, state)
        return (state, halt), jnp.where(halted, jnp.nan, step_loss)

    @partial(jax.jit, static_argnums=0)
    def chunk(length, state, halted):
        return jax.lax.scan(one_step, (state, halted), None, length=length)

    span = max(50, num_steps // 20) if keep_best else (100 if progress_bar else num_steps)
    lengths = [min(span, num_steps - i) for i in range(0, num_steps, span)]
    losses, carry, best = [], (state, jnp.asarray(False)), (-np.inf, None)
    from tqdm import tqdm
    with tqdm(total=num_steps, disable=not progress_bar, desc="svi", leave=False) as bar:
        for length in lengths:
            carry, chunk_losses = chunk(length, *carry)
            chunk_losses = np.asarray(chunk_losses)
            losses.append(chunk_losses)
            finite = chunk_losses[np.isfinite(chunk_losses)]
            if keep_best and finite.size and -finite.mean() > best[0]:
                best = (-float(finite.mean()), carry[0])
            bar.update(length)
    params = svi.get_params(carry[0])
    if keep_best:
        params = _better_of(score, start_params, params, None if best[1] is None else svi.get_params(best[1]))
    jax.block_until_ready(params)
    elbo = -np.concatenate(losses)
    _warn_nonfinite(elbo, stop)
    return params, elbo, time.perf_counter() - t0


class _ElboScore:
    """``num_draws`` single-draw ELBO estimates of a parameter set (the same keys for every set), as
    ``(mean, standard error)``; ``(-inf, inf)`` when fewer than half of them are finite.

    Its program is compiled in the background (:class:`inference._background.BackgroundCompiled`):
    ``run_svi`` builds the scorer before training, so on a multi-core machine that compilation (about
    a second on a small model) runs while training's own program compiles and runs.
    """

    def __init__(self, model, guide, args, kwargs, seed, num_draws, params, loss=None):
        # a model with enumerated discrete sites is scored by the enumerated ELBO it trains with: Trace_ELBO
        # would draw those sites from the prior (an estimate about 8 nats low on an 8-point mixture, so the
        # start "won" and the training was thrown away)
        elbo = loss if isinstance(loss, TraceEnum_ELBO) else Trace_ELBO()
        self.num_draws = num_draws
        self.keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 7), num_draws)
        draws = jax.vmap(lambda p, k: -elbo.loss(k, p, model, guide, *args, **kwargs), in_axes=(None, 0))
        self._values = BackgroundCompiled(draws, params, self.keys)

    def draws(self, params) -> np.ndarray:
        """The ``num_draws`` ELBO draws of ``params`` (NaN as ``-inf``), one per shared key."""
        values = np.asarray(self._values(params, self.keys), dtype=np.float64)
        return np.where(np.isnan(values), -np.inf, values)

    def __call__(self, params):
        return self.summary(self.draws(params))

    def summary(self, draws):
        values = draws[np.isfinite(draws)]
        if values.size < max(2, self.num_draws // 2):
            return -np.inf, np.inf
        return float(values.mean()), float(values.std() / np.sqrt(values.size))


PAIRED_WIN = 0.75  # a candidate higher on this share of the shared keys beats the final, whatever the standard errors


def _better_of(estimate, start, final, best):
    """The final parameters unless the start or the best span beats them: a higher ELBO estimate
    (``estimate``, an :class:`_ElboScore`) by more than two standard errors, or higher on at least
    ``PAIRED_WIN`` of the draws, which share their keys.  The second rule is for a wrecked guide: its
    draws are so heavy-tailed that two standard errors can exceed even a gap of 1e16 nats."""
    num_draws = estimate.num_draws
    final_draws = estimate.draws(final)
    final_mean, final_se = estimate.summary(final_draws)
    scored = []
    for name, p in (("start", start), ("best span", best)):
        if p is None:
            continue
        draws = estimate.draws(p)
        mean, se = estimate.summary(draws)
        margin = 2 * np.hypot(se, final_se) if np.isfinite(final_se) else 0.0
        if mean > final_mean + margin or (mean > final_mean and np.mean(draws > final_draws) >= PAIRED_WIN):
            scored.append((mean, name, p))
    if not scored:
        return final
    mean, name, p = max(scored, key=lambda t: t[0])
    if name == "start":
        warnings.warn(f"run_svi: training ended below its start (ELBO estimate {final_mean:.2f} after "
                      f"training vs {mean:.2f} at the start, {num_draws} draws each); returning the start "
                      "parameters. Try a smaller learning rate (suggest_optimizer(num_steps, guide=guide) "
                      "scales it by the latent dimension) or fewer steps", RuntimeWarning, stacklevel=3)
    return p


def _warn_nonfinite(elbo: np.ndarray, stopped: bool) -> None:
    bad = np.flatnonzero(~np.isfinite(elbo))
    if stopped and bad.size:
        warnings.warn(f"run_svi: the ELBO was NaN or inf at step {bad[0]} of {elbo.size}; stopped there "
                      "(on_nonfinite='stop') and returned the parameters from before that step. The model's "
                      "log-density is not finite somewhere the guide puts mass: check supports, constraints and "
                      "priors, or lower the learning rate", RuntimeWarning, stacklevel=3)
    elif bad.size:
        warnings.warn(f"run_svi: the ELBO was NaN or inf at {bad.size} of {elbo.size} steps (first at step {bad[0]}); "
                      "those updates were skipped. The model's log-density is not finite somewhere the guide puts "
                      "mass: check supports, constraints and priors, or lower the learning rate",
                      RuntimeWarning, stacklevel=3)


def neutra_nuts(model, guide, params, *args, num_warmup: int = 500, num_samples: int = 1000, num_chains: int = 1,
                seed: int = 0, progress_bar: bool = False, nuts_kwargs: dict | None = None, **kwargs):
    """NUTS on the model reparametrised by a trained ``AutoContinuous`` guide (NeuTra, Hoffman et al. 2019).

    Returns ``(mcmc, samples)`` with ``samples`` the draws mapped back to the model's sites.  A guide
    with a learned base (``AutoFlow(..., base="student_t")``) is given its trained base too.
    """
    if hasattr(guide, "use_base_params"):
        guide.use_base_params(params)
    neutra = NeuTraReparam(guide, params)
    mcmc = MCMC(NUTS(neutra.reparam(model), **(nuts_kwargs or {})), num_warmup=num_warmup,
                num_samples=num_samples, num_chains=num_chains, progress_bar=progress_bar)
    mcmc.run(jax.random.PRNGKey(seed), *args, **kwargs)
    z = mcmc.get_samples()[f"{guide.prefix}_shared_latent"]
    return mcmc, neutra.transform_sample(z)


class AmortizedFlowGuide:
    """Amortised guide for one local latent site: ``q(z_i | x_i)`` = conditional IAF on an encoder's output.

    For each data row ``x_i`` an encoder MLP gives ``(mu_i, log sigma_i, h_i)``; then
    ``z_i = f(mu_i + sigma_i * eps_i; context=h_i)`` with ``eps_i ~ N(0, I)`` and ``f`` a
    conditional flow (``nf_ppl.iaf(..., context_dim=k)`` in the guides' form,
    :func:`~inference.autoguide.guide_form`: base-side layers near the identity), as in the VAE of the IAF paper
    (Kingma et al. 2016).  ``num_layers=0`` gives the diagonal Gaussian encoder baseline.

    Call it as the guide with the model's data argument first: ``guide(x, ...)``; the latent
    site ``site`` is sampled inside ``numpyro.plate(plate, len(x))``.  For minibatch training, give
    both the model and the guide the minibatch as ``x`` and the guide ``data_size=N`` (the rows of
    the whole data set, the model's ``numpyro.plate(plate, N, subsample_size=len(x))``): the guide's
    plate then scales ``log q`` by ``N / len(x)`` as the model's plate scales ``log p``.  Without it
    the ELBO weighed the entropy ``len(x) / N`` times too little, and the posterior sd came out
    ``sqrt(len(x) / N)`` times too small.
    """

    def __init__(self, site: str, latent_dim: int, data_dim: int, *, flow="iaf", num_layers: int = 2,
                 encoder_hidden: Sequence[int] = (32,), context_dim: int = 8, plate: str = "data",
                 prefix: str = "amortized", seed: int = 0, data_size: int | None = None, **flow_options):
        if data_size is not None and (not is_int(data_size) or data_size < 1):
            raise ValueError(f"data_size must be a positive int (the rows of the whole data set) or None; "
                             f"got {data_size!r}")
        self.data_size = None if data_size is None else int(data_size)
        self.site, self.latent_dim, self.data_dim = site, int(latent_dim), int(data_dim)
        self.plate, self.prefix, self.context_dim = plate, prefix, int(context_dim) if num_layers else 0
        k_enc, k_flow = jax.random.split(jax.random.PRNGKey(seed))
        self._encoder = MLP.init(k_enc, self.data_dim, tuple(encoder_hidden), 2 * self.latent_dim + self.context_dim,
                                 out_scale=0.1)
        self._flow = None
        if num_layers:
            builder, form = (get_builder(flow), guide_form(flow)) if isinstance(flow, str) else (flow, {})
            opts = {"hidden_dims": (max(16, 2 * self.latent_dim),) * 2, **form}
            opts.update(flow_options)
            self._flow = builder(k_flow, self.latent_dim, num_layers=num_layers, context_dim=self.context_dim, **opts)

    def encode(self, x):
        """``(mu, sigma, h)`` for data rows ``x`` of shape (n, data_dim), with the current params."""
        leaves, treedef = jax.tree_util.tree_flatten(self._encoder)
        enc = jax.tree_util.tree_unflatten(treedef, numpyro.param(f"{self.prefix}_encoder", leaves))
        out = enc(x)
        d = self.latent_dim
        mu, raw = out[..., :d], out[..., d:2 * d]
        return mu, jax.nn.softplus(raw + 0.5413) * 0.5 + 1e-4, out[..., 2 * d:]

    def distribution(self, x):
        mu, sigma, h = self.encode(x)
        base = dist.Normal(mu, sigma).to_event(1)
        if self._flow is None:
            return base
        flow = nf_ppl.flow_module(f"{self.prefix}_flow", self._flow).condition(h)
        return dist.TransformedDistribution(base, flow.transforms)

    def __call__(self, x, *args, **kwargs):
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[-1] != self.data_dim:
            raise ValueError(f"x must have shape (n, {self.data_dim}); got shape {x.shape}")
        if self.data_size is None:
            with numpyro.plate(self.plate, x.shape[0]):
                return numpyro.sample(self.site, self.distribution(x))
        if x.shape[0] > self.data_size:
            raise ValueError(f"x has {x.shape[0]} rows, more than data_size={self.data_size}")
        with numpyro.plate(self.plate, self.data_size, subsample_size=x.shape[0]):
            return numpyro.sample(self.site, self.distribution(x))
