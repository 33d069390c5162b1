"""Sequence data for :class:`~nf_ppl.models.sequence.SequenceModel`: the EOS-terminated support,
padding and lengths, and the validation of a batch of padded sequences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions.constraints import Constraint

from .._checks import is_concrete

__all__ = ["check_sequence_value", "eos_terminated", "pad_sequences", "sequence_lengths"]


# ----------------------------------------------------------------------
# Support constraint
# ----------------------------------------------------------------------
class _EOSTerminated(Constraint):
    """Int sequences over ``[0, V)`` whose last axis contains ``eos_id``."""

    is_discrete = True
    event_dim = 1

    def __init__(self, vocab_size: int, eos_id: int):
        self.vocab_size = vocab_size
        self.eos_id = eos_id

    def __call__(self, x):
        xp = jnp if isinstance(x, jax.Array) else np
        is_eos = x == self.eos_id
        before = xp.cumsum(is_eos, axis=-1) - is_eos == 0  # up to and incl. first EOS
        ok = (x >= 0) & (x < self.vocab_size) & (xp.mod(x, 1) == 0)
        return xp.all(ok | ~before, axis=-1) & xp.any(is_eos, axis=-1)

    def feasible_like(self, prototype):
        return jnp.full(jnp.shape(prototype), self.eos_id, dtype=jnp.int32)

    def tree_flatten(self):
        return (), ((), {"vocab_size": self.vocab_size, "eos_id": self.eos_id})

    def __repr__(self):
        return f"EOSTerminated(vocab_size={self.vocab_size}, eos_id={self.eos_id})"

    def eq(self, other, static=False):
        return (isinstance(other, _EOSTerminated) and other.vocab_size == self.vocab_size
                and other.eos_id == self.eos_id)


def eos_terminated(vocab_size: int, eos_id: int = 0) -> Constraint:
    """Support of :class:`SequenceModel`: sequences over ``[0, vocab_size)`` containing ``eos_id``."""
    return _EOSTerminated(int(vocab_size), int(eos_id))


# ----------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------
def sequence_lengths(value, eos_id: int = 0):
    """Length ``J`` of each padded sequence: 1 + index of the first EOS (EOS included);
    ``L + 1`` marks a row without EOS (not a valid event)."""
    value = jnp.asarray(value)
    is_eos = value == eos_id
    first = jnp.argmax(is_eos, axis=-1)
    return jnp.where(jnp.any(is_eos, axis=-1), first + 1, value.shape[-1] + 1)


def pad_sequences(seqs, max_len: int, eos_id: int = 0, append_eos: bool = True):
    """Python lists of token ids -> padded int32 array ``(len(seqs), max_len)``.

    With ``append_eos`` the EOS symbol is appended to each sequence; the rest is
    padded with ``eos_id``. Raises ValueError if a sequence (with its EOS) is longer
    than ``max_len``, or if a sequence contains EOS before its end.
    """
    out = np.full((len(seqs), max_len), eos_id, dtype=np.int32)
    for i, s in enumerate(seqs):
        s = list(int(t) for t in s)
        if append_eos:
            if eos_id in s:
                raise ValueError(f"seqs[{i}] already contains eos_id={eos_id} before its end")
            s = s + [eos_id]
        if len(s) > max_len:
            raise ValueError(
                f"seqs[{i}] has length {len(s)} (EOS included), longer than max_len={max_len}"
            )
        out[i, : len(s)] = s
    return jnp.asarray(out)


def check_sequence_value(value, lengths, *, max_len: int, vocab_size: int, eos_id: int):
    """Validate (concrete) / cast value; return int array ``(..., L)`` padded with EOS.

    Concrete values are checked in full (integer tokens in ``[0, V)`` up to a first EOS within
    ``max_len``, ``lengths`` equal to 1 + the index of the first EOS); traced ones by shape only.
    """
    L, V, eos = max_len, vocab_size, eos_id
    if is_concrete(value):
        arr = np.asarray(value)
        if arr.ndim < 1:
            raise ValueError(f"value must have shape (..., max_len={L}), got a scalar")
        if arr.shape[-1] > L:
            raise ValueError(
                f"value has sequences of length {arr.shape[-1]}, longer than the declared "
                f"maximum max_len={L}"
            )
        if not np.issubdtype(arr.dtype, np.integer):
            if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
                arr = arr.astype(np.int64)
            else:
                raise TypeError(f"value must hold integer tokens, got dtype {arr.dtype}")
        is_eos = arr == eos
        has_eos = is_eos.any(axis=-1)
        if arr.size and not has_eos.all():
            bad = np.argwhere(~has_eos)[:5].tolist()
            raise ValueError(
                f"value: sequence(s) at batch index {bad} have no end-of-sequence symbol "
                f"eos_id={eos} within max_len={L}; every sequence must end with EOS"
            )
        counted = (np.cumsum(is_eos, axis=-1) - is_eos) == 0
        if arr.size:
            vals = arr[counted]
            if vals.size and (vals.min() < 0 or vals.max() >= V):
                raise ValueError(
                    f"value tokens must lie in [0, V={V}) up to the first EOS, got values in "
                    f"[{vals.min()}, {vals.max()}]"
                )
        if lengths is not None and is_concrete(lengths):
            ln = np.asarray(lengths)
            if not np.issubdtype(ln.dtype, np.integer):
                raise TypeError(f"lengths must be integers, got dtype {ln.dtype}")
            if ln.shape != arr.shape[:-1]:
                raise ValueError(
                    f"lengths must have shape {arr.shape[:-1]} (the batch shape of value), "
                    f"got {ln.shape}"
                )
            first = np.argmax(is_eos, axis=-1) + 1
            if np.any(ln != first):
                idx = np.argwhere(ln != first)[:5].tolist()
                raise ValueError(
                    f"lengths do not match the padded batch: lengths (EOS included) must equal "
                    f"1 + the index of the first EOS; mismatch at batch index {idx}"
                )
        value = jnp.asarray(np.where(counted, arr, eos).astype(np.int32))
    else:
        if value.ndim < 1 or value.shape[-1] > L:
            raise ValueError(f"value must have shape (..., <= max_len={L}), got {value.shape}")
        if lengths is not None and jnp.shape(lengths) != value.shape[:-1]:
            raise ValueError(
                f"lengths must have shape {value.shape[:-1]} (the batch shape of value), "
                f"got {jnp.shape(lengths)}"
            )
        value = value.astype(jnp.int32)
        is_eos = value == eos
        counted = (jnp.cumsum(is_eos, axis=-1) - is_eos) == 0
        value = jnp.where(counted, value, eos)
    if value.shape[-1] < L:
        pad = jnp.full(value.shape[:-1] + (L - value.shape[-1],), eos, value.dtype)
        value = jnp.concatenate([value, pad], axis=-1)
    return value
