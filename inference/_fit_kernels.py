"""The jitted pieces of :func:`inference.fit`: spans of training steps under ``lax.scan`` and the
held-out loss in fixed-size blocks, cached across calls with the same structure."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax

__all__ = ["cached", "chunk_orders", "epoch_order", "make_chunk", "make_eval", "shuffled_indices"]


def _loss(treedef, leaves, y, c):
    flow = jax.tree_util.tree_unflatten(treedef, leaves)
    lp = flow.log_prob(y) if c is None else flow.log_prob(y, context=c)
    return -jnp.mean(lp)


_CACHE: dict = {}


def cached(key, make):
    """Reuse jitted functions across ``fit`` calls with the same structure (saves compile time)."""
    if key not in _CACHE:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[key] = make()
    return _CACHE[key]


def epoch_order(base_key, step, steps_per_epoch, n_train):
    """The order in which the epoch holding ``step`` visits the training rows (a permutation)."""
    epoch_key = jax.random.fold_in(jax.random.fold_in(base_key, 1), step // steps_per_epoch)
    return jax.random.permutation(epoch_key, n_train)


_epoch_order = jax.jit(epoch_order, static_argnums=(2, 3))


def chunk_orders(base_key, start: int, length: int, steps_per_epoch: int, n_train: int, shuffled: bool):
    """The orders of every epoch a span of ``length`` steps from ``start`` can touch, stacked
    ``(length // steps_per_epoch + 2, n_train)`` (a count fixed by ``length``, so the span compiles
    once); a ``(1, 1)`` placeholder when minibatches are not shuffled.

    Drawn here, outside the span's program, by :func:`epoch_order` (the same bits as inside it): a
    permutation is a sort, and compiling it inside every span cost about a quarter of the span's
    compile time (maf, d = 30: 3.2 s -> 2.35 s of CPU time); this program compiles once per
    ``n_train``.
    """
    if not shuffled:
        return jnp.zeros((1, 1), jnp.int32)
    first = start // steps_per_epoch
    count = length // steps_per_epoch + 2
    return jnp.stack([_epoch_order(base_key, (first + k) * steps_per_epoch, steps_per_epoch, n_train)
                      for k in range(count)])


def shuffled_indices(order, step, batch_size, steps_per_epoch, n_train):
    """Rows of the minibatch at ``step``: positions ``(step mod steps_per_epoch) * batch_size + [0, batch_size)``
    of the epoch's ``order``, wrapping around (the last minibatch is topped up from the same order)."""
    return order[(step % steps_per_epoch * batch_size + jnp.arange(batch_size)) % n_train]


def make_chunk(treedef, opt, batch_size, steps_per_epoch, sampling, stop_on_nonfinite, batch_sharding, ema=None):
    """One jitted function running ``length`` training steps under ``lax.scan``.

    Every update is multiplied by ``lr_scale`` (the learning rate's factor after plateau cuts; with
    Adam, scaling the update is scaling the learning rate), and leaf by leaf by ``update_scale``
    when given (:func:`inference._standardize.update_scales`).

    With ``ema`` (a decay in ``[0, 1)``) the state passed as ``opt_state`` is ``(optimiser state,
    average)``: after every applied step ``average <- ema * average + (1 - ema) * parameters``
    (a skipped, non-finite step leaves it as it is).

    With ``sampling="shuffle"`` ``orders`` holds the permutations of the training rows of the
    epochs the span touches (:func:`chunk_orders`, from ``first_epoch`` on); step ``s`` takes the rows at positions
    ``(s mod steps_per_epoch) * batch_size + [0, batch_size)`` of it, wrapping around, so the last
    minibatch of an epoch is topped up with the first rows of the same order.
    """

    def minibatch(train_y, train_c, base_key, orders, first_epoch, step):
        n_train = train_y.shape[0]
        if batch_size == n_train:  # full batch
            return train_y, train_c
        if sampling == "replacement":
            idx = jax.random.randint(jax.random.fold_in(base_key, step), (batch_size,), 0, n_train)
        else:
            order = orders[step // steps_per_epoch - first_epoch]
            idx = shuffled_indices(order, step, batch_size, steps_per_epoch, n_train)
        y = jnp.take(train_y, idx, axis=0)
        c = None if train_c is None else jnp.take(train_c, idx, axis=0)
        return y, c

    def one_step(train_y, train_c, base_key, lr_scale, orders, first_epoch, update_scale, carry, step):
        leaves, state, halted = carry
        opt_state, average = state if ema is not None else (state, None)
        y, c = minibatch(train_y, train_c, base_key, orders, first_epoch, step)
        if batch_sharding is not None:
            y = jax.lax.with_sharding_constraint(y, batch_sharding)
            if c is not None:
                c = jax.lax.with_sharding_constraint(c, batch_sharding)
        loss, grads = jax.value_and_grad(partial(_loss, treedef))(leaves, y, c)
        finite = jnp.isfinite(loss)
        for g in jax.tree_util.tree_leaves(grads):
            finite = finite & jnp.all(jnp.isfinite(g))
        safe_grads = jax.tree_util.tree_map(lambda g: jnp.where(jnp.isfinite(g), g, 0), grads)
        updates, new_opt = opt.update(safe_grads, opt_state, leaves)
        updates = jax.tree_util.tree_map(lambda u: u * lr_scale.astype(u.dtype), updates)  # plateau cuts
        if update_scale is not None:  # the data-end affine layer's location steps in the data's sds
            updates = [u * s.astype(u.dtype) for u, s in zip(updates, update_scale)]
        new_leaves = optax.apply_updates(leaves, updates)
        apply = finite & ~halted
        keep = lambda new, old: jnp.where(apply, new, old)  # noqa: E731
        leaves = jax.tree_util.tree_map(keep, new_leaves, leaves)
        opt_state = jax.tree_util.tree_map(keep, new_opt, opt_state)
        if ema is not None:
            average = jax.tree_util.tree_map(lambda a, p: keep(ema * a + (1 - ema) * p, a), average, leaves)
        state = opt_state if ema is None else (opt_state, average)
        bad = ~finite & ~halted
        if stop_on_nonfinite:
            halted = halted | ~finite
        return (leaves, state, halted), (loss, bad)

    @partial(jax.jit, static_argnums=(0,))
    def chunk(length, leaves, opt_state, train_y, train_c, base_key, start, lr_scale, orders, update_scale=None):
        steps = start + jnp.arange(length)
        carry = (leaves, opt_state, jnp.asarray(False))
        body = partial(one_step, train_y, train_c, base_key, lr_scale, orders, start // steps_per_epoch, update_scale)
        (leaves, opt_state, halted), (losses, bad) = jax.lax.scan(body, carry, steps)
        ok = ~bad & jnp.isfinite(losses)
        mean_loss = jnp.sum(jnp.where(ok, losses, 0)) / jnp.maximum(jnp.sum(ok), 1)
        return leaves, opt_state, mean_loss, bad, halted

    return chunk


def make_eval(treedef, n_val, block=4096):
    """Mean held-out NLL, evaluated in fixed-size padded blocks (one compile whatever the size)."""
    block = min(block, n_val)
    n_blocks = -(-n_val // block)
    pad = n_blocks * block - n_val

    @jax.jit
    def evaluate(leaves, val_y, val_c):
        def blocks(a):
            a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a
            return a.reshape((n_blocks, block) + a.shape[1:])

        w = jnp.concatenate([jnp.ones(n_val, val_y.dtype), jnp.zeros(pad, val_y.dtype)]).reshape(n_blocks, block)
        ys = blocks(val_y)
        cs = None if val_c is None else blocks(val_c)

        def one(args):
            y, c, wi = args
            flow = jax.tree_util.tree_unflatten(treedef, leaves)
            lp = flow.log_prob(y) if c is None else flow.log_prob(y, context=c)
            return jnp.sum(jnp.where(wi > 0, lp, 0.0))

        total = jax.lax.map(one, (ys, cs, w))
        return -jnp.sum(total) / n_val

    return evaluate
