"""Sequence encoders in plain JAX: GRU, LSTM and a causal self-attention stack.

Parameters are nested dicts / lists of float arrays (pytrees), so they can be
stored inside a NumPyro distribution and differentiated with ``jax.grad``.
Static configuration (the recurrent cell kind, the number of heads) is passed
to the apply functions as ordinary Python values, never stored as leaves.

Time is the second-to-last axis everywhere: inputs have shape ``(..., T, D)``.

Recurrent cells
---------------
GRU (Cho et al. 2014), with ``sigma`` the logistic function::

    r_t = sigma(x_t W_xr + b_xr + h_{t-1} W_hr + b_hr)
    z_t = sigma(x_t W_xz + b_xz + h_{t-1} W_hz + b_hz)
    n_t = tanh(x_t W_xn + b_xn + r_t * (h_{t-1} W_hn + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

LSTM (Hochreiter & Schmidhuber 1997)::

    [i, f, g, o] = x_t W_x + h_{t-1} W_h + b
    c_t = sigma(f) * c_{t-1} + sigma(i) * tanh(g)
    h_t = sigma(o) * tanh(c_t)

Layers are stacked: the output ``h_t`` of layer l is the input of layer l+1.
``recurrent_apply`` runs a ``lax.scan`` with the per-layer states as carry, so
the cost is O(T) and the state can be carried step by step in decoding with
``recurrent_step``.

Causal self-attention
---------------------
A pre-layer-norm transformer decoder block without cross attention::

    a = x + MHA(LN(x))            # causal: position t attends to s <= t
    y = a + W_2 relu(W_1 LN(a) + b_1) + b_2

with ``MHA(u) = concat_h(softmax(Q_h K_h^T / sqrt(d_h) + M) V_h) W_o`` and
``M_{ts} = -inf`` for ``s > t``. A final layer norm is applied after the
last block. Output at position t depends only on inputs at positions <= t.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
import jax.numpy as jnp
from jax import lax

__all__ = [
    "RECURRENT_KINDS",
    "standard_normals",
    "init_gru",
    "gru_cell",
    "init_lstm",
    "lstm_cell",
    "init_recurrent",
    "recurrent_initial_state",
    "recurrent_step",
    "recurrent_apply",
    "layer_norm",
    "sinusoidal_positions",
    "init_causal_transformer",
    "causal_self_attention",
    "causal_transformer_apply",
]

RECURRENT_KINDS = ("gru", "lstm")


def _float_dtype(dtype=None):
    if dtype is None:
        return jnp.result_type(float)
    return jnp.dtype(dtype)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


_BLOCK = 4096


def standard_normals(key, shapes, dtype=None):
    """Independent N(0, 1) arrays of the given ``shapes`` from one key.

    The draws are made in fixed-size blocks ``normal(fold_in(key, i), (4096,))`` so
    that the random kernel compiles once per process whatever the model size;
    outside a trace the results are numpy arrays (initialisers then do their
    arithmetic in numpy, which needs no compilation), inside a trace jax arrays.
    """
    dtype = _float_dtype(dtype)
    shapes = [tuple(int(d) for d in s) for s in shapes]
    sizes = [int(np.prod(s)) for s in shapes]
    total = sum(sizes)
    nblocks = max(1, -(-total // _BLOCK))
    blocks = [jax.random.normal(jax.random.fold_in(key, i), (_BLOCK,), dtype) for i in range(nblocks)]
    if all(not isinstance(b, jax.core.Tracer) for b in blocks):
        flat = np.concatenate([np.asarray(b) for b in blocks])
    else:
        flat = jnp.concatenate(blocks)
    out, offset = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(flat[offset : offset + size].reshape(shape))
        offset += size
    return out


def _to_jax(tree):
    return jax.tree.map(jnp.asarray, tree)


def _zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype)


def _ones(shape, dtype):
    return np.ones(shape, dtype=dtype)


# --------------------------------------------------------------------- GRU
def init_gru(key, input_dim: int, hidden_dim: int, dtype=None) -> dict:
    """Parameters of one GRU cell: ``Wx (input_dim, 3H)``, ``Wh (H, 3H)``,
    ``bx (3H,)``, ``bh (3H,)``; gate order ``[r, z, n]``. Weights ~ N(0, 1/fan_in)."""
    _check_positive_int("input_dim", input_dim)
    _check_positive_int("hidden_dim", hidden_dim)
    dtype = _float_dtype(dtype)
    h = hidden_dim
    wx, wh = standard_normals(key, [(input_dim, 3 * h), (h, 3 * h)], dtype)
    return _to_jax({
        "Wx": wx / math.sqrt(input_dim),
        "Wh": wh / math.sqrt(h),
        "bx": _zeros((3 * h,), dtype),
        "bh": _zeros((3 * h,), dtype),
    })


def gru_cell(params: dict, h, x):
    """One GRU step: ``h_t = GRU(h_{t-1}, x_t)``; shapes ``(..., H)``, ``(..., D)``."""
    gx = x @ params["Wx"] + params["bx"]
    gh = h @ params["Wh"] + params["bh"]
    xr, xz, xn = jnp.split(gx, 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return (1.0 - z) * n + z * h


# -------------------------------------------------------------------- LSTM
def init_lstm(key, input_dim: int, hidden_dim: int, dtype=None) -> dict:
    """Parameters of one LSTM cell: ``Wx (input_dim, 4H)``, ``Wh (H, 4H)``,
    ``b (4H,)``; gate order ``[i, f, g, o]``, forget-gate bias initialised to 1."""
    _check_positive_int("input_dim", input_dim)
    _check_positive_int("hidden_dim", hidden_dim)
    dtype = _float_dtype(dtype)
    h = hidden_dim
    wx, wh = standard_normals(key, [(input_dim, 4 * h), (h, 4 * h)], dtype)
    b = _zeros((4 * h,), dtype)
    b[h : 2 * h] = 1.0
    return _to_jax({"Wx": wx / math.sqrt(input_dim), "Wh": wh / math.sqrt(h), "b": b})


def lstm_cell(params: dict, state, x):
    """One LSTM step: ``(h_t, c_t) = LSTM((h_{t-1}, c_{t-1}), x_t)``."""
    h, c = state
    g = x @ params["Wx"] + h @ params["Wh"] + params["b"]
    i, f, gg, o = jnp.split(g, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c)


# ------------------------------------------------------ stacked recurrent
def _check_kind(kind):
    if kind not in RECURRENT_KINDS:
        raise ValueError(f"kind must be one of {RECURRENT_KINDS}, got {kind!r}")


def init_recurrent(
    key, kind: str, input_dim: int, hidden_dim: int, num_layers: int = 1, dtype=None
) -> list:
    """A stack of ``num_layers`` GRU or LSTM cells (a list of cell parameter dicts)."""
    _check_kind(kind)
    _check_positive_int("num_layers", num_layers)
    init = init_gru if kind == "gru" else init_lstm
    return [
        init(jax.random.fold_in(key, i), input_dim if i == 0 else hidden_dim, hidden_dim, dtype)
        for i in range(num_layers)
    ]


def _hidden_dim(kind, layer):
    return layer["Wh"].shape[0]


def recurrent_initial_state(kind: str, params: Sequence[dict], batch_shape=(), dtype=None):
    """Zero state: a tuple over layers of ``h`` (GRU) or ``(h, c)`` (LSTM),
    each of shape ``batch_shape + (H,)``."""
    _check_kind(kind)
    dtype = params[0]["Wh"].dtype if dtype is None else dtype
    states = []
    for layer in params:
        z = jnp.zeros(tuple(batch_shape) + (_hidden_dim(kind, layer),), dtype)
        states.append(z if kind == "gru" else (z, z))
    return tuple(states)


def recurrent_step(kind: str, params: Sequence[dict], state, x):
    """Advance the stack by one time step. Returns ``(new_state, output)`` where
    ``output`` is the top layer's ``h_t`` of shape ``(..., H)``."""
    new_states = []
    inp = x
    for layer, s in zip(params, state):
        if kind == "gru":
            s = gru_cell(layer, s, inp)
            inp = s
        else:
            s = lstm_cell(layer, s, inp)
            inp = s[0]
        new_states.append(s)
    return tuple(new_states), inp


def recurrent_apply(kind: str, params: Sequence[dict], xs, state=None):
    """Run the stack over ``xs`` of shape ``(..., T, D)`` with ``lax.scan``.

    Returns ``(outputs (..., T, H), final_state)``; ``state`` defaults to zeros.
    """
    _check_kind(kind)
    xs = jnp.asarray(xs)
    if state is None:
        state = recurrent_initial_state(kind, params, xs.shape[:-2], xs.dtype)
    xs_t = jnp.moveaxis(xs, -2, 0)

    def body(carry, x_t):
        carry, out = recurrent_step(kind, params, carry, x_t)
        return carry, out

    final, outs = lax.scan(body, state, xs_t)
    return jnp.moveaxis(outs, 0, -2), final


# ------------------------------------------------------------- attention
def layer_norm(x, gain, bias, eps: float = 1e-5):
    """``(x - mean) / sqrt(var + eps) * gain + bias`` over the last axis."""
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
    return (x - mu) * lax.rsqrt(var + eps) * gain + bias


def sinusoidal_positions(length: int, dim: int, dtype=None):
    """Fixed positional encodings ``(length, dim)``:
    ``PE[t, 2i] = sin(t / 10000^(2i/dim))``, ``PE[t, 2i+1] = cos(...)``."""
    dtype = _float_dtype(dtype)
    pos = jnp.arange(length, dtype=dtype)[:, None]
    i = jnp.arange(dim)
    freq = jnp.exp(-(2 * (i // 2)).astype(dtype) * (math.log(10000.0) / dim))
    ang = pos * freq[None, :]
    return jnp.where(i % 2 == 0, jnp.sin(ang), jnp.cos(ang))


def init_causal_transformer(
    key, dim: int, num_layers: int = 1, num_heads: int = 2, mlp_dim: int | None = None, dtype=None
) -> dict:
    """Parameters of a pre-LN causal transformer stack of model width ``dim``.

    Returns ``{"layers": [...], "lnf_g", "lnf_b"}``; each layer holds
    ``Wq, Wk, Wv, Wo (dim, dim)``, ``W1 (dim, mlp_dim)``, ``b1``, ``W2 (mlp_dim, dim)``,
    ``b2`` and two layer-norm gain/bias pairs. ``dim`` must be divisible by
    ``num_heads``; ``mlp_dim`` defaults to ``4 * dim``.
    """
    _check_positive_int("dim", dim)
    _check_positive_int("num_layers", num_layers)
    _check_positive_int("num_heads", num_heads)
    if dim % num_heads != 0:
        raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
    mlp_dim = 4 * dim if mlp_dim is None else mlp_dim
    _check_positive_int("mlp_dim", mlp_dim)
    dtype = _float_dtype(dtype)
    out_scale = 1.0 / math.sqrt(2.0 * num_layers)
    d, f = dim, mlp_dim
    layers = []
    for i in range(num_layers):
        wq, wk, wv, wo, w1, w2 = standard_normals(
            jax.random.fold_in(key, i), [(d, d)] * 4 + [(d, f), (f, d)], dtype
        )
        layers.append(
            {
                "ln1_g": _ones((d,), dtype),
                "ln1_b": _zeros((d,), dtype),
                "Wq": wq / math.sqrt(d),
                "Wk": wk / math.sqrt(d),
                "Wv": wv / math.sqrt(d),
                "Wo": wo * (out_scale / math.sqrt(d)),
                "ln2_g": _ones((d,), dtype),
                "ln2_b": _zeros((d,), dtype),
                "W1": w1 / math.sqrt(d),
                "b1": _zeros((f,), dtype),
                "W2": w2 * (out_scale / math.sqrt(f)),
                "b2": _zeros((d,), dtype),
            }
        )
    return _to_jax({"layers": layers, "lnf_g": _ones((d,), dtype), "lnf_b": _zeros((d,), dtype)})


def causal_self_attention(layer: dict, x, num_heads: int):
    """Multi-head attention of ``x (..., T, D)`` onto itself with a causal mask."""
    *lead, t, d = x.shape
    dh = d // num_heads

    def heads(w):
        return (x @ w).reshape(*lead, t, num_heads, dh)

    q, k, v = heads(layer["Wq"]), heads(layer["Wk"]), heads(layer["Wv"])
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k) / jnp.sqrt(jnp.asarray(dh, x.dtype))
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    scores = jnp.where(causal, scores, -jnp.inf)
    att = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("...hqk,...khd->...qhd", att, v).reshape(*lead, t, d)
    return out @ layer["Wo"]


def causal_transformer_apply(params: dict, xs, num_heads: int):
    """Apply the causal stack to ``xs (..., T, D)``; returns ``(..., T, D)``.

    Output at position t is a function of ``xs[..., :t+1, :]`` only.
    """
    x = xs
    for layer in params["layers"]:
        x = x + causal_self_attention(layer, layer_norm(x, layer["ln1_g"], layer["ln1_b"]), num_heads)
        hmid = jax.nn.relu(layer_norm(x, layer["ln2_g"], layer["ln2_b"]) @ layer["W1"] + layer["b1"])
        x = x + hmid @ layer["W2"] + layer["b2"]
    return layer_norm(x, params["lnf_g"], params["lnf_b"])
