"""Maximum-likelihood fitting of flows: ``fit(flow, data, ...) -> (trained_flow, history)``.

The objective is the mean negative log-likelihood ``-mean_i log p(y_i)`` (or ``log p(y_i | x_i)``
for a conditional flow) over minibatches.  Training is counted in epochs (one pass over the
training rows, ``ceil(n_train / batch_size)`` steps): by default each epoch visits the rows in a
fresh random order (``sampling="shuffle"``; ``"replacement"`` draws every minibatch
independently).  All training steps between two host round-trips run inside one jitted
``lax.scan``; the order of epoch ``e`` is drawn from ``fold_in(key, e)``, so a run is fully
determined by ``seed`` and a run resumed from a checkpoint reproduces the uninterrupted one bit
for bit.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import time
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import nf_ppl
from nf_ppl._checks import check_finite, check_finite_params

from ._fit_kernels import cached, chunk_orders, make_chunk, make_eval
from ._optim import make_optimizer  # noqa: F401  (inference.make_optimizer)
from ._checkpoint import read_checkpoint, write_checkpoint
from ._io import check_folder, remember_standardized, spec_of
from ._standardize import check_standardize, float_dtype, standardized, update_scales
from .fit_history import FitHistory

__all__ = ["FitHistory", "fit", "make_optimizer", "DEFAULT_MAX_EPOCHS", "DEFAULT_MIN_DELTA", "DEFAULT_MIN_STEPS", "DEFAULT_PATIENCE",
           "DEFAULT_EMA", "DEFAULT_TIME_BUDGET", "MIN_PATIENCE_STEPS"]

ON_NONFINITE = ("skip", "stop")
SAMPLING = ("shuffle", "replacement")
DEFAULT_MAX_EPOCHS = 500  # the epoch budget when neither max_epochs nor max_steps is given ...
DEFAULT_MIN_STEPS = 10_000  # ... but never fewer steps than this (small data sets have few steps an epoch)
DEFAULT_PATIENCE = 30  # patience="auto": epochs without improvement of the held-out loss before stopping ...
MIN_PATIENCE_STEPS = 100  # ... and at least this many steps (a data set of one or two batches: 100 and 50 epochs)
DEFAULT_MIN_DELTA = 0.01  # nats per example: a smaller gain on the last gain that counted does not restart the patience
DEFAULT_TIME_BUDGET = 600.0  # seconds of wall time per call
DEFAULT_EMA = 0.9  # decay per step of the moving average of the parameters that is evaluated and returned


def _check_data(flow, data, name="data"):
    try:
        data = np.asarray(data)
    except (ValueError, TypeError) as err:  # ragged rows
        raise ValueError(f"{name} must be an array of shape (n, {', '.join(map(str, flow.flow_event_shape))}) "
                         f"with rows of equal length; NumPy could not make one ({err})") from None
    event = tuple(flow.flow_event_shape)
    if data.ndim != 1 + len(event) or tuple(data.shape[1:]) != event:
        if data.ndim >= 1 and data.shape[-1] != event[-1]:
            raise ValueError(f"{name} has last dimension {data.shape[-1]} but the flow's event size is {event[-1]}: "
                             f"{name} must have shape (n, {', '.join(map(str, event))}); got shape {data.shape}")
        raise ValueError(f"{name} must have shape (n, {', '.join(map(str, event))}) (one row per observation); "
                         f"got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real numbers; got dtype {data.dtype}")
    if data.shape[0] < 1:
        raise ValueError(f"{name} is empty (shape {data.shape})")
    check_finite(data.astype(float) if not np.issubdtype(data.dtype, np.floating) else data, name)
    return data


MIN_VAL_ROWS = 10  # fewer held-out rows than this: fit warns that stopping and the best parameters are noisy


def _check_row_counts(flow, train_y, val_y, given: bool):
    """Refuse a fit with fewer than 2 training rows; warn when the rows cannot tell a density apart
    from its training rows (no more rows than dimensions) or the held-out rows are too few to judge
    it (with 20-50 rows a MAF's held-out score on 2-5 rows said "fine" while fresh rows scored -400)."""
    n_train, size = train_y.shape[0], int(np.prod(flow.flow_event_shape))
    if n_train < 2:
        raise ValueError(f"fit needs at least 2 training rows; got {n_train} (after holding out "
                         f"{0 if val_y is None else len(val_y)} for validation)")
    if n_train <= size:
        warnings.warn(f"fit: {n_train} training rows for a {size}-dimensional density: a flow can put "
                      "its mass on the rows themselves; a Gaussian is the safer model here",
                      UserWarning, stacklevel=3)
    n_val = 0 if val_y is None else len(val_y)
    if 0 < n_val < MIN_VAL_ROWS:
        where = f"val_data has {n_val} rows" if given else f"only {n_val} of the {n_val + n_train} rows are held out"
        warnings.warn(f"fit: {where}: too few to judge the fit, so early "
                      "stopping and the parameters returned follow noise; hold out more rows (val_fraction=, "
                      "val_data=) or check the flow against a Gaussian on fresh rows", UserWarning, stacklevel=3)


MAX_DEPENDENCE_CHECK = 512  # columns up to which fit looks for linearly dependent columns (an eigen-solve)
DEPENDENT_EIGENVALUE = 1e-8  # a correlation matrix's smallest eigenvalue below this: a column is a linear mix of others


def _without_outlying_rows(rows, limit=20.0):
    """``rows`` without those beyond ``limit`` robust sds (interquartile range / 1.349, or the sd where that
    is 0) from a column's median: correlations of the others.  A plane the rows lie on holds for them too."""
    q1, med, q3 = np.percentile(rows, [25, 50, 75], axis=0)
    scale = (q3 - q1) / 1.349
    scale = np.where(scale > 0, scale, rows.std(axis=0))
    keep = np.all(np.abs(rows - med) <= limit * np.maximum(scale, np.finfo(float).tiny), axis=1)
    return rows[keep]


def _varies(mean, sd):
    """Per column: not constant (its sd above 1e-12 of its mean's size; exactly 0 counts as constant)."""
    return sd > 1e-12 * np.abs(mean)


def _check_degenerate_columns(train_y):
    """Warn when the training rows lie on a lower-dimensional set: a constant column, or columns that are
    linear combinations of each other (a duplicated or rescaled column).  Such rows have no density: a
    flow squeezes the thin direction, and the held-out log-likelihood climbs with it (the rows held out lie
    on the same set) until training turns unstable.  A MAF on 2000 rows of two normals and a constant
    column reached -3.94 nats held out, against 4.14 with a third normal column: a number about the squeeze."""
    rows = np.asarray(train_y, dtype=np.float64).reshape(train_y.shape[0], -1)
    mean, sd = rows.mean(axis=0), rows.std(axis=0)
    constant = np.flatnonzero(~_varies(mean, sd))
    fix = "drop it, or add noise of the data's resolution (nf_ppl.uniform_dequantize for integers)"
    if constant.size:
        shown = ", ".join(f"{i} (= {mean[i]:.6g})" for i in constant[:5]) + (" ..." if constant.size > 5 else "")
        warnings.warn(f"fit: {constant.size} column(s) of the training rows are constant: {shown}; such data "
                      f"have no density (a flow squeezes them into a spike, and its log-likelihood measures the "
                      f"squeeze, not the fit): {fix}", UserWarning, stacklevel=3)
    varied = np.flatnonzero(_varies(mean, sd))
    if not 2 <= varied.size <= MAX_DEPENDENCE_CHECK:
        return
    rows = _without_outlying_rows(rows[:, varied])  # one row of 1e20 makes every column "equal" to the others
    mean, sd = rows.mean(axis=0), rows.std(axis=0)
    still = _varies(mean, sd)  # a column varied only by the rows left out is not a plane's
    varied, rows, mean, sd = varied[still], rows[:, still], mean[still], sd[still]
    if varied.size < 2 or rows.shape[0] <= varied.size:
        return
    z = (rows - mean) / sd
    corr = z.T @ z / rows.shape[0]
    values, vectors = np.linalg.eigh(corr)
    if values[0] >= DEPENDENT_EIGENVALUE:
        return
    involved = varied[np.argsort(-np.abs(vectors[:, 0]))[:int(np.sum(np.abs(vectors[:, 0]) > 0.1))]]
    pairs = np.argwhere(np.triu(np.abs(corr) > 1 - DEPENDENT_EIGENVALUE, k=1))
    what = (f"columns {varied[pairs[0][0]]} and {varied[pairs[0][1]]} are equal up to scale and shift"
            if len(pairs) else f"a linear combination of columns {sorted(involved.tolist())[:8]} is constant")
    warnings.warn(f"fit: the training rows lie on a lower-dimensional plane (to 1e-4 of their spread): {what}; "
                  f"such data have no density (a flow squeezes the plane's normal into a spike, and its "
                  f"log-likelihood measures the squeeze, not the fit): drop the dependent column(s), or add noise "
                  f"of the data's resolution",
                  UserWarning, stacklevel=3)


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


# -- the plan: budget, evaluation points, early stopping ------------------------------------------

def _positive_int(name, v, allow_none=False):
    if v is None and allow_none:
        return
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}; got {v!r}")


class _Plan:
    """How long to train and when to evaluate, in steps, from the epoch-based settings."""

    def __init__(self, n_train, batch_size, max_epochs, max_steps, eval_every, patience, time_budget, lr_cut=None):
        self.steps_per_epoch = -(-n_train // batch_size)
        if max_epochs is None and max_steps is None:
            max_epochs = max(DEFAULT_MAX_EPOCHS, -(-DEFAULT_MIN_STEPS // self.steps_per_epoch))
        by_epochs = math.inf if max_epochs is None else max_epochs * self.steps_per_epoch
        by_steps = math.inf if max_steps is None else max_steps
        self.total_steps = int(min(by_epochs, by_steps))
        self.budget_reason = "max_epochs" if by_epochs <= by_steps else "max_steps"
        if eval_every is None:  # every epoch
            eval_every = self.steps_per_epoch
        self.eval_every = int(eval_every)
        if patience == "auto":
            self.patience_steps = max(DEFAULT_PATIENCE * self.steps_per_epoch, MIN_PATIENCE_STEPS)
        else:
            self.patience_steps = None if patience is None else patience * self.steps_per_epoch
        self.time_budget = time_budget
        self.lr_cut = lr_cut  # plateau_steps: steps without improvement before each cut (None: no cuts)
        self.plateau_steps = None if self.patience_steps is None or lr_cut is None else max(self.patience_steps // 2, 1)


def _split(flow, data, context, val_data, val_context, val_fraction, rng):
    """``(train_y, train_c, val_y, val_c)``: ``val_data`` if given, else a random ``val_fraction`` of ``data``."""
    if val_data is not None:
        val_y = _check_data(flow, val_data, "val_data")
        return data, context, val_y, _check_context(flow, val_context, val_y.shape[0], "val_context")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    n = data.shape[0]
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0 and n >= 2:
        n_val = 1
    perm = rng.permutation(n)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    pick = lambda a, idx: None if (a is None or not len(idx)) else a[idx]  # noqa: E731
    return data[train_idx], pick(context, train_idx), pick(data, val_idx), pick(context, val_idx)


class _Devices:
    """Where arrays live: one device, or minibatches sharded over all local devices."""

    def __init__(self, shard, batch_size):
        if shard not in ("auto", True, False):
            raise ValueError(f"shard must be 'auto', True or False; got {shard!r}")
        devices = jax.local_devices()
        self.sharded = False
        if len(devices) > 1 and shard is not False:
            if batch_size % len(devices) == 0:
                self.sharded = True
            elif shard is True:
                raise ValueError(f"batch_size={batch_size} must be divisible by the {len(devices)} local devices to shard")
        self.count = len(devices) if self.sharded else 1
        self.batch_sharding, self.put = None, jnp.asarray
        if self.sharded:
            from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
            mesh = Mesh(np.asarray(devices), ("batch",))
            self.batch_sharding = NamedSharding(mesh, P("batch"))
            replicated = NamedSharding(mesh, P())
            self.put = lambda a: jax.device_put(jnp.asarray(a), replicated)  # noqa: E731

    def tree(self, tree):
        return jax.tree_util.tree_map(self.put, tree) if self.sharded else tree


# -- the driver ------------------------------------------------------------------------------------

def fit(flow, data, *, context=None, max_epochs: int | None = None, max_steps: int | None = None,
        time_budget: float | None = DEFAULT_TIME_BUDGET, batch_size: int = 256, learning_rate: float = 1e-3,
        optimizer=None, schedule=None, clip_norm: float | None = None, weight_decay: float = 0.0,
        val_fraction: float = 0.1, val_data=None, val_context=None, standardize="auto",
        patience: int | str | None = "auto",
        min_delta: float = DEFAULT_MIN_DELTA, lr_cut: float | None = None, ema: float | None = DEFAULT_EMA,
        eval_every: int | None = None, sampling: str = "shuffle", seed: int = 0,
        on_nonfinite: str = "skip", progress: bool = True, callback: Callable | None = None,
        checkpoint_path=None, checkpoint_every: int | None = None, resume: bool = False, shard: bool | str = "auto"):
    """Fit ``flow`` to ``data`` by maximum likelihood; returns ``(trained_flow, history)``.

    Training runs until the held-out loss has converged: it stops after ``patience`` epochs without
    an improvement, or when a budget is used up (``max_epochs``, ``max_steps``, ``time_budget``),
    and returns the parameters with the best held-out loss.  ``history.stop_reason`` and
    ``history.summary()`` say which.

    Args:
        flow: an :class:`nf_ppl.Flow`; conditional flows (``context_dim > 0``) need ``context``.
        data: array ``(n,) + event_shape``; rows with NaN/inf are refused (the error lists them).
        context: array ``(n, context_dim)`` for a conditional flow ``p(y | x)``.
        max_epochs, max_steps: the budget in epochs (one epoch is ``ceil(n_train / batch_size)``
            steps, one pass over the training rows) and/or optimiser steps; training stops at
            whichever comes first.  With neither: 500 epochs, or 10,000 steps where that is more
            (a data set of a few thousand rows has only a few steps an epoch).
        time_budget: seconds of wall time for this call (default 600; ``None`` for no limit),
            checked between evaluations; a fit stopped by it warns (it is not reproducible).
        batch_size: minibatch size.  A ``batch_size`` at or above the number of training rows
            means full-batch training (with a warning when it is above).
        sampling: ``"shuffle"`` (default: each epoch visits the training rows once in a fresh
            random order) or ``"replacement"`` (every minibatch drawn independently).
        learning_rate, schedule, clip_norm, weight_decay: Adam settings (see
            :func:`make_optimizer`; a ``"cosine"`` schedule spans the whole budget);
            ``optimizer`` (any optax transformation) overrides them.
        val_fraction / val_data (+ val_context): held-out rows; ``val_fraction`` of ``data`` is
            split off at random unless ``val_data`` is given.
        standardize: ``"auto"`` (default), ``True`` or ``False``.  Builders' flows start near
            ``N(0, I)`` and their layers suit data of about that scale (a spline is the identity
            outside its interval); so ``fit`` can put an elementwise affine layer
            ``x = mean + sd * y`` at the flow's data end, started at the training rows' column
            means and sds (a trainable layer like any other): the flow trains on standardised rows
            and the flow returned is a density in the data's own units, as are the history's
            log-likelihoods.  ``"auto"`` adds it when some column has ``|mean| > 0.5`` or an sd
            outside ``[0.5, 2]``, seen through the flow's own data-end affine layer if it has one
            (so a refit of a flow ``fit`` standardised does not add another); ``True`` always (flows
            over vectors); ``False`` never (e.g. to go on training a flow that was fitted to raw rows
            with ``False``).  Two moons scaled by 5 and shifted by 20: nsf -427 nats per row
            without it, -4.39 with it (its standardised rows' fit); breast_cancer's raw columns
            -7.7e5 and 37.3 (bench/RESULTS.md).  Contexts of conditional flows are used as given.
        patience, min_delta: stop after ``patience`` epochs in which the held-out loss did not
            improve by more than ``min_delta`` on the last improvement that counted (the start
            counts); ``"auto"``
            (default): 30 epochs, or 100 steps where that is more (a data set of one or two
            batches waits 100 or 50 epochs: a few Adam steps are no sign of convergence);
            ``None`` never stops early.  ``min_delta`` (nats per example, default 0.01): a gain
            smaller than it does not restart the patience, so a fit creeping along a plateau
            stops; it only decides when to stop: the parameters returned are the best seen.  On
            two moons 0.01 instead of 0 stopped maf, nsf and realnvp after 35%, 26% and 54% fewer
            epochs for -0.013, +0.002 and -0.020 nats, and changed no held-out result on the data
            sets with d > 2 (bench/RESULTS.md); pass 0 to wait for any gain.
        lr_cut: a factor in (0, 1): after half the patience without an improvement (15 epochs
            with ``"auto"``) the learning rate is multiplied by it, and again after each further
            half-patience plateau, so a fit stops only after a smaller step size found nothing
            better; ``history.lr_cuts`` lists the steps.  Default ``None``: a constant rate (with
            ``lr_cut=0.5`` and 20 epochs' patience, maf on two moons gained 0.03 nats but realnvp
            and iaf lost 0.07 and 0.36: a smaller step ended their escape from a bridge of mass
            between the moons; bench/RESULTS.md).
        ema: the decay per step of an exponential moving average of the parameters (Polyak
            averaging), default 0.9: after each step ``average <- ema * average + (1 - ema) *
            parameters``.  The average is what is evaluated on the held-out rows, kept as the best
            and returned (and what ``callback`` sees); the optimiser steps the parameters as usual
            and ``history.train_loss`` is theirs.  Averaging removes most of the minibatch noise
            from the returned parameters: with the same fits and the same stopping rule, the
            held-out log-likelihood rose on every data set and builder of the stopping study (two
            moons +0.013 to +0.030 nats, 3000-row two moons +0.022 to +0.052, wine +0.02 to +0.57,
            breast_cancer +0.3 to +2.7) for up to 25% more epochs (bench/RESULTS.md).  ``None`` (or
            0) returns the parameters themselves.
        eval_every: steps between evaluations (validation, progress bar, callback, checkpoints),
            each span one jitted ``lax.scan``; default: every epoch (with evaluations every 2,
            5 or 10 epochs the best held-out epoch was found later or missed: bench/RESULTS.md).
        on_nonfinite: ``"skip"`` (default; the step is skipped, parameters and optimiser state
            untouched, and a warning names the step) or ``"stop"`` (the fit stops at that step and
            returns the best parameters so far).
        callback: ``callback(step, flow, info) -> bool | None`` after every evaluation; returning
            True stops the fit.  A ``KeyboardInterrupt`` (Ctrl-C, or raised by the callback) also
            stops it and the best parameters so far are returned.
        checkpoint_path, checkpoint_every, resume: write an atomic checkpoint every
            ``checkpoint_every`` steps (rounded up to an evaluation); ``resume=True`` continues
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
    with a warning; with a standardising layer added, the start is the flow passed in behind it); and
    when no step at all has a finite loss and gradient, ``fit`` stops after
    the first evaluation span with a ``ValueError`` that says what to check instead of returning
    an untrained flow.  ``history`` records held-out log-likelihood in nats and bits/dim.

    Compiled programs are kept between calls: a flow of the same structure (the builders' flows
    with the same options, whatever the seed) fitted with the same optimiser settings to data of
    the same shape trains without compiling again.
    """
    if not isinstance(flow, nf_ppl.Flow):
        raise TypeError(f"fit expects an nf_ppl.Flow as flow; got {type(flow).__name__}")
    check_finite_params(flow, "flow passed to fit")
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE}; got {on_nonfinite!r}")
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {SAMPLING}; got {sampling!r}")
    check_standardize(standardize)
    _positive_int("batch_size", batch_size)
    for name, v in (("max_epochs", max_epochs), ("max_steps", max_steps), ("eval_every", eval_every),
                    ("patience", None if patience == "auto" else patience), ("checkpoint_every", checkpoint_every)):
        _positive_int(name, v, allow_none=True)
    if optimizer is None and (isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real)
                              or not 0 < learning_rate < math.inf):
        raise ValueError(f"learning_rate must be a positive finite number; got {learning_rate!r}")
    if optimizer is None and (isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real)
                              or not 0 <= weight_decay < math.inf):
        raise ValueError(f"weight_decay must be a finite number >= 0; got {weight_decay!r}")
    if lr_cut is not None and not (isinstance(lr_cut, (int, float)) and 0 < lr_cut < 1):
        raise ValueError(f"lr_cut must be a number in (0, 1) or None; got {lr_cut!r}")
    if ema is not None and (isinstance(ema, bool) or not (isinstance(ema, (int, float)) and 0 <= ema < 1)):
        raise ValueError(f"ema must be a number in [0, 1) or None; got {ema!r}")
    if time_budget is not None and not (isinstance(time_budget, (int, float)) and time_budget > 0):
        raise ValueError(f"time_budget must be a positive number of seconds or None; got {time_budget!r}")
    if checkpoint_every is not None and checkpoint_path is None:
        raise ValueError("checkpoint_every needs checkpoint_path")
    if checkpoint_path is not None:
        check_folder(checkpoint_path, what="checkpoint_path")
    if flow.context is not None:
        flow = flow.replace(context=None)
    data = _check_data(flow, data)
    context = _check_context(flow, context, data.shape[0])
    train_y, train_c, val_y, val_c = _split(flow, data, context, val_data, val_context, val_fraction,
                                            np.random.default_rng(seed))
    _check_row_counts(flow, train_y, val_y, val_data is not None)
    _check_degenerate_columns(train_y)
    flow = remember_standardized(flow, standardized(flow, train_y, standardize))
    n_train = train_y.shape[0]
    if batch_size >= n_train:  # full-batch training: every step sees every training row once
        if batch_size > n_train:
            held = f" ({data.shape[0]} rows minus {data.shape[0] - n_train} held out for validation)" \
                if val_data is None and n_train != data.shape[0] else ""
            warnings.warn(f"fit: batch_size={batch_size} is larger than the {n_train} training rows{held}; "
                          "training full-batch (every step uses all of them)", UserWarning, stacklevel=2)
        batch_size = n_train
    plan = _Plan(n_train, batch_size, max_epochs, max_steps, eval_every, patience, time_budget, lr_cut)
    trainer = _Trainer(flow, plan, batch_size, sampling, optimizer, (learning_rate, schedule, clip_norm, weight_decay),
                       on_nonfinite, _Devices(shard, batch_size), seed, (train_y, train_c, val_y, val_c),
                       float(ema) if ema else None)
    trainer.start(checkpoint_path if resume else None, checkpoint_path, checkpoint_every)
    trainer.run(min_delta, callback, progress)
    return trainer.result()


class _Trainer:
    """The state of one :func:`fit` call and the small steps of its loop."""

    def __init__(self, flow, plan, batch_size, sampling, optimizer, adam, on_nonfinite, devices, seed, split, ema):
        self.flow, self.plan, self.on_nonfinite, self.devices, self.ema = flow, plan, on_nonfinite, devices, ema
        self.sampling, self.batch_size = sampling, batch_size
        train_y, train_c, val_y, val_c = split
        leaves, self.treedef = jax.tree_util.tree_flatten(flow)
        self.dtype = dtype = float_dtype(leaves)
        opt = optimizer if optimizer is not None else make_optimizer(
            adam[0], schedule=adam[1], clip_norm=adam[2], max_steps=plan.total_steps, weight_decay=adam[3])
        opt_key = ("opt", id(optimizer), optimizer) if optimizer is not None else (
            adam[0], adam[1] if not callable(adam[1]) else ("fn", id(adam[1]), adam[1]), adam[2], adam[3],
            plan.total_steps if adam[1] is not None else None)
        stop_on_nonfinite = on_nonfinite == "stop"
        self.chunk = cached(("chunk", self.treedef, opt_key, batch_size, plan.steps_per_epoch, sampling,
                              on_nonfinite, devices.sharded, ema),
                             lambda: make_chunk(self.treedef, opt, batch_size, plan.steps_per_epoch, sampling,
                                                 stop_on_nonfinite, devices.batch_sharding, ema))
        put = devices.put
        self.train = (put(train_y.astype(dtype)), None if train_c is None else put(train_c.astype(dtype)))
        self.has_val = val_y is not None and len(val_y) > 0
        if self.has_val:
            self.val = (put(val_y.astype(dtype)), None if val_c is None else put(val_c.astype(dtype)))
            self.evaluate = cached(("eval", self.treedef, val_y.shape[0]), lambda: make_eval(self.treedef, val_y.shape[0]))
        self.leaves = [put(l) for l in leaves]
        scales = update_scales(flow)
        self.update_scale = None if scales is None else [put(s) for s in scales]
        self.opt_state = devices.tree(opt.init(self.leaves))
        if ema is not None:  # the moving average of the parameters rides with the optimiser state (and checkpoints)
            self.opt_state = (self.opt_state, list(self.leaves))
        self.best_leaves = self.leaves
        self.base_key = jax.random.PRNGKey(seed)
        self.step, self.stopping = 0, (0, math.inf)  # (step of the last improvement by min_delta, its loss)
        self.history = FitHistory(num_devices=devices.count, event_size=int(np.prod(flow.flow_event_shape)),
                                  steps_per_epoch=plan.steps_per_epoch)
        self.settings = {"seed": int(seed), "batch_size": int(batch_size), "eval_every": plan.eval_every,
                         "sampling": sampling, "on_nonfinite": on_nonfinite, "ema": ema, "treedef": str(self.treedef),
                         "data": _fingerprint(train_y, train_c, val_y, val_c)}
        self.good_steps, self.attempted = 0, []

    # -- start, checkpoints
    def start(self, resume_path, checkpoint_path, checkpoint_every):
        self.checkpoint_path, self.checkpoint_every = checkpoint_path, checkpoint_every
        if resume_path is not None and os.path.exists(resume_path):
            leaves, opt_state, best, history, self.stopping, self.step = read_checkpoint(
                resume_path, self.settings, self.leaves, self.opt_state)
            self.leaves, self.opt_state, self.best_leaves = self.devices.tree((leaves, opt_state, best))
            history.resumed_from, history.event_size = self.step, self.history.event_size
            history.steps_per_epoch = self.plan.steps_per_epoch
            self.history = history
        elif self.has_val:  # the start is the first "best": fit never returns parameters worse than it started with
            h = self.history
            h.initial_val_loss = float(self.evaluate(self.leaves, *self.val))
            if np.isfinite(h.initial_val_loss):
                h.best_val_loss = h.initial_val_loss
                self.stopping = (0, h.initial_val_loss)
        self.next_ckpt = None if not checkpoint_every else (self.step // checkpoint_every + 1) * checkpoint_every

    def save_checkpoint(self):
        if self.checkpoint_path is None or not self.checkpoint_every or (self.attempted and self.attempted[-1] == self.step):
            return
        self.attempted.append(self.step)
        try:
            write_checkpoint(self.checkpoint_path, self.settings, self.leaves, self.opt_state, self.best_leaves,
                             self.history, self.stopping, self.step, spec_of(self.flow))
        except OSError as err:  # keep training: the state is in memory, the best parameters are returned
            self.history.checkpoint_failures.append(f"step {self.step}: {err}")
            warnings.warn(f"fit: could not write the checkpoint {os.fspath(self.checkpoint_path)!r} at step "
                          f"{self.step} ({err}); training goes on and the best parameters will be returned",
                          RuntimeWarning, stacklevel=4)

    # -- one span of steps, then one evaluation
    def train_span(self):
        """Run up to ``eval_every`` steps; return ``"nonfinite"`` when on_nonfinite='stop' fired, else None."""
        start, length = self.step, min(self.plan.eval_every, self.plan.total_steps - self.step)
        n_train, spe = self.train[0].shape[0], self.plan.steps_per_epoch
        shuffled = self.sampling == "shuffle" and self.batch_size < n_train
        if shuffled:  # a span holds its epochs' row orders: at most about 2**24 indices (an earlier evaluation)
            length = min(length, max(1, 2 ** 24 // n_train - 2) * spe)
        orders = chunk_orders(self.base_key, start, length, spe, n_train, shuffled)
        leaves, opt_state, mean_loss, bad, _ = self.chunk(length, self.leaves, self.opt_state, *self.train,
                                                          self.base_key, jnp.asarray(start, jnp.int32),
                                                          jnp.asarray(self.lr_scale(), self.dtype), orders,
                                                          self.update_scale)
        self.leaves, self.opt_state, self.train_loss = leaves, opt_state, float(mean_loss)
        bad_steps = (start + np.flatnonzero(np.asarray(bad))).tolist()
        stop_now = bool(bad_steps) and self.on_nonfinite == "stop"
        self.good_steps += (bad_steps[0] - start) if stop_now else length - len(bad_steps)
        if self.good_steps == 0:
            raise ValueError(
                f"fit: the loss or its gradient was NaN or inf at every one of the first {length} steps, so nothing "
                "was trained. Check the data scale (standardise the columns), the learning rate (try 10x smaller) "
                "and the initial parameters (nf_ppl builders start near the base distribution)")
        self.step = start + length
        if not bad_steps:
            return None
        self.history.nonfinite_steps.extend(bad_steps)
        if stop_now:
            warnings.warn(f"fit: loss or gradient not finite at step {bad_steps[0]}; stopping "
                          f"(parameters from before that step are kept)", RuntimeWarning, stacklevel=4)
            self.step = bad_steps[0]
            return "nonfinite"
        warnings.warn(f"fit: loss or gradient not finite at step(s) {bad_steps[:10]}"
                      f"{' ...' if len(bad_steps) > 10 else ''}; those updates were skipped",
                      RuntimeWarning, stacklevel=4)
        return None

    def lr_scale(self):
        """The learning rate's factor: ``lr_cut`` to the power of the cuts so far (1 without)."""
        return self.plan.lr_cut ** len(self.history.lr_cuts) if self.history.lr_cuts else 1.0

    def cut_on_plateau(self):
        """Cut the learning rate after ``plateau_steps`` without an improvement since the last cut."""
        h, plateau = self.history, self.plan.plateau_steps
        last = max(self.stopping[0], h.lr_cuts[-1] if h.lr_cuts else 0)
        if self.has_val and plateau is not None and self.step - last >= plateau \
                and not self.converged():  # a fit about to stop needs no cut
            h.lr_cuts.append(self.step)

    def current(self):
        """The parameters evaluated, kept as the best and returned: the moving average with ``ema``."""
        return self.opt_state[1] if self.ema is not None else self.leaves

    def record(self, elapsed, min_delta):
        """Evaluate, keep the best parameters, update the early-stopping state; return the held-out loss."""
        h = self.history
        current = self.current()
        val_loss = float(self.evaluate(current, *self.val)) if self.has_val else math.nan
        h.steps.append(self.step)
        h.epochs.append(self.step / self.plan.steps_per_epoch)
        h.train_loss.append(self.train_loss)
        h.val_loss.append(val_loss)
        h.wall_time.append(elapsed)
        if not self.has_val:
            self.best_leaves, h.best_step = current, self.step
            return val_loss
        if np.isfinite(val_loss) and val_loss < h.best_val_loss:
            h.best_val_loss, h.best_step, self.best_leaves = val_loss, self.step, current
        if np.isfinite(val_loss) and val_loss < self.stopping[1] - min_delta:
            self.stopping = (self.step, val_loss)
        self.cut_on_plateau()
        return val_loss

    def converged(self):
        patience = self.plan.patience_steps
        return self.has_val and patience is not None and self.step - self.stopping[0] >= patience

    # -- the loop
    def run(self, min_delta, callback, progress):
        from tqdm import tqdm
        plan, h = self.plan, self.history
        bar = tqdm(total=plan.total_steps, initial=min(self.step, plan.total_steps), disable=not progress,
                   desc="fit", leave=False, dynamic_ncols=True, unit="step")
        call_start = time.perf_counter()
        offset = h.wall_time[-1] if h.wall_time else 0.0
        try:
            stop = None
            while stop is None and self.step < plan.total_steps:
                before = self.step
                stop = self.train_span()
                elapsed = time.perf_counter() - call_start
                val_loss = self.record(offset + elapsed, min_delta)
                bar.update(self.step - before)
                bar.set_postfix(epoch=f"{self.step / plan.steps_per_epoch:.4g}", train=f"{self.train_loss:.4f}",
                                val=f"{val_loss:.4f}" if self.has_val else "-")
                if stop is None and self.converged():
                    stop = "converged"
                if callback is not None:
                    info = {"train_loss": self.train_loss, "val_loss": val_loss, "best_val_loss": h.best_val_loss,
                            "epoch": self.step / plan.steps_per_epoch}
                    if callback(self.step, jax.tree_util.tree_unflatten(self.treedef, self.current()), info) is True \
                            and stop is None:
                        stop = "callback"
                if stop is None and plan.time_budget is not None and elapsed >= plan.time_budget:
                    stop = "time_budget"
                    warnings.warn(f"fit: stopped by time_budget={plan.time_budget:g} s at step {self.step} (epoch "
                                  f"{self.step / plan.steps_per_epoch:.4g}) before converging; the best parameters "
                                  "so far are returned (pass a larger time_budget, or None, to train longer)",
                                  RuntimeWarning, stacklevel=3)
                if self.next_ckpt is not None and (self.step >= self.next_ckpt or stop is not None):
                    self.save_checkpoint()
                    self.next_ckpt = (self.step // self.checkpoint_every + 1) * self.checkpoint_every
            h.stop_reason = stop or plan.budget_reason
            self.save_checkpoint()
        except KeyboardInterrupt:
            h.stop_reason = "interrupted"
            warnings.warn(f"fit interrupted at step {self.step}; returning the best parameters so far "
                          f"(step {h.best_step})", RuntimeWarning, stacklevel=3)
            self.save_checkpoint()
        finally:
            bar.close()

    def result(self):
        h = self.history
        if self.has_val and h.best_step == 0 and self.step > 0:
            warnings.warn(f"fit: no evaluation improved on the starting parameters (held-out NLL "
                          f"{h.initial_val_loss:.4f}); returning them unchanged", RuntimeWarning, stacklevel=3)
        return jax.tree_util.tree_unflatten(self.treedef, [jax.device_get(l) for l in self.best_leaves]), h
