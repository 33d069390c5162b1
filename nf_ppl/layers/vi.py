"""Flows used mainly for variational inference: planar, radial, Householder and Sylvester layers.

These layers (Rezende & Mohamed 2015; Tomczak & Welling 2016; van den Berg et al. 2018) are
cheap in the sampling (forward) direction and have closed-form log-determinants, which is all a
variational posterior needs (``flow.sample_and_log_prob``).  Their inverses are not all closed
form; here every one of them is exact to floating-point accuracy:

* planar: the inverse reduces to one monotone scalar equation along ``w`` (bisection on a
  bracket of known width, then one Newton step);
* radial: the radius solves a quadratic (closed form, evaluated in a cancellation-free way);
* Householder: orthogonal, the inverse applies the reflections in reverse order;
* Sylvester: the triangular structure gives ``d`` monotone scalar equations solved one after
  the other (last coordinate first), each by bracketed bisection plus one Newton step.

The numerical inverses are ``jit``-able (``lax.fori_loop`` with a fixed iteration count) and
differentiable: the final Newton step is taken from a ``stop_gradient`` of the bisection root,
which makes its derivative the implicit-function derivative of the exact root.

Parameter constraints keep every layer invertible for any value of its raw parameters, so
optimisers can move the raw leaves freely.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .base import Bijector

# enough halvings to shrink any bracket below one ulp in float64 (and float32)
BISECTION_STEPS = 80


def _dtype(*xs):
    return jnp.result_type(*xs, float)


def _batch(value, x):
    return jnp.broadcast_to(value, jnp.shape(x)[:-1])


def _log_sech2(a):
    """``log(1 - tanh(a)^2)`` computed without cancellation for large ``|a|``."""
    a = jnp.abs(a)
    return jnp.log(4.0) - 2.0 * a - 2.0 * jnp.log1p(jnp.exp(-2.0 * a))


def _sech2(a):
    return jnp.exp(_log_sech2(a))


def _safe_norm2(v, axis=-1):
    """``|v|^2`` replaced by 1 where it is 0 (so divisions stay finite; the numerator is 0 there)."""
    n2 = jnp.sum(v * v, axis=axis)
    return jnp.where(n2 > 0, n2, jnp.ones_like(n2))


def bisect_increasing(fun, target, lo, hi, steps: int = BISECTION_STEPS):
    """Vectorised bisection for ``fun(a) = target`` with ``fun`` increasing and ``lo <= root <= hi``.

    Every argument is an array (broadcast together); returns the midpoint of the final bracket.
    No gradient flows through the iterations (use a Newton step on top for that).
    """
    target, lo, hi = (jax.lax.stop_gradient(v) for v in jnp.broadcast_arrays(target, lo, hi))

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        above = fun(mid) > target
        return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

    lo, hi = jax.lax.fori_loop(0, steps, body, (lo, hi))
    return jax.lax.stop_gradient(0.5 * (lo + hi))


# ---------------------------------------------------------------------------------------
class Planar(Bijector):
    """Planar flow (Rezende & Mohamed, 2015): ``y = x + u_hat * tanh(w . x + b)``.

    ``u_hat = u + (m(w . u) - w . u) w / |w|^2`` with ``m(a) = -1 + softplus(a)``, so
    ``c = w . u_hat > -1`` and the map is invertible for any raw ``u, w, b``.

    forward:  ``y = x + u_hat tanh(a)``, ``a = w . x + b``                 (one pass)
    inverse:  ``a`` solves ``a + c tanh(a) = w . y + b`` (increasing, root within ``|c|`` of the
              right-hand side), then ``x = y - u_hat tanh(a)``            (numerical: bisection + Newton)
    log|det J| = ``log(1 + c (1 - tanh(a)^2))``

    ``Planar(u, w, b)`` or ``Planar.init(key, dim, dtype=None)`` (small random ``u, w``).
    """

    param_names = ("u", "w", "b")

    def __init__(self, u, w, b):
        u, w, b = jnp.asarray(u), jnp.asarray(w), jnp.asarray(b)
        if u.ndim != 1 or w.shape != u.shape:
            raise ValueError(f"u and w must be 1-D of equal length (the event size); got shapes {u.shape} and {w.shape}")
        if b.shape != ():
            raise ValueError(f"b must be a scalar; got shape {b.shape}")
        self.u, self.w, self.b = u, w, b

    @classmethod
    def init(cls, key, dim: int, dtype=None):
        dtype = dtype or jnp.zeros(()).dtype
        k1, k2 = jax.random.split(key)
        scale = 0.1 / np.sqrt(dim)
        return cls(scale * jax.random.normal(k1, (dim,), dtype), scale * jax.random.normal(k2, (dim,), dtype),
                   jnp.zeros((), dtype))

    @property
    def event_size(self):
        return self.u.shape[-1]

    def u_hat(self):
        """The constrained ``u`` (``w . u_hat > -1``)."""
        wu = jnp.dot(self.w, self.u)
        return self.u + (jax.nn.softplus(wu) - 1.0 - wu) * self.w / _safe_norm2(self.w)

    def _log_det(self, a, c):
        return jnp.log1p(c * _sech2(a))

    def forward_and_log_det(self, x):
        self._check_input(x)
        u_hat = self.u_hat()
        c = jnp.dot(self.w, u_hat)
        a = x @ self.w + self.b
        return x + u_hat * jnp.tanh(a)[..., None], self._log_det(a, c)

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        u_hat = self.u_hat()
        c = jnp.dot(self.w, u_hat)
        s = y @ self.w + self.b
        g = lambda a: a + c * jnp.tanh(a)
        c0 = jax.lax.stop_gradient(c)
        width = jnp.abs(c0)
        a0 = bisect_increasing(lambda a: a + c0 * jnp.tanh(a), s, s - width, s + width)
        a = a0 - (g(a0) - s) / (1.0 + c * _sech2(a0))  # Newton step: exact derivatives
        return y - u_hat * jnp.tanh(a)[..., None], self._log_det(a, c)


# ---------------------------------------------------------------------------------------
class Radial(Bijector):
    """Radial flow (Rezende & Mohamed, 2015): contract or expand around a centre ``x0``.

    With ``alpha = softplus(raw_alpha) > 0``, ``beta = -alpha + softplus(raw_beta) > -alpha``,
    ``r = |x - x0|`` and ``h = 1 / (alpha + r)``:

    forward:  ``y = x + beta h (x - x0)``                                  (one pass)
    inverse:  ``rho = |y - x0| = r (alpha + beta + r) / (alpha + r)`` is a quadratic in ``r``
              (``r^2 + (alpha + beta - rho) r - alpha rho = 0``), whose positive root is taken in a
              cancellation-free form; then ``x = x0 + (y - x0) (alpha + r) / (alpha + beta + r)``
              (closed form, one pass)
    log|det J| = ``(d - 1) log(1 + beta h) + log(1 + beta alpha h^2)``

    ``Radial(x0, raw_alpha, raw_beta)`` or ``Radial.init(key, dim, dtype=None)``.
    """

    param_names = ("x0", "raw_alpha", "raw_beta")

    def __init__(self, x0, raw_alpha, raw_beta):
        x0, raw_alpha, raw_beta = jnp.asarray(x0), jnp.asarray(raw_alpha), jnp.asarray(raw_beta)
        if x0.ndim != 1:
            raise ValueError(f"x0 must be 1-D (length = event size); got shape {x0.shape}")
        if raw_alpha.shape != () or raw_beta.shape != ():
            raise ValueError(f"raw_alpha and raw_beta must be scalars; got shapes {raw_alpha.shape}, {raw_beta.shape}")
        self.x0, self.raw_alpha, self.raw_beta = x0, raw_alpha, raw_beta

    @classmethod
    def init(cls, key, dim: int, dtype=None):
        dtype = dtype or jnp.zeros(()).dtype
        x0 = 0.1 * jax.random.normal(key, (dim,), dtype)
        # alpha = 1, beta = softplus(0.5413) - 1 = 0 (identity)
        return cls(x0, jnp.asarray(0.5413248546, dtype), jnp.asarray(0.5413248546, dtype))

    @property
    def event_size(self):
        return self.x0.shape[-1]

    def alpha_beta(self):
        alpha = jax.nn.softplus(self.raw_alpha)
        return alpha, jax.nn.softplus(self.raw_beta) - alpha

    @staticmethod
    def _norm(z):
        n2 = jnp.sum(z * z, axis=-1)
        positive = n2 > 0
        return jnp.where(positive, jnp.sqrt(jnp.where(positive, n2, 1.0)), 0.0)

    def _log_det(self, r, alpha, beta):
        d = self.event_size
        h = 1.0 / (alpha + r)
        return (d - 1) * jnp.log1p(beta * h) + jnp.log1p(beta * alpha * h * h)

    def forward_and_log_det(self, x):
        self._check_input(x)
        alpha, beta = self.alpha_beta()
        z = x - self.x0
        r = self._norm(z)
        y = x + (beta / (alpha + r))[..., None] * z
        return y, self._log_det(r, alpha, beta)

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        alpha, beta = self.alpha_beta()
        w = y - self.x0
        rho = self._norm(w)
        bq = alpha + beta - rho
        q = jnp.sqrt(bq * bq + 4.0 * alpha * rho)
        pos = bq > 0
        r = jnp.where(pos, 2.0 * alpha * rho / jnp.where(pos, bq + q, 1.0), 0.5 * (q - bq))
        x = self.x0 + w * ((alpha + r) / (alpha + beta + r))[..., None]
        return x, self._log_det(r, alpha, beta)


# ---------------------------------------------------------------------------------------
def _reflect(x, v):
    """Householder reflection of the last axis of ``x``: ``x - 2 v (v . x) / |v|^2``."""
    return x - (2.0 * (x @ v) / _safe_norm2(v))[..., None] * v


def householder_matrix(vectors):
    """``Q = H_K ... H_1`` (the orthogonal matrix of applying reflections ``v_1`` first)."""
    d = vectors.shape[-1]
    q = jnp.eye(d, dtype=vectors.dtype)
    for k in range(vectors.shape[0]):
        q = _reflect(q.T, vectors[k]).T  # apply H_k to every column
    return q


class Householder(Bijector):
    """Householder flow (Tomczak & Welling, 2016): a product of ``K`` reflections.

    ``H_k = I - 2 v_k v_k^T / |v_k|^2`` (a ``v_k`` of zero acts as the identity).

    forward:  ``y = H_K ... H_1 x``                   (one pass, O(K d))
    inverse:  ``x = H_1 ... H_K y`` (each reflection is its own inverse)   (one pass)
    log|det J| = 0 (orthogonal)

    ``Householder(vectors)`` with ``vectors`` of shape ``(K, d)``, or
    ``Householder.init(key, dim, num_reflections=2, dtype=None)``.
    """

    param_names = ("vectors",)

    def __init__(self, vectors):
        vectors = jnp.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] < 1:
            raise ValueError(f"vectors must have shape (num_reflections >= 1, dim); got shape {vectors.shape}")
        self.vectors = vectors

    @classmethod
    def init(cls, key, dim: int, num_reflections: int = 2, dtype=None):
        if not isinstance(num_reflections, int) or num_reflections < 1:
            raise ValueError(f"num_reflections must be a positive int; got {num_reflections!r}")
        return cls(jax.random.normal(key, (num_reflections, dim), dtype or jnp.zeros(()).dtype))

    @property
    def event_size(self):
        return self.vectors.shape[-1]

    def _apply(self, x, reverse):
        x = x.astype(_dtype(x, self.vectors))
        order = range(self.vectors.shape[0])
        for k in (reversed(order) if reverse else order):
            x = _reflect(x, self.vectors[k])
        return x, _batch(jnp.zeros((), x.dtype), x)

    def forward_and_log_det(self, x):
        self._check_input(x)
        return self._apply(x, reverse=False)

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        return self._apply(y, reverse=True)


# ---------------------------------------------------------------------------------------
class Sylvester(Bijector):
    """Householder Sylvester flow (van den Berg et al., 2018): ``y = x + Q R tanh(R~ Q^T x + b)``.

    ``Q = H_K ... H_1`` is orthogonal (Householder reflections), ``R`` and ``R~`` are upper
    triangular with diagonals ``tanh(raw_diag)`` and ``tanh(raw_diag_tilde)``, so
    ``r_ii r~_ii in (-1, 1)`` and ``1 + r_ii r~_ii tanh'(.) > 0``: invertible for any raw values.
    Entries of ``r``/``r_tilde`` below and on the diagonal are unused.

    forward:  ``z = Q^T x``, ``a = R~ z + b``, ``y = x + Q R tanh(a)``       (one pass)
    inverse:  with ``v = Q^T y``, row ``i`` of ``v = z + R tanh(R~ z + b)`` involves only
              ``z_i, ..., z_d``; for ``i = d..1`` solve the increasing scalar equation
              ``z_i + r_ii tanh(r~_ii z_i + c_i) = v_i - sum_{j>i} R_ij tanh(a_j)`` (root within
              ``|r_ii| < 1`` of the right-hand side); ``x = Q z``     (numerical: d sequential
              bisections + Newton steps)
    log|det J| = ``sum_i log(1 + r_ii r~_ii (1 - tanh(a_i)^2))``

    ``Sylvester(vectors, r, r_tilde, raw_diag, raw_diag_tilde, b)`` or
    ``Sylvester.init(key, dim, num_reflections=dim, dtype=None)``.
    """

    param_names = ("vectors", "r", "r_tilde", "raw_diag", "raw_diag_tilde", "b")

    def __init__(self, vectors, r, r_tilde, raw_diag, raw_diag_tilde, b):
        vectors = jnp.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] < 1:
            raise ValueError(f"vectors must have shape (num_reflections >= 1, dim); got shape {vectors.shape}")
        d = vectors.shape[-1]
        arrays = dict(r=r, r_tilde=r_tilde, raw_diag=raw_diag, raw_diag_tilde=raw_diag_tilde, b=b)
        arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
        for name in ("r", "r_tilde"):
            if arrays[name].shape != (d, d):
                raise ValueError(f"{name} must have shape ({d}, {d}) for event size {d}; got {arrays[name].shape}")
        for name in ("raw_diag", "raw_diag_tilde", "b"):
            if arrays[name].shape != (d,):
                raise ValueError(f"{name} must have shape ({d},) for event size {d}; got {arrays[name].shape}")
        self.vectors = vectors
        for k, v in arrays.items():
            setattr(self, k, v)

    @classmethod
    def init(cls, key, dim: int, num_reflections: int | None = None, dtype=None):
        num_reflections = dim if num_reflections is None else num_reflections
        if not isinstance(num_reflections, int) or num_reflections < 1:
            raise ValueError(f"num_reflections must be a positive int; got {num_reflections!r}")
        dtype = dtype or jnp.zeros(()).dtype
        k1, k2, k3 = jax.random.split(key, 3)
        small = lambda k: 0.05 * jax.random.normal(k, (dim, dim), dtype)
        return cls(jax.random.normal(k1, (num_reflections, dim), dtype), small(k2), small(k3),
                   jnp.full((dim,), 0.5, dtype), jnp.full((dim,), 0.5, dtype), jnp.zeros((dim,), dtype))

    @property
    def event_size(self):
        return self.vectors.shape[-1]

    def triangles(self):
        """The constrained ``R`` and ``R~`` (upper triangular, diagonals in (-1, 1))."""
        r = jnp.triu(self.r, 1) + jnp.diag(jnp.tanh(self.raw_diag))
        rt = jnp.triu(self.r_tilde, 1) + jnp.diag(jnp.tanh(self.raw_diag_tilde))
        return r, rt

    def _log_det(self, a, r, rt):
        return jnp.sum(jnp.log1p(jnp.diag(r) * jnp.diag(rt) * _sech2(a)), axis=-1)

    def forward_and_log_det(self, x):
        self._check_input(x)
        q = householder_matrix(self.vectors)
        r, rt = self.triangles()
        z = x @ q
        a = z @ rt.T + self.b
        y = x + jnp.tanh(a) @ r.T @ q.T
        return y, self._log_det(a, r, rt)

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        q = householder_matrix(self.vectors)
        r, rt = self.triangles()
        d = self.event_size
        v = y @ q
        dtype = _dtype(v, r)
        v = v.astype(dtype)
        r_diag, rt_diag = jnp.diag(r), jnp.diag(rt)

        def solve(k, carry):
            z, h = carry  # solved z_j and tanh(a_j) for j > i; zero elsewhere
            i = d - 1 - k
            c = z @ rt[i] + self.b[i]                # sum_{j>i} r~_ij z_j + b_i (z_i is still 0)
            t = v[..., i] - h @ r[i]                 # v_i - sum_{j>i} r_ij tanh(a_j)
            rii, rtii = r_diag[i], rt_diag[i]
            g = lambda s: s + rii * jnp.tanh(rtii * s + c)
            r0, rt0, c0 = (jax.lax.stop_gradient(u) for u in (rii, rtii, c))
            width = jnp.abs(r0)
            z0 = bisect_increasing(lambda s: s + r0 * jnp.tanh(rt0 * s + c0), t, t - width, t + width)
            zi = z0 - (g(z0) - t) / (1.0 + rii * rtii * _sech2(rtii * z0 + c))
            z = z.at[..., i].set(zi)
            h = h.at[..., i].set(jnp.tanh(rtii * zi + c))
            return z, h

        zeros = jnp.zeros(v.shape, dtype)
        z, _ = jax.lax.fori_loop(0, d, solve, (zeros, zeros))
        a = z @ rt.T + self.b
        return z @ q.T, self._log_det(a, r, rt)
