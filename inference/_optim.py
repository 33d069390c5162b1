"""The optimiser :func:`~inference.fit` uses unless told: Adam (or AdamW) with an optional schedule,
gradient clipping and a warm-up, as one ``optax`` chain."""

from __future__ import annotations

import optax


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
