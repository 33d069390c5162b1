"""Input validation shared by layers, flows and models.

Every check runs on concrete values only (numpy arrays, Python numbers, or JAX arrays
outside a trace): inside ``jit`` values are abstract, so only shapes can be checked there.
"""

from __future__ import annotations

import numpy as np
import jax


def is_concrete(x) -> bool:
    """True when ``x`` holds actual values (not a JAX tracer)."""
    return not isinstance(x, jax.core.Tracer)


def is_int(v) -> bool:
    """True for a Python or NumPy integer that is not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_key(key, name: str = "key") -> None:
    """A JAX PRNG key: a raw ``uint32`` pair (``jax.random.PRNGKey(seed)``) or a typed key
    (``jax.random.key(seed)``); checked by dtype and shape, so traced keys pass."""
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and shape == ():
        return
    if dtype is not None and np.dtype(dtype) == np.uint32 and tuple(shape) == (2,):
        return
    got = type(key).__name__ if dtype is None else f"an array of dtype {dtype} and shape {tuple(shape)}"
    raise TypeError(f"{name} must be one JAX PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)); got {got}")


def check_sample_shape(sample_shape, name: str = "sample_shape") -> tuple[int, ...]:
    """``sample_shape`` as a tuple of non-negative ints; an int ``n`` is ``(n,)``."""
    shape = (sample_shape,) if is_int(sample_shape) else sample_shape
    if not isinstance(shape, (tuple, list)) or not all(is_int(s) and int(s) >= 0 for s in shape):
        raise TypeError(f"{name} must be a tuple of non-negative ints (e.g. (1000,)) or an int; got {sample_shape!r}")
    return tuple(int(s) for s in shape)


def check_event_size(x, size: int, name: str = "x", what: str = "event size") -> None:
    """Raise ValueError unless the last axis of ``x`` has length ``size``."""
    shape = np.shape(x)
    if len(shape) == 0 or shape[-1] != size:
        raise ValueError(
            f"{name} must have shape (..., {size}) ({what} {size}); got shape {tuple(shape)}"
        )


def check_finite(x, name: str = "x") -> None:
    """Raise ValueError naming how many and which rows of ``x`` hold NaN or inf."""
    if not is_concrete(x):
        return
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        return
    bad = ~np.isfinite(arr)
    if not bad.any():
        return
    if arr.ndim >= 2:
        rows = np.flatnonzero(bad.reshape(-1, arr.shape[-1]).any(axis=-1))
        shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
        raise ValueError(
            f"{name} contains NaN or inf in {len(rows)} of {arr.size // arr.shape[-1]} rows "
            f"(flattened row indices: {shown}); remove or impute them first"
        )
    raise ValueError(f"{name} contains NaN or inf at positions {np.flatnonzero(bad)[:10].tolist()}")


def check_positive(x, name: str) -> None:
    """Raise ValueError unless every element of ``x`` is > 0 (concrete values only)."""
    if is_concrete(x):
        arr = np.asarray(x)
        if not np.all(arr > 0):
            raise ValueError(f"{name} must be positive (> 0); got min value {float(arr.min()):g}")


def check_permutation(perm, size: int | None = None, name: str = "permutation") -> tuple[int, ...]:
    """Return ``perm`` as a tuple of ints after checking it is a permutation of 0..n-1."""
    arr = np.asarray(perm)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of indices; got shape {arr.shape}")
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"{name} must have length {size} (the event size); got length {arr.shape[0]}")
    if not np.issubdtype(arr.dtype, np.integer) or sorted(arr.tolist()) != list(range(arr.shape[0])):
        raise ValueError(
            f"{name} must be a permutation of 0..{arr.shape[0] - 1} (each index exactly once); got {arr.tolist()}"
        )
    return tuple(int(i) for i in arr)


def check_mask(mask, size: int | None = None, name: str = "mask") -> tuple[bool, ...]:
    """Return a binary mask as a tuple of bools after checking its length and values."""
    arr = np.asarray(mask)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D binary sequence; got shape {arr.shape}")
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"{name} must have length {size} (the event size); got length {arr.shape[0]}")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only 0/1 or False/True; got {arr.tolist()}")
    return tuple(bool(v) for v in arr)


def check_context(context, context_dim: int, owner: str) -> None:
    """Check that a conditional object got a context of shape (..., context_dim)."""
    if context_dim and context is None:
        raise ValueError(
            f"{owner} is conditional (context_dim={context_dim}) and needs a context: "
            f"call .condition(context) or pass context= with shape (..., {context_dim})"
        )
    if not context_dim and context is not None:
        raise ValueError(f"{owner} is not conditional (context_dim=0) but a context was given")
    if context is not None:
        check_event_size(context, context_dim, name="context", what="context_dim")


def named_leaves(tree, prefix: str = "") -> list[tuple[str, object]]:
    """``(name, leaf)`` for every array leaf, named by the attributes that lead to it.

    Layers name their children by ``param_names`` (plus ``context``) after their class name, a
    ``Flow`` by its fields, the conditioner networks by theirs; lists and tuples add ``[i]``.
    For example ``transform<Chain>.layers[2]<AffineCoupling>.net.weights[0]``.  A ``Stack`` stores its layers' parameters stacked
    on a leading axis, so there the first index of an entry is the layer.
    """
    if tree is None:
        return []
    if isinstance(tree, (list, tuple)):
        return [item for i, child in enumerate(tree) for item in named_leaves(child, f"{prefix}[{i}]")]
    if isinstance(tree, dict):
        return [item for k, child in tree.items() for item in named_leaves(child, f"{prefix}[{k!r}]")]
    names = _child_names(tree)
    if names is None:
        return [(prefix or "<root>", tree)]
    children = tree.tree_flatten()[0]
    if hasattr(tree, "param_names"):  # a layer: say which kind
        prefix = f"{prefix}<{type(tree).__name__}>"
    sep = "." if prefix else ""
    return [item for name, child in zip(names, children) for item in named_leaves(child, f"{prefix}{sep}{name}")]


def _child_names(node):
    if not hasattr(node, "tree_flatten"):
        return None
    if hasattr(node, "param_names"):
        return tuple(node.param_names) + ("context",)
    names = getattr(type(node), "child_names", None)
    if names is not None:
        return tuple(names)
    return tuple(f"<{i}>" for i in range(len(node.tree_flatten()[0])))


def check_finite_params(tree, what: str = "flow") -> None:
    """Raise ValueError naming each parameter (layer and parameter name) that holds NaN or inf.

    Runs outside jit on concrete values (a tracer is skipped), one reduction per leaf.
    """
    bad = []
    for name, leaf in named_leaves(tree):
        if not is_concrete(leaf) or not hasattr(leaf, "dtype") or not np.issubdtype(leaf.dtype, np.inexact):
            continue
        finite = np.isfinite(np.asarray(leaf))
        if not finite.all():
            first = tuple(int(i) for i in np.argwhere(~finite)[0])
            bad.append(f"{name} (shape {tuple(np.shape(leaf))}: {int((~finite).sum())} of {finite.size} entries, "
                       f"first at index {first})")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"the {what}'s parameters contain NaN or inf: {shown}. Check the learning rate, the data "
                         "scale and how the parameters were set; a trained flow saved earlier can be loaded instead")
