"""Exact-density models of handwritten digits: a categorical MADE and a small Glow, in bits per dimension.

What it shows
-------------
scikit-learn's bundled digits (1797 images of 8 x 8 pixels with 17 grey levels 0..16; no
download), split into training and test images.

1. A categorical MADE (``nf_ppl.models.autoregressive_density.autoregressive_model(conditional="categorical",
   num_levels=17)``): ``log p(x) = sum_i log Categorical(x_i | x_<i)``, exact in one network pass,
   sampled ancestrally (64 sweeps).  Trained with Adam on the exact negative log-likelihood.
2. A small Glow (``nf_ppl.glow.glow``, 2 levels of squeeze / ActNorm / 1x1 convolution /
   affine coupling) on uniformly dequantised pixels ``(x + u) / 17``, with fresh noise ``u`` at
   every step; its bits/dim bound the discrete model's from above.

Both report test bits per dimension next to the baseline of independent pixels (a per-pixel
histogram, the best model that ignores all dependencies) and of the uniform model
(log2 17 = 4.09 bits/dim).

Plots: ``made_samples.png`` (digits drawn from the MADE next to real test digits) and
``glow_samples.png`` (draws of the Glow, quantised back to 17 levels).

Run ``python examples/digits_autoregressive.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

LEVELS = 17


def load_digits(seed: int):
    """Integer images ``(n, 64)`` in ``0..16``, split 80/20."""
    from sklearn.datasets import load_digits as sk_digits

    x = sk_digits().data.astype(np.int32)
    x_tr, x_te = C.train_test_split(np.random.default_rng(seed), x, test_fraction=0.2)
    return x_tr, x_te


def independent_pixels_bpd(x_tr, x_te) -> float:
    """Test bits/dim of independent per-pixel categoricals fitted with add-one smoothing."""
    counts = np.stack([np.bincount(x_tr[:, i], minlength=LEVELS) for i in range(x_tr.shape[1])]) + 1.0
    logp = np.log(counts / counts.sum(1, keepdims=True))
    ll = logp[np.arange(x_te.shape[1]), x_te].sum(1)
    return float(-ll.mean() / (x_te.shape[1] * math.log(2)))


def image_grid(ax, images, title, cols=8):
    """Show ``(n, 64)`` images (0..16) as a grid."""
    images = np.asarray(images).reshape(-1, 8, 8)
    rows = int(math.ceil(len(images) / cols))
    canvas = np.full((rows * 9 + 1, cols * 9 + 1), np.nan)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        canvas[1 + 9 * r:9 * r + 9, 1 + 9 * c:9 * c + 9] = img
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=LEVELS - 1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def train(model, loss_fn, steps, lr, key, data, batch, val_data=None, eval_every=100):
    """Adam on ``loss_fn(model, batch, key)``; returns the model and the training losses.

    With ``val_data``, the loss on it is computed every ``eval_every`` steps and the model with the
    lowest validation loss is returned (early stopping without stopping: small data overfits).
    """
    import jax
    import optax

    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.1))

    @jax.jit
    def step(model, state, key):
        k_idx, k_loss = jax.random.split(key)
        idx = jax.random.randint(k_idx, (batch,), 0, data.shape[0])
        loss, grads = jax.value_and_grad(loss_fn)(model, data[idx], k_loss)
        updates, state = opt.update(grads, state, model)
        return optax.apply_updates(model, updates), state, loss

    val_loss = jax.jit(loss_fn)
    state = opt.init(model)
    losses, best, best_loss = [], model, np.inf
    for i in range(steps):
        model, state, loss = step(model, state, jax.random.fold_in(key, i))
        losses.append(loss)
        if val_data is not None and ((i + 1) % eval_every == 0 or i + 1 == steps):
            v = float(val_loss(model, val_data, jax.random.PRNGKey(i)))
            if v < best_loss:
                best, best_loss = model, v
    return (best if val_data is not None else model), np.asarray(losses)


def main(argv=None) -> int:
    args = C.parse_args("digits_autoregressive", __doc__.split("\n")[0], argv)
    out = C.prepare_output(args)
    with C.quick_compile(args.quick):
        return _run(args, out)


def _run(args, out) -> int:
    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt

    quick = args.quick
    x_tr, x_te = load_digits(args.seed)
    dtype = C.float_dtype()
    base_bpd = independent_pixels_bpd(x_tr, x_te)
    metrics = {"bpd": {"uniform": math.log2(LEVELS), "independent pixels": base_bpd}}
    print(f"digits: {len(x_tr)} training (a tenth used for model selection in the full run) and {len(x_te)} "
          f"test images of 8 x 8 pixels, {LEVELS} levels")
    print(f"   baselines: uniform {math.log2(LEVELS):.3f} bits/dim, independent pixels {base_bpd:.3f} bits/dim")
    key = jax.random.PRNGKey(args.seed)
    n_val = len(x_tr) // 10  # validation images for model selection (the test set stays untouched)
    x_val_j, x_tr_j, x_te_j = jnp.asarray(x_tr[:n_val]), jnp.asarray(x_tr[n_val:]), jnp.asarray(x_te)

    # ---- 1. categorical MADE
    try:
        from nf_ppl.models.autoregressive_density import autoregressive_model
    except Exception as err:  # pragma: no cover - only while the module is being written
        autoregressive_model = None
        C.note(f"the categorical MADE was skipped ({type(err).__name__}: {err})")
    if autoregressive_model is not None:
        steps = 150 if quick else 3000
        made = autoregressive_model(jax.random.fold_in(key, 1), 64, conditional="categorical", num_levels=LEVELS,
                                    hidden_dims=(64,) if quick else (256,), dtype=dtype)
        with C.timer() as t:
            made, losses = train(made, lambda m, b, k: -jnp.mean(m.log_prob(b)), steps, 3e-3 if quick else 1e-3,
                                 jax.random.fold_in(key, 2), x_tr_j, 128,
                                 val_data=None if quick else x_val_j)
            bpd = float(jnp.mean(made.bits_per_dim(x_te_j)))
        metrics["bpd"]["categorical MADE"] = bpd
        print(f"\n1. categorical MADE: {steps} steps in {t():.1f} s, test {bpd:.3f} bits/dim")
        draws = np.asarray(made.sample(jax.random.fold_in(key, 3), (32,)))
        fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
        image_grid(axes[0], draws, f"32 digits sampled from the categorical MADE ({bpd:.2f} bits/dim)")
        image_grid(axes[1], x_te[:32], "32 real test digits")
        fig.tight_layout()
        C.save_figure(fig, out, "made_samples.png")

    # ---- 2. Glow on dequantised pixels
    try:
        from nf_ppl.glow import bits_per_dim, glow, uniform_dequantize
    except Exception as err:  # pragma: no cover
        glow = None
        C.note(f"the Glow part was skipped ({type(err).__name__}: {err})")
    if glow is not None:
        steps = 60 if quick else 3000
        img = lambda x: x.reshape(x.shape[0], 1, 8, 8)  # noqa: E731
        init_batch = uniform_dequantize(jax.random.fold_in(key, 4), img(x_tr_j[:512]), LEVELS, dtype)
        flow = glow(jax.random.fold_in(key, 5), (1, 8, 8), num_levels=2, num_steps=1 if quick else 4,
                    hidden_channels=8 if quick else 32, data=init_batch, dtype=dtype,
                    scan=not quick)  # unscanned steps compile faster and run faster without XLA optimisation

        def glow_loss(f, batch, k):
            return -jnp.mean(f.log_prob(uniform_dequantize(k, img(batch), LEVELS, dtype)))

        with C.timer() as t:
            flow, losses = train(flow, glow_loss, steps, 2e-3 if quick else 1e-3, jax.random.fold_in(key, 6),
                                 x_tr_j, 128, val_data=None if quick else x_val_j)
            lp = flow.log_prob(uniform_dequantize(jax.random.fold_in(key, 7), img(x_te_j), LEVELS, dtype))
            bpd = float(jnp.mean(bits_per_dim(lp, 64, LEVELS)))
        metrics["bpd"]["Glow"] = bpd
        print(f"2. Glow (uniform dequantisation): {steps} steps in {t():.1f} s, test {bpd:.3f} bits/dim "
              "(an upper bound on the discrete model's)")
        draws = np.asarray(jax.jit(lambda f, k: f.sample(k, (32,)))(flow, jax.random.fold_in(key, 8)))
        draws = np.clip(np.floor(draws * LEVELS), 0, LEVELS - 1).reshape(32, 64)
        fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
        image_grid(axes[0], draws, f"32 Glow draws, quantised to 17 levels ({bpd:.2f} bits/dim)")
        image_grid(axes[1], x_te[32:64], "32 real test digits")
        fig.tight_layout()
        C.save_figure(fig, out, "glow_samples.png")

    print("\ntest bits per dimension (lower is better):")
    for name, v in metrics["bpd"].items():
        print(f"   {name:20s} {v:.3f}")
    C.save_metrics(out, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
