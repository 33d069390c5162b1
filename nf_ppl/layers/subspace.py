"""A flow on a k-dimensional subspace of R^D, for latent spaces of any size (cost O(D k)).

For ``D`` in the thousands a dense ``D x D`` matrix or a MADE with ``D`` hidden units per layer
costs ``O(D^2)`` per draw.  :class:`SubspaceFlow` runs any flow of ``k`` coordinates (a few to
tens) on the span of a ``D x k`` basis, optionally carries its output linearly into the rest of
the space (``cross``), and leaves the orthogonal complement otherwise as it is.  ``AutoFlow``'s
``"globals"`` structure uses it with the basis of chosen coordinates (a model's global
parameters); a learned basis works too (its gradient passes through :func:`orthonormal_basis`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._checks import check_event_size
from .base import Bijector, forward_and_log_det, inverse_and_log_det

__all__ = ["SubspaceFlow", "orthonormal_basis"]


def _check_factor(factor, name, shape=None):
    factor = jnp.asarray(factor)
    if shape is not None and factor.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got shape {factor.shape}")
    if factor.ndim != 2 or factor.shape[1] > factor.shape[0] or factor.shape[1] < 1:
        raise ValueError(f"{name} must have shape (D, k) with 1 <= k <= D; got shape {factor.shape}")
    return factor


def orthonormal_basis(basis):
    """``Q = B R^{-1}`` with ``B^T B = R^T R`` (Cholesky): orthonormal columns spanning ``B``'s, ``B = Q R``.

    The QR decomposition with ``diag(R) > 0`` computed from the ``k x k`` Gram matrix: ``O(D k^2)``
    in matrix products, cheaper than Householder QR for ``D >> k``; accurate while ``B`` is well
    conditioned (a learned basis starts as Gaussian noise, condition number near 1 for ``D >> k``)."""
    gram = basis.T @ basis
    chol = jnp.linalg.cholesky(gram + 1e-12 * jnp.trace(gram) * jnp.eye(gram.shape[0], dtype=gram.dtype))
    return jax.scipy.linalg.solve_triangular(chol, basis.T, lower=True).T


class SubspaceFlow(Bijector):
    """A flow ``f`` on the span of a learned ``basis`` (``D x k``), carried into the complement by ``cross`` (``D x k``).

    With ``Q = orthonormal_basis(basis)`` (``Q^T Q = I_k``), ``P = I - Q Q^T`` (the projection on the
    orthogonal complement), ``w = Q^T x`` and ``v = f(w)``:

    forward:  ``y = x + Q (v - w) + P cross v``        (one pass of ``f``, plus O(D k) products)
    inverse:  ``v = Q^T y``, ``w = f^{-1}(v)``, ``x = y - P cross v + Q (w - v)``
              (one pass, or sequential where ``f``'s inverse is)
    log|det J| = ``log|det J_f(w)|``

    In the coordinates ``(Q^T x, P x)`` the map is ``(w, x_perp) -> (f(w), x_perp + P cross f(w))``:
    block triangular with blocks ``J_f`` and ``I``, so it is a bijection whenever ``f`` is.  ``cross = 0``
    and ``f`` the identity give the identity map.  ``inner`` is any transform of ``k``-vectors (an
    ``nf_ppl`` layer, ``Chain`` or ``Flow.transform``).
    """

    param_names = ("basis", "cross", "inner")

    def __init__(self, basis, inner, cross=None):
        self.basis = _check_factor(basis, "basis")
        self.cross = jnp.zeros_like(self.basis) if cross is None else _check_factor(cross, "cross", self.basis.shape)
        size = getattr(inner, "event_size", None)
        if size is not None and size != self.basis.shape[1]:
            raise ValueError(f"inner acts on vectors of size {size} but basis has {self.basis.shape[1]} columns; "
                             f"they must match")
        self.inner = inner

    @property
    def event_size(self):
        return self.basis.shape[0]

    def _carry(self, q, v):
        """``P cross v`` for ``v`` of shape (..., k)."""
        c = v @ self.cross.T
        return c - (c @ q) @ q.T

    def forward_and_log_det(self, x):
        self._check_input(x)
        q = orthonormal_basis(self.basis)
        w = x @ q
        v, log_det = forward_and_log_det(self.inner, w)
        return x + (v - w) @ q.T + self._carry(q, v), log_det

    def inverse_and_log_det(self, y):
        check_event_size(y, self.event_size, "y")
        q = orthonormal_basis(self.basis)
        v = y @ q
        w, log_det = inverse_and_log_det(self.inner, v)
        return y - self._carry(q, v) + (w - v) @ q.T, log_det

