"""Maximum-likelihood fitting of flows: ``fit(flow, data, ...) -> (trained_flow, history)``.

The objective is the mean negative log-likelihood ``-mean_i log p(y_i)`` (or ``log p(y_i | x_i)``
for a conditional flow) over random minibatches.  All training steps between two host
round-trips run inside one jitted ``lax.scan``; each step draws its minibatch with
``fold_in(key, global_step)``, so a run is fully determined by ``seed`` and a run resumed from a
checkpoint reproduces the uninterrupted one bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
import warnings
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nf_ppl
from nf_ppl._checks import check_finite, check_finite_params

from ._io import (FlowFileError, arrays_to_leaves, check_folder, leaves_to_arrays, read_container, spec_of,
                  write_container)

__all__ = ["FitHistory", "fit", "make_optimizer"]

ON_NONFINITE = ("skip", "stop")


@dataclasses.dataclass
class FitHistory:
    """What happened during :func:`fit` (one entry per evaluation, i.e. every ``eval_every`` steps)."""

    steps: list = dataclasses.field(default_factory=list)
    train_loss: list = dataclasses.field(default_factory=list)
    val_loss: list = dataclasses.field(default_factory=list)
    wall_time: list = dataclasses.field(default_factory=list)
    best_step: int = 0
    best_val_loss: float = math.inf
    nonfinite_steps: list = dataclasses.field(default_factory=list)
    stop_reason: str = ""
    num_devices: int = 1
    resumed_from: int | None = None
    initial_val_loss: float = math.nan
    checkpoint_failures: list = dataclasses.field(default_factory=list)
    event_size: int = 0

    @property
    def val_log_likelihood(self) -> list:
        """Held-out mean log-likelihood per example, in nats, at each evaluation (``-val_loss``)."""
        return [-v for v in self.val_loss]

    @property
    def val_bits_per_dim(self) -> list:
        """Held-out negative log-likelihood in bits per dimension at each evaluation."""
        return [v / (max(self.event_size, 1) * math.log(2)) for v in self.val_loss]

    @property
    def num_nonfinite(self) -> int:
        """How many steps had a non-finite loss or gradient (skipped, or the one that stopped the fit)."""
        return len(self.nonfinite_steps)

    def summary(self) -> str:
        """One paragraph: why the fit stopped, the best held-out loss and where, what went wrong on the way."""
        step = self.steps[-1] if self.steps else 0
        reasons = {"max_steps": "the step budget (max_steps) was used up",
                   "early_stopping": "early stopping: no improvement of the held-out loss for `patience` evaluations",
                   "callback": "the callback asked to stop", "interrupted": "interrupted (KeyboardInterrupt)",
                   "nonfinite": "a non-finite loss or gradient (on_nonfinite='stop')"}
        words = [f"stopped after step {step}: {reasons.get(self.stop_reason, self.stop_reason or 'not run')}"]
        if math.isfinite(self.best_val_loss):
            start = f" (start: {self.initial_val_loss:.4f})" if math.isfinite(self.initial_val_loss) else ""
            words.append(f"best held-out NLL {self.best_val_loss:.4f} at step {self.best_step}{start}; "
                         "those parameters were returned")
        if self.nonfinite_steps:
            words.append(f"{self.num_nonfinite} step(s) had a non-finite loss or gradient (first at step "
                         f"{self.nonfinite_steps[0]}) and were skipped")
        if self.checkpoint_failures:
            words.append(f"{len(self.checkpoint_failures)} checkpoint write(s) failed (first: "
                         f"{self.checkpoint_failures[0]})")
        if self.resumed_from is not None:
            words.append(f"resumed from a checkpoint at step {self.resumed_from}")
        return "; ".join(words) + "."

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitHistory":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def make_optimizer(learning_rate=1e-3, *, schedule=None, clip_norm=None, max_steps=None, weight_decay=0.0):
    """Adam (or AdamW with ``weight_decay``), optionally with a schedule and global-norm clipping.

    ``schedule`` is an optax schedule (callable ``step -> lr``), ``"cosine"`` (5% linear warm-up
    then cosine decay over ``max_steps``) or ``None`` (constant ``learning_rate``).
    """
    if schedule == "cosine":
        if not max_steps:
            raise ValueError("schedule='cosine' needs max_steps")
        lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, max_steps // 20), max_steps,
                                                end_value=learning_rate * 1e-2)
    elif schedule is None:
        lr = learning_rate
    elif callable(schedule):
        lr = schedule
    else:
        raise ValueError(f"schedule must be None, 'cosine' or an optax schedule; got {schedule!r}")
    opt = optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr)
    if clip_norm is not None:
        if not clip_norm > 0:
            raise ValueError(f"clip_norm must be positive; got {clip_norm}")
        opt = optax.chain(optax.clip_by_global_norm(float(clip_norm)), opt)
    return opt


# -- input checks ---------------------------------------------------------------------------------

def _float_dtype(leaves):
    floats = [l for l in leaves if jnp.issubdtype(jnp.result_type(l), jnp.floating)]
    return jnp.result_type(*floats) if floats else jnp.result_type(float)


def _check_data(flow, data, name="data"):
    data = np.asarray(data)
    event = tuple(flow.flow_event_shape)
    if data.ndim != 1 + len(event) or tuple(data.shape[1:]) != event:
        if data.ndim >= 1 and data.shape[-1] != event[-1]:
            raise ValueError(f"{name} has last dimension {data.shape[-1]} but the flow's event size is {event[-1]}: "
                             f"{name} must have shape (n, {', '.join(map(str, event))}); got shape {data.shape}")
        raise ValueError(f"{name} must have shape (n, {', '.join(map(str, event))}) (one row per observation); "
                         f"got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number):
        raise TypeError(f"{name} must be numeric; got dtype {data.dtype}")
    if data.shape[0] < 1:
        raise ValueError(f"{name} is empty (shape {data.shape})")
    check_finite(data.astype(float) if not np.issubdtype(data.dtype, np.floating) else data, name)
    return data


def _check_context(flow, context, n, name="context"):
    if not flow.context_dim:
        if context is not None:
            raise ValueError(f"{name} was given but the flow is not conditional (context_dim=0); "
                             "build it with context_dim=k to fit p(y | x)")
        return None
    if context is None:
        raise ValueError(f"the flow is conditional (context_dim={flow.context_dim}): pass {name}= with shape "
                         f"(n, {flow.context_dim}), one row per data row")
    context = np.asarray(context)
    if context.ndim != 2 or context.shape[1] != flow.context_dim:
        raise ValueError(f"{name} must have shape (n, {flow.context_dim}) (context_dim={flow.context_dim}); "
                         f"got shape {context.shape}")
    if context.shape[0] != n:
        raise ValueError(f"{name} has {context.shape[0]} rows but the data has {n}; they must match row by row")
    check_finite(context, name)
    return context


def _fingerprint(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


# -- the jitted pieces ---------------------------------------------------------------------------

def _loss(treedef, leaves, y, c):
    flow = jax.tree_util.tree_unflatten(treedef, leaves)
    lp = flow.log_prob(y) if c is None else flow.log_prob(y, context=c)
    return -jnp.mean(lp)


_CACHE: dict = {}


def _cached(key, make):
    """Reuse jitted functions across ``fit`` calls with the same structure (saves compile time)."""
    if key not in _CACHE:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[key] = make()
    return _CACHE[key]


def _make_chunk(treedef, opt, batch_size, stop_on_nonfinite, batch_sharding):
    """One jitted function running ``length`` training steps under ``lax.scan``."""

    def one_step(train_y, train_c, base_key, carry, step):
        leaves, opt_state, halted = carry
        n_train = train_y.shape[0]
        if batch_size == n_train:  # full batch
            y, c = train_y, train_c
        else:
            idx = jax.random.randint(jax.random.fold_in(base_key, step), (batch_size,), 0, n_train)
            y = jnp.take(train_y, idx, axis=0)
            c = None if train_c is None else jnp.take(train_c, idx, axis=0)
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
        new_leaves = optax.apply_updates(leaves, updates)
        apply = finite & ~halted
        keep = lambda new, old: jnp.where(apply, new, old)  # noqa: E731
        leaves = jax.tree_util.tree_map(keep, new_leaves, leaves)
        opt_state = jax.tree_util.tree_map(keep, new_opt, opt_state)
        bad = ~finite & ~halted
        if stop_on_nonfinite:
            halted = halted | ~finite
        return (leaves, opt_state, halted), (loss, bad)

    @partial(jax.jit, static_argnums=(0,))
    def chunk(length, leaves, opt_state, train_y, train_c, base_key, start):
        steps = start + jnp.arange(length)
        carry = (leaves, opt_state, jnp.asarray(False))
        body = partial(one_step, train_y, train_c, base_key)
        (leaves, opt_state, halted), (losses, bad) = jax.lax.scan(body, carry, steps)
        ok = ~bad & jnp.isfinite(losses)
        mean_loss = jnp.sum(jnp.where(ok, losses, 0)) / jnp.maximum(jnp.sum(ok), 1)
        return leaves, opt_state, mean_loss, bad, halted

    return chunk


def _make_eval(treedef, n_val, block=4096):
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


# -- the driver ------------------------------------------------------------------------------------

def fit(flow, data, *, context=None, max_steps: int = 2000, batch_size: int = 256, learning_rate: float = 1e-3,
        optimizer=None, schedule=None, clip_norm: float | None = None, weight_decay: float = 0.0,
        val_fraction: float = 0.1, val_data=None, val_context=None, patience: int | None = 10,
        min_delta: float = 0.0, eval_every: int = 100, seed: int = 0, on_nonfinite: str = "skip",
        progress: bool = True, callback: Callable | None = None, checkpoint_path=None,
        checkpoint_every: int | None = None, resume: bool = False, shard: bool | str = "auto"):
    """Fit ``flow`` to ``data`` by maximum likelihood; returns ``(trained_flow, history)``.

    Args:
        flow: an :class:`nf_ppl.Flow`; conditional flows (``context_dim > 0``) need ``context``.
        data: array ``(n,) + event_shape``; rows with NaN/inf are refused (the error lists them).
        context: array ``(n, context_dim)`` for a conditional flow ``p(y | x)``.
        max_steps, batch_size: number of optimiser steps and minibatch size (rows drawn with
            replacement, reproducibly from ``seed``).  A ``batch_size`` at or above the number of
            training rows means full-batch training (with a warning when it is above).
        learning_rate, schedule, clip_norm, weight_decay: Adam settings (see
            :func:`make_optimizer`); ``optimizer`` (any optax transformation) overrides them.
        val_fraction / val_data (+ val_context): held-out rows; ``val_fraction`` of ``data`` is
            split off at random unless ``val_data`` is given.  Early stopping after ``patience``
            evaluations without an improvement of ``min_delta``; the parameters with the best
            held-out loss seen (the starting ones included) are returned.
        eval_every: steps per jitted ``lax.scan`` chunk; validation, progress bar, callback and
            checkpoints happen between chunks.
        on_nonfinite: ``"skip"`` (default; the step is skipped, parameters and optimiser state
            untouched, and a warning names the step) or ``"stop"`` (the fit stops at that step and
            returns the best parameters so far).
        callback: ``callback(step, flow, info) -> bool | None`` after every chunk; returning True
            stops the fit.  A ``KeyboardInterrupt`` (Ctrl-C, or raised by the callback) also stops
            it and the best parameters so far are returned.
        checkpoint_path, checkpoint_every, resume: write an atomic checkpoint every
            ``checkpoint_every`` steps (rounded up to a chunk boundary); ``resume=True`` continues
            from the checkpoint if it exists, reproducing the uninterrupted run bit for bit.  The
            checkpoint folder must exist and be writable: that is checked before the first step.
            A checkpoint that cannot be written later (disk full, folder removed) is reported
            by a warning and in ``history.checkpoint_failures``; training goes on and the best
            parameters are returned as usual.
        shard: ``"auto"`` shards each minibatch over all local devices (``jax.sharding``) when
            there are several and ``batch_size`` divides evenly; ``True`` requires it; ``False`` never.

    Guarantees: a flow whose parameters hold NaN or inf is refused up front (the error names the
    layer and parameter); with held-out data the returned parameters are never worse on it than
    the ones passed in (the start is the first "best"; if no evaluation beats it, it is returned,
    with a warning); and when no step at all has a finite loss and gradient, ``fit`` stops after
    the first chunk with a ``ValueError`` that says what to check instead of returning an
    untrained flow.  ``history.summary()`` says why the fit stopped, and counts non-finite steps
    and failed checkpoints.
    """
    if not isinstance(flow, nf_ppl.Flow):
        raise TypeError(f"fit expects an nf_ppl.Flow as flow; got {type(flow).__name__}")
    check_finite_params(flow, "flow passed to fit")
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE}; got {on_nonfinite!r}")
    for name, v in (("max_steps", max_steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}")
    if flow.context is not None:
        flow = flow.replace(context=None)
    data = _check_data(flow, data)
    context = _check_context(flow, context, data.shape[0])
    leaves, treedef = jax.tree_util.tree_flatten(flow)
    dtype = _float_dtype(leaves)

    # split train / validation
    rng = np.random.default_rng(seed)
    n = data.shape[0]
    if val_data is not None:
        val_y = _check_data(flow, val_data, "val_data")
        val_c = _check_context(flow, val_context, val_y.shape[0], "val_context")
        train_y, train_c = data, context
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
        n_val = int(round(n * val_fraction))
        if val_fraction > 0 and n_val == 0 and n >= 2:
            n_val = 1
        perm = rng.permutation(n)
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        train_y, val_y = data[train_idx], (data[val_idx] if n_val else None)
        train_c = None if context is None else context[train_idx]
        val_c = None if (context is None or not n_val) else context[val_idx]
    n_train = train_y.shape[0]
    if batch_size >= n_train:  # full-batch training: every step sees every training row once
        if batch_size > n_train:
            held = f" ({n} rows minus {n - n_train} held out for validation)" if n_train != n else ""
            warnings.warn(f"fit: batch_size={batch_size} is larger than the {n_train} training rows{held}; "
                          "training full-batch (every step uses all of them)", UserWarning, stacklevel=2)
        batch_size = n_train
    has_val = val_y is not None and len(val_y) > 0

    opt = optimizer if optimizer is not None else make_optimizer(
        learning_rate, schedule=schedule, clip_norm=clip_norm, max_steps=max_steps, weight_decay=weight_decay)

    # devices
    devices = jax.local_devices()
    use_shard = False
    if shard not in ("auto", True, False):
        raise ValueError(f"shard must be 'auto', True or False; got {shard!r}")
    if len(devices) > 1 and shard is not False:
        if batch_size % len(devices) == 0:
            use_shard = True
        elif shard is True:
            raise ValueError(f"batch_size={batch_size} must be divisible by the {len(devices)} local devices to shard")
    batch_sharding = None
    to_device = jnp.asarray
    if use_shard:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        mesh = Mesh(np.asarray(devices), ("batch",))
        batch_sharding = NamedSharding(mesh, P("batch"))
        replicated = NamedSharding(mesh, P())
        to_device = lambda a: jax.device_put(jnp.asarray(a), replicated)  # noqa: E731

    train_y_d = to_device(train_y.astype(dtype))
    train_c_d = None if train_c is None else to_device(train_c.astype(dtype))
    leaves = [to_device(l) for l in leaves]
    opt_state = opt.init(leaves)
    if use_shard:
        opt_state = jax.tree_util.tree_map(to_device, opt_state)
    base_key = jax.random.PRNGKey(seed)
    opt_key = ("opt", id(optimizer), optimizer) if optimizer is not None else (
        learning_rate, schedule if not callable(schedule) else ("fn", id(schedule), schedule), clip_norm, weight_decay,
        max_steps if schedule is not None else None)
    chunk = _cached(("chunk", treedef, opt_key, batch_size, on_nonfinite, use_shard),
                    lambda: _make_chunk(treedef, opt, batch_size, on_nonfinite == "stop", batch_sharding))
    evaluate = None
    if has_val:
        val_y_d = to_device(val_y.astype(dtype))
        val_c_d = None if val_c is None else to_device(val_c.astype(dtype))
        evaluate = _cached(("eval", treedef, val_y.shape[0]), lambda: _make_eval(treedef, val_y.shape[0]))

    history = FitHistory(num_devices=len(devices) if use_shard else 1, event_size=int(np.prod(flow.flow_event_shape)))
    best_leaves, bad_evals, step, stopping_best = leaves, 0, 0, math.inf
    fingerprint = _fingerprint(train_y, train_c, val_y, val_c)
    settings = {"seed": int(seed), "batch_size": int(batch_size), "eval_every": int(eval_every),
                "on_nonfinite": on_nonfinite, "treedef": str(treedef), "data": fingerprint}

    if checkpoint_every is not None and checkpoint_path is None:
        raise ValueError("checkpoint_every needs checkpoint_path")
    if checkpoint_path is not None:
        check_folder(checkpoint_path, what="checkpoint_path")
    if resume and checkpoint_path is not None and os.path.exists(checkpoint_path):
        leaves, opt_state, best_leaves, history, (bad_evals, stopping_best), step = _read_checkpoint(
            checkpoint_path, settings, leaves, opt_state)
        if use_shard:
            leaves, opt_state, best_leaves = jax.tree_util.tree_map(to_device, (leaves, opt_state, best_leaves))
        history.resumed_from = step
        history.event_size = int(np.prod(flow.flow_event_shape))
    elif has_val:  # the start is the first "best": fit never returns parameters worse than it started with
        history.initial_val_loss = float(evaluate(leaves, val_y_d, val_c_d))
        if np.isfinite(history.initial_val_loss):
            history.best_val_loss = history.initial_val_loss

    from tqdm import tqdm
    bar = tqdm(total=max_steps, initial=min(step, max_steps), disable=not progress, desc="fit", leave=False,
               dynamic_ncols=True)
    t0 = time.perf_counter() - (history.wall_time[-1] if history.wall_time else 0.0)
    next_ckpt = None if not checkpoint_every else (step // checkpoint_every + 1) * checkpoint_every

    attempted = []  # steps at which a checkpoint was written (or its write failed)

    def save_ckpt():
        if attempted and attempted[-1] == step:
            return
        attempted.append(step)
        try:
            _write_checkpoint(checkpoint_path, settings, leaves, opt_state, best_leaves, history,
                              (bad_evals, stopping_best), step, spec_of(flow))
        except OSError as err:  # keep training: the state is in memory, the best parameters are returned
            history.checkpoint_failures.append(f"step {step}: {err}")
            warnings.warn(f"fit: could not write the checkpoint {os.fspath(checkpoint_path)!r} at step {step} "
                          f"({err}); training goes on and the best parameters will be returned",
                          RuntimeWarning, stacklevel=3)

    good_steps = 0

    try:
        while step < max_steps:
            length = min(eval_every, max_steps - step)
            new_leaves, new_opt, mean_loss, bad, halted = chunk(length, leaves, opt_state, train_y_d, train_c_d,
                                                                 base_key, jnp.asarray(step, jnp.int32))
            bad = np.asarray(bad)
            leaves, opt_state = new_leaves, new_opt
            bad_steps = (step + np.flatnonzero(bad)).tolist()
            good_steps += (bad_steps[0] - step) if (bad_steps and on_nonfinite == "stop") else length - len(bad_steps)
            if good_steps == 0:
                raise ValueError(
                    f"fit: the loss or its gradient was NaN or inf at every one of the first {length} steps, so nothing "
                    "was trained. Check the data scale (standardise the columns), the learning rate (try 10x smaller) "
                    "and the initial parameters (nf_ppl builders start near the base distribution)")
            step += length
            stop = None
            if bad_steps:
                history.nonfinite_steps.extend(bad_steps)
                if on_nonfinite == "stop":
                    warnings.warn(f"fit: loss or gradient not finite at step {bad_steps[0]}; stopping "
                                  f"(parameters from before that step are kept)", RuntimeWarning, stacklevel=2)
                    step = bad_steps[0]
                    stop = "nonfinite"
                else:
                    warnings.warn(f"fit: loss or gradient not finite at step(s) {bad_steps[:10]}"
                                  f"{' ...' if len(bad_steps) > 10 else ''}; those updates were skipped",
                                  RuntimeWarning, stacklevel=2)
            train_loss = float(mean_loss)
            val_loss = float(evaluate(leaves, val_y_d, val_c_d)) if has_val else math.nan
            history.steps.append(step)
            history.train_loss.append(train_loss)
            history.val_loss.append(val_loss)
            history.wall_time.append(time.perf_counter() - t0)
            if has_val:  # the best parameters (returned) and the early-stopping count (with min_delta)
                if np.isfinite(val_loss) and val_loss < history.best_val_loss:
                    history.best_val_loss, history.best_step, best_leaves = val_loss, step, leaves
                if np.isfinite(val_loss) and val_loss < stopping_best - min_delta:
                    stopping_best, bad_evals = val_loss, 0
                else:
                    bad_evals += 1
            else:
                best_leaves, history.best_step = leaves, step
            bar.update(length)
            bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}" if has_val else "-")
            if stop is None and has_val and patience is not None and bad_evals >= patience:
                stop = "early_stopping"
            if callback is not None:
                current = jax.tree_util.tree_unflatten(treedef, leaves)
                info = {"train_loss": train_loss, "val_loss": val_loss, "best_val_loss": history.best_val_loss}
                if callback(step, current, info) is True and stop is None:
                    stop = "callback"
            if next_ckpt is not None and (step >= next_ckpt or stop is not None):
                save_ckpt()
                next_ckpt = (step // checkpoint_every + 1) * checkpoint_every
            if stop is not None:
                history.stop_reason = stop
                break
        else:
            history.stop_reason = "max_steps"
            if checkpoint_path is not None and checkpoint_every:
                save_ckpt()
    except KeyboardInterrupt:
        history.stop_reason = "interrupted"
        warnings.warn(f"fit interrupted at step {step}; returning the best parameters so far "
                      f"(step {history.best_step})", RuntimeWarning, stacklevel=2)
        if checkpoint_path is not None and checkpoint_every:
            save_ckpt()
    finally:
        bar.close()
    if has_val and history.best_step == 0 and step > 0:
        warnings.warn(f"fit: no evaluation improved on the starting parameters (held-out NLL "
                      f"{history.initial_val_loss:.4f}); returning them unchanged", RuntimeWarning, stacklevel=2)
    return jax.tree_util.tree_unflatten(treedef, [jax.device_get(l) for l in best_leaves]), history


# -- checkpoints ---------------------------------------------------------------------------------------

def _write_checkpoint(path, settings, leaves, opt_state, best_leaves, history, stopping, step, spec):
    """``stopping`` is the early-stopping state ``(bad_evals, best loss it counts from)``."""
    bad_evals, stopping_best = stopping
    opt_leaves = jax.tree_util.tree_leaves(opt_state)
    arrays = {}
    arrays.update(leaves_to_arrays(jax.device_get(leaves), "leaf"))
    arrays.update(leaves_to_arrays(jax.device_get(best_leaves), "best"))
    arrays.update(leaves_to_arrays(jax.device_get(opt_leaves), "opt"))
    hist = history.to_dict()
    hist["best_val_loss"] = None if not np.isfinite(hist["best_val_loss"]) else hist["best_val_loss"]
    hist["initial_val_loss"] = None if not np.isfinite(hist["initial_val_loss"]) else hist["initial_val_loss"]
    hist["val_loss"] = [None if not np.isfinite(v) else v for v in hist["val_loss"]]
    header = {"kind": "checkpoint", "settings": settings, "step": int(step), "bad_evals": int(bad_evals),
              "stopping_best": float(stopping_best) if np.isfinite(stopping_best) else None,
              "history": hist, "spec": spec}
    write_container(path, arrays, header)


def _read_checkpoint(path, settings, leaves, opt_state):
    header, arrays = read_container(path, kind="checkpoint")
    stored = header.get("settings", {})
    diff = [k for k in settings if stored.get(k) != settings[k]]
    if diff:
        raise FlowFileError(f"checkpoint {os.fspath(path)!r} was written by a different fit "
                            f"(differs in {', '.join(diff)}); delete it or use resume=False")
    opt_leaves, opt_def = jax.tree_util.tree_flatten(opt_state)
    leaves_new = arrays_to_leaves(arrays, leaves, "leaf", os.fspath(path))
    best_new = arrays_to_leaves(arrays, leaves, "best", os.fspath(path))
    opt_new = arrays_to_leaves(arrays, opt_leaves, "opt", os.fspath(path), what="optimiser state")
    hist = dict(header["history"])
    hist["best_val_loss"] = math.inf if hist.get("best_val_loss") is None else hist["best_val_loss"]
    hist["initial_val_loss"] = math.nan if hist.get("initial_val_loss") is None else hist["initial_val_loss"]
    hist["val_loss"] = [math.nan if v is None else v for v in hist.get("val_loss", [])]
    history = FitHistory.from_dict(hist)
    stopping_best = header.get("stopping_best", history.best_val_loss)
    stopping = (int(header["bad_evals"]), math.inf if stopping_best is None else float(stopping_best))
    return (leaves_new, jax.tree_util.tree_unflatten(opt_def, opt_new), best_new, history, stopping,
            int(header["step"]))
