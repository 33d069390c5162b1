"""Linear layers: LU-parametrised invertible matrices and permutations.

A linear map ``y = W x + b`` has constant Jacobian ``W``.  With ``W = P L U`` (``P`` a fixed
permutation, ``L`` unit lower-triangular, ``U`` upper-triangular with positive diagonal
``exp(log_diag)``) the determinant is ``prod exp(log_diag)``, so ``log|det J|`` costs O(d) and the
inverse is two triangular solves, O(d^2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from .._checks import check_permutation
from .base import Bijector


def lu_factors(lower, upper, log_diag):
    """``(L, U)``: ``L`` unit lower-triangular from the strict lower triangle of ``lower``, ``U`` upper
    triangular from the strict upper triangle of ``upper`` and the diagonal ``exp(log_diag)``; the
    one LU parametrisation of :class:`LULinear` and the image layer ``InvConv1x1``."""
    d = log_diag.shape[-1]
    lower_f = jnp.tril(lower, -1) + jnp.eye(d, dtype=lower.dtype)
    upper_f = jnp.triu(upper, 1) + jnp.diag(jnp.exp(log_diag))
    return lower_f, upper_f


def lu_solve(lower_f, upper_f, b):
    """``(L U)^{-1} b`` for a ``(d, k)`` right-hand side: two triangular solves, O(d^2 k)."""
    b = solve_triangular(lower_f, b, lower=True, unit_diagonal=True)
    return solve_triangular(upper_f, b, lower=False)


def _batch_log_det(value, x):
    return jnp.broadcast_to(value, jnp.shape(x)[:-1]).astype(jnp.result_type(x, float))


class LULinear(Bijector):
    """Invertible linear map ``y = P L U x + bias`` with learned ``L``, ``U``, ``bias``.

    ``L = I + strict_lower(lower)``, ``U = strict_upper(upper) + diag(exp(log_diag))``; the
    entries of ``lower``/``upper`` outside their triangles are unused.  ``P`` is a fixed
    permutation (static; default identity).

    forward:  ``y = P L U x + b``                      (one pass, O(d^2))
    inverse:  ``x = U^{-1} L^{-1} P^T (y - b)``          (two triangular solves, one pass)
    log|det J| = ``sum_i log_diag_i``                   (O(d), constant in x)
    """

    param_names = ("lower", "upper", "log_diag", "bias")
    static_names = ("perm",)

    def __init__(self, lower, upper, log_diag, bias, perm=None):
        log_diag = jnp.asarray(log_diag)
        d = log_diag.shape[-1]
        for name, value in (("lower", lower), ("upper", upper)):
            if jnp.shape(value) != (d, d):
                raise ValueError(f"{name} must have shape ({d}, {d}) for event size {d}; got {jnp.shape(value)}")
        if jnp.shape(bias) != (d,):
            raise ValueError(f"bias must have shape ({d},); got {jnp.shape(bias)}")
        self.lower, self.upper = jnp.asarray(lower), jnp.asarray(upper)
        self.log_diag, self.bias = log_diag, jnp.asarray(bias)
        self.perm = None if perm is None else check_permutation(perm, d, "perm")

    @classmethod
    def init(cls, key, dim: int, dtype=None, perm=None):
        """Near-identity initialisation with small random triangles."""
        k1, k2 = jax.random.split(key)
        noise = lambda k: 0.01 * jax.random.normal(k, (dim, dim), dtype or jnp.zeros(()).dtype)
        return cls(noise(k1), noise(k2), jnp.zeros(dim, dtype), jnp.zeros(dim, dtype), perm)

    @property
    def event_size(self):
        return self.log_diag.shape[-1]

    def _factors(self):
        return lu_factors(self.lower, self.upper, self.log_diag)

    def matrix(self):
        """The dense matrix ``W = P L U``."""
        lower, upper = self._factors()
        w = lower @ upper
        return w if self.perm is None else w[jnp.argsort(jnp.asarray(self.perm))]

    def forward_and_log_det(self, x):
        self._check_input(x)
        lower, upper = self._factors()
        z = (x @ upper.T) @ lower.T
        if self.perm is not None:
            z = z[..., jnp.argsort(jnp.asarray(self.perm))]
        return z + self.bias, _batch_log_det(jnp.sum(self.log_diag), x)

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        lower, upper = self._factors()
        z = y - self.bias
        if self.perm is not None:
            z = z[..., jnp.asarray(self.perm)]
        batch = z.shape[:-1]
        flat = lu_solve(lower, upper, z.reshape(-1, self.event_size).T)
        return flat.T.reshape(batch + (self.event_size,)), _batch_log_det(jnp.sum(self.log_diag), y)


class Permutation(Bijector):
    """Fixed permutation of the coordinates: ``y_i = x_{perm[i]}``.

    forward:  ``y = x[perm]``;  inverse: ``x = y[argsort(perm)]``;  log|det J| = 0.
    Both directions are one pass.  The permutation is static (hashable), not a parameter.
    Build with ``Permutation(perm)``, ``Permutation.reverse(dim)`` or ``Permutation.random(key, dim)``.
    """

    static_names = ("perm",)

    def __init__(self, perm):
        self.perm = check_permutation(perm, None, "perm")

    @classmethod
    def reverse(cls, dim: int):
        return cls(tuple(range(dim - 1, -1, -1)))

    @classmethod
    def random(cls, key, dim: int):
        if isinstance(key, jax.core.Tracer):
            raise ValueError("a random permutation needs a concrete key: the permutation is the flow's structure, "
                             "not a traced value; build the flow outside jit/vmap, or use permutation='auto' "
                             "(a fixed draw) or 'reverse'")
        return cls(tuple(int(i) for i in jax.random.permutation(key, dim)))

    @property
    def event_size(self):
        return len(self.perm)

    @property
    def inverse_perm(self) -> tuple[int, ...]:
        inv = [0] * len(self.perm)
        for i, p in enumerate(self.perm):
            inv[p] = i
        return tuple(inv)

    def forward_and_log_det(self, x):
        self._check_input(x)
        return x[..., jnp.asarray(self.perm)], _batch_log_det(0.0, x)

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        return y[..., jnp.asarray(self.inverse_perm)], _batch_log_det(0.0, y)
