"""A variational autoencoder on the digits with an amortised IAF posterior and an importance-weighted bound.

What it shows
-------------
Model (per 8 x 8 digit with grey levels ``x_i in 0..16``)::

    z ~ N(0, I_k),    x_i | z ~ Binomial(16, sigmoid(decoder(z)_i)),   i = 1..64

with a small MLP decoder registered as a NumPyro param.  The guide is
``inference.AmortizedFlowGuide``: an encoder MLP gives ``(mu, sigma, h)`` per image and a
conditional IAF with context ``h`` transforms ``mu + sigma * eps`` (Kingma et al. 2016), trained
with SVI on minibatches.  On test images the example reports

* the ELBO (one draw of ``z`` per image) and
* the importance-weighted bound ``log (1/S) sum_s p(x, z_s) / q(z_s | x)`` (Burda et al.) with
  ``S`` draws, a tighter lower bound on ``log p(x)``, in nats per image.

The full run also trains the diagonal-Gaussian encoder (``num_layers=0``) as a baseline.

Plots: ``vae_reconstructions.png`` (test digits and their reconstructions) and
``vae_samples.png`` (decoder means of ``z ~ N(0, I)``).

Run ``python examples/vae_digits.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402
from digits_autoregressive import LEVELS, image_grid, load_digits  # noqa: E402


def make_model(decoder0):
    """The VAE's generative model with the decoder ``decoder0`` (its weights become a param site)."""
    import jax
    import numpyro
    import numpyro.distributions as dist

    leaves0, treedef = jax.tree_util.tree_flatten(decoder0)
    latent_dim = decoder0.weights[0].shape[1]

    def model(x_scaled, x_counts):
        decoder = jax.tree_util.tree_unflatten(treedef, numpyro.param("decoder", leaves0))
        with numpyro.plate("data", x_counts.shape[0]):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([latent_dim]).to_event(1))
            numpyro.sample("x", dist.Binomial(LEVELS - 1, logits=decoder(z)).to_event(1), obs=x_counts)

    def decode(params, z):
        return jax.tree_util.tree_unflatten(treedef, params["decoder"])(z)

    return model, decode


def iw_bound(guide, params, decode, x_scaled, x_counts, key, num_samples):
    """Per-image ELBO (one draw) and importance-weighted bound with ``num_samples`` draws, in nats."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from jax.scipy.special import logsumexp
    from numpyro import handlers

    @jax.jit
    def bounds(params, x_scaled, x_counts, key):
        with handlers.substitute(data=params):
            q = guide.distribution(x_scaled)  # batch shape (n,), event (k,)
        z = q.sample(key, (num_samples,))  # (S, n, k)
        log_q = q.log_prob(z)
        prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        lik = dist.Binomial(LEVELS - 1, logits=decode(params, z)).log_prob(x_counts).sum(-1)
        log_w = prior + lik - log_q  # (S, n)
        return jnp.mean(log_w[0]), jnp.mean(logsumexp(log_w, axis=0) - math.log(num_samples))

    elbo, iwb = bounds(params, x_scaled, x_counts, key)
    return float(elbo), float(iwb)


def main(argv=None) -> int:
    args = C.parse_args("vae_digits", __doc__.split("\n")[0], argv)
    out = C.prepare_output(args)
    with C.quick_compile(args.quick):
        return _run(args, out)


def _fit_vae(guide, model, x_scaled, x_counts, steps, batch, lr, seed):
    import jax
    import optax
    from numpyro.infer import SVI, Trace_ELBO

    svi = SVI(model, guide, optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.1)), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(seed), x_scaled[:batch], x_counts[:batch])
    update = jax.jit(svi.update)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        idx = rng.integers(0, len(x_counts), batch)
        state, loss = update(state, x_scaled[idx], x_counts[idx])
        losses.append(loss)
    # the ELBO of a minibatch is a sum over its rows: per image
    return svi.get_params(state), -np.asarray(losses) / batch


def _run(args, out) -> int:
    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt

    import inference
    from nf_ppl import MLP

    quick = args.quick
    dtype = C.float_dtype()
    x_tr, x_te = load_digits(args.seed)
    if quick:
        x_te = x_te[:200]
    x_tr_s, x_te_s = (x_tr / (LEVELS - 1)).astype(dtype), (x_te / (LEVELS - 1)).astype(dtype)
    x_tr_c, x_te_c = x_tr.astype(dtype), x_te.astype(dtype)
    latent = 4 if quick else 8
    hidden = 64 if quick else 256
    steps = 250 if quick else 8000
    batch = 128
    num_iw = 32 if quick else 1000
    print(f"digits: {len(x_tr)} training and {len(x_te)} test images; latent dimension {latent}")

    decoder0 = MLP.init(jax.random.PRNGKey(args.seed), latent, (hidden,), 64, out_scale=0.1, dtype=dtype)
    model, decode = make_model(decoder0)
    variants = {"IAF posterior": 2 if quick else 3}
    if not quick:
        variants["diagonal Gaussian"] = 0
    metrics = {"elbo": {}, "iw_bound": {}}
    results = {}
    for label, num_layers in variants.items():
        guide = inference.AmortizedFlowGuide("z", latent, 64, num_layers=num_layers, encoder_hidden=(hidden,),
                                             context_dim=8 if quick else 16, seed=args.seed + 1,
                                             hidden_dims=(32, 32) if quick else (64, 64))
        with C.timer() as t:
            params, elbos = _fit_vae(guide, model, x_tr_s, x_tr_c, steps, batch, 3e-3 if quick else 1e-3,
                                     args.seed + 2)
        elbo, iwb = iw_bound(guide, params, decode, x_te_s, x_te_c, jax.random.PRNGKey(args.seed + 3), num_iw)
        metrics["elbo"][label], metrics["iw_bound"][label] = elbo, iwb
        metrics.setdefault("train_elbo_last", {})[label] = float(np.mean(elbos[-50:]))
        results[label] = (guide, params)
        print(f"   {label:18s} {steps} steps in {t():.1f} s; test ELBO {elbo:8.2f} nats/image, "
              f"importance-weighted bound (S={num_iw}) {iwb:8.2f} nats/image "
              f"({-iwb / (64 * math.log(2)):.3f} bits/dim)")

    guide, params = results["IAF posterior"]
    from numpyro import handlers

    with handlers.substitute(data=params):
        z = guide.distribution(x_te_s[:16]).sample(jax.random.PRNGKey(args.seed + 4))
    recon = (LEVELS - 1) * jax.nn.sigmoid(decode(params, z))
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    image_grid(axes[0], x_te[:16], "16 test digits")
    image_grid(axes[1], np.asarray(recon), "their reconstructions (decoder mean, z ~ q(z | x))")
    fig.tight_layout()
    C.save_figure(fig, out, "vae_reconstructions.png")

    z = jax.random.normal(jax.random.PRNGKey(args.seed + 5), (32, latent), dtype)
    samples = (LEVELS - 1) * jax.nn.sigmoid(decode(params, z))
    fig, ax = plt.subplots(figsize=(5.5, 3))
    image_grid(ax, np.asarray(samples), "decoder means of 32 draws z ~ N(0, I)")
    fig.tight_layout()
    C.save_figure(fig, out, "vae_samples.png")
    metrics["iw_minus_elbo"] = metrics["iw_bound"]["IAF posterior"] - metrics["elbo"]["IAF posterior"]
    C.save_metrics(out, metrics)
    _ = jnp
    return 0


if __name__ == "__main__":
    sys.exit(main())
