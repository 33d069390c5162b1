"""Checkpoints of :func:`inference.fit`: parameters, best parameters, optimiser state, history and
the early-stopping state, in the safe container format of :mod:`inference._io`."""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from ._io import FlowFileError, arrays_to_leaves, leaves_to_arrays, read_container, write_container
from .fit_history import FitHistory

__all__ = ["write_checkpoint", "read_checkpoint"]


def _none_if_nonfinite(v):
    return None if v is None or not np.isfinite(v) else float(v)


def write_checkpoint(path, settings, leaves, opt_state, best_leaves, history, stopping, step, spec):
    """``stopping`` is the early-stopping state ``(step of the last improvement, loss it counts from)``."""
    stopping_step, stopping_best = stopping
    arrays = {}
    arrays.update(leaves_to_arrays(jax.device_get(leaves), "leaf"))
    arrays.update(leaves_to_arrays(jax.device_get(best_leaves), "best"))
    arrays.update(leaves_to_arrays(jax.device_get(jax.tree_util.tree_leaves(opt_state)), "opt"))
    hist = history.to_dict()
    for name in ("best_val_loss", "initial_val_loss"):
        hist[name] = _none_if_nonfinite(hist[name])
    hist["val_loss"] = [_none_if_nonfinite(v) for v in hist["val_loss"]]
    header = {"kind": "checkpoint", "settings": settings, "step": int(step), "stopping_step": int(stopping_step),
              "stopping_best": _none_if_nonfinite(stopping_best), "history": hist, "spec": spec}
    write_container(path, arrays, header)


def read_checkpoint(path, settings, leaves, opt_state):
    """Return ``(leaves, opt_state, best_leaves, history, stopping, step)`` from a checkpoint of the same fit."""
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
    stopping_best = header.get("stopping_best")
    stopping = (int(header.get("stopping_step", 0)), math.inf if stopping_best is None else float(stopping_best))
    return (leaves_new, jax.tree_util.tree_unflatten(opt_def, opt_new), best_new, history, stopping,
            int(header["step"]))
