r"""Conditional multivariate normal ``p(y | x) = N(y; mu(x), C(x) C(x)^T)``: the baseline.

An MLP maps the context ``x`` (``context_dim`` inputs) to ``d + d + d(d-1)/2`` numbers::

    mu(x)   = out[:d]
    C(x)    = diag(softplus(out[d:2d]) + diag_floor) + L(out[2d:])

where ``L`` fills the strictly-lower triangle (row-major order of ``numpy.tril_indices(d, -1)``).
``C`` is lower triangular with a positive diagonal, so ``Sigma(x) = C C^T`` is a valid covariance
and ``C`` its Cholesky factor.  ``diag_floor`` (default ``1e-6``) keeps the diagonal away from 0
where ``softplus`` underflows.  The density and samples are numpyro's
``MultivariateNormal(mu, scale_tril=C)`` (:meth:`ConditionalMVN.distribution`).

Unconditional form (``context_dim=0``): ``mu`` and the raw Cholesky entries are free parameters
(leaves ``loc`` of shape ``(d,)`` and ``raw_tril`` of shape ``(d + d(d-1)/2,)``, laid out like the
MLP output above); :meth:`ConditionalMVN.fit` gives the closed-form maximum-likelihood fit.

Pytree: children ``(net, loc, raw_tril, context)`` (``net`` is ``None`` when unconditional,
``loc``/``raw_tril`` ``None`` when conditional); aux ``(dim, context_dim, diag_floor)``.
Builder: :func:`conditional_mvn` ``(key, dim, context_dim=0, *, hidden_dims=(64, 64))``.
Both start at ``mu = 0``, ``Sigma = I``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import Distribution, constraints

from .._checks import check_context, check_finite
from ..nn import MLP

__all__ = ["ConditionalMVN", "conditional_mvn"]


def _inv_softplus(v):
    return np.log(np.expm1(v))


def _pos_int(v, name, allow_zero=False):
    lo = 0 if allow_zero else 1
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {kind} integer; got {v!r}")
    return int(v)


class ConditionalMVN(Distribution):
    """``N(y; mu(x), C(x) C(x)^T)`` with event shape ``(dim,)`` (see the module docstring).

    Build with :func:`conditional_mvn` / :meth:`init`, or :meth:`from_loc_scale_tril` /
    :meth:`fit` for the unconditional form.  Conditional models need a context:
    ``model.condition(x)`` (batch shape ``x.shape[:-1]``) or ``context=`` in ``log_prob``/``sample``.
    """

    arg_constraints = {}
    pytree_data_fields = ()
    pytree_aux_fields = ()
    support = constraints.real_vector
    reparametrized_params = []

    def __init__(self, dim: int, *, net=None, loc=None, raw_tril=None, context_dim: int = 0,
                 diag_floor: float = 1e-6, context=None, validate_args=None):
        dim = _pos_int(dim, "dim")
        context_dim = _pos_int(context_dim, "context_dim", allow_zero=True)
        if not (isinstance(diag_floor, (int, float)) and diag_floor >= 0):
            raise ValueError(f"diag_floor must be a non-negative number; got {diag_floor!r}")
        n_tril = dim * (dim + 1) // 2
        if context_dim:
            if not isinstance(net, MLP):
                raise TypeError("a conditional ConditionalMVN needs net=MLP(context_dim -> dim + dim(dim+1)/2)")
        else:
            loc, raw_tril = jnp.asarray(loc), jnp.asarray(raw_tril)
            if loc.shape != (dim,):
                raise ValueError(f"loc must have shape ({dim},); got {loc.shape}")
            if raw_tril.shape != (n_tril,):
                raise ValueError(f"raw_tril must have shape ({n_tril},) (dim + dim(dim-1)/2); got {raw_tril.shape}")
            net = None
        self.net, self.loc_param, self.raw_tril = net, loc, raw_tril
        self._dim, self._context_dim, self._diag_floor = dim, context_dim, float(diag_floor)
        self.context = None
        if context is not None:
            context = self._prepare_context(context)
        self.context = context
        batch = () if context is None else tuple(context.shape[:-1])
        super().__init__(batch, (dim,), validate_args=validate_args)

    # -------------------------------------------------------------- pytree
    def tree_flatten(self):
        return (self.net, self.loc_param, self.raw_tril, self.context), (self._dim, self._context_dim,
                                                                        self._diag_floor)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = cls.__new__(cls)
        obj.net, obj.loc_param, obj.raw_tril, obj.context = children
        obj._dim, obj._context_dim, obj._diag_floor = aux
        ctx = obj.context
        batch = tuple(ctx.shape[:-1]) if ctx is not None and hasattr(ctx, "shape") else ()
        Distribution.__init__(obj, batch, (obj._dim,), validate_args=False)
        return obj

    # ------------------------------------------------------------- builders
    @classmethod
    def init(cls, key, dim: int, context_dim: int = 0, *, hidden_dims: Sequence[int] = (64, 64),
             activation: str = "elu", diag_floor: float = 1e-6, context=None, dtype=None) -> "ConditionalMVN":
        """Fresh model at ``mu = 0``, ``Sigma = I`` (conditional: an MLP with a small last layer)."""
        dim = _pos_int(dim, "dim")
        context_dim = _pos_int(context_dim, "context_dim", allow_zero=True)
        dtype = jax.dtypes.canonicalize_dtype(dtype or jnp.zeros(()).dtype)
        n_tril = dim * (dim + 1) // 2
        diag0 = _inv_softplus(max(1.0 - diag_floor, 1e-3))
        if context_dim:
            net = MLP.init(key, context_dim, tuple(int(h) for h in hidden_dims), dim + n_tril,
                           activation=activation, dtype=dtype)
            # MLP.init scales its draws by a numpy float64, which promotes them under x64: recast
            net = jax.tree.map(lambda a: a if a.dtype == dtype else a.astype(dtype), net)
            b = np.array(net.biases[-1])
            b[dim:2 * dim] = diag0
            net.biases[-1] = jnp.asarray(b, dtype)
            return cls(dim, net=net, context_dim=context_dim, diag_floor=diag_floor, context=context)
        raw = np.zeros(n_tril)
        raw[:dim] = diag0
        return cls(dim, loc=jnp.zeros(dim, dtype), raw_tril=jnp.asarray(raw, dtype), diag_floor=diag_floor, context=context)

    @classmethod
    def from_loc_scale_tril(cls, loc, scale_tril, *, diag_floor: float = 1e-6) -> "ConditionalMVN":
        """Unconditional model with the given mean and Cholesky factor (positive diagonal > diag_floor)."""
        loc, c = np.asarray(loc), np.asarray(scale_tril)
        d = loc.shape[-1] if loc.ndim == 1 else -1
        if loc.ndim != 1 or c.shape != (d, d):
            raise ValueError(f"loc must have shape (d,) and scale_tril (d, d); got {loc.shape} and {c.shape}")
        diag = np.diag(c)
        if not np.all(diag > diag_floor):
            raise ValueError(f"scale_tril must have a diagonal > diag_floor={diag_floor}; got min {diag.min()}")
        rows, cols = np.tril_indices(d, -1)
        raw = np.concatenate([_inv_softplus(diag - diag_floor), c[rows, cols]])
        dtype = jax.dtypes.canonicalize_dtype(loc.dtype if np.issubdtype(loc.dtype, np.floating) else float)
        return cls(d, loc=jnp.asarray(loc, dtype), raw_tril=jnp.asarray(raw, dtype), diag_floor=diag_floor)

    @classmethod
    def fit(cls, y, *, diag_floor: float = 1e-6) -> "ConditionalMVN":
        """Closed-form maximum-likelihood unconditional fit: sample mean and (biased) covariance."""
        arr = np.asarray(y)
        if arr.ndim != 2 or arr.shape[0] < 2:
            raise ValueError(f"y must have shape (n, dim) with n >= 2; got {arr.shape}")
        check_finite(arr, "y")
        mean = arr.mean(0)
        cov = np.atleast_2d(np.cov(arr.astype(np.float64), rowvar=False, bias=True))
        return cls.from_loc_scale_tril(mean, np.linalg.cholesky(cov).astype(arr.dtype), diag_floor=diag_floor)

    # ------------------------------------------------------------- structure
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def context_dim(self) -> int:
        return self._context_dim

    @property
    def _dtype(self):
        return self.net.weights[0].dtype if self.net is not None else self.loc_param.dtype

    def _prepare_context(self, context):
        if not self._context_dim:
            raise ValueError("context was given but the model is not conditional (context_dim=0)")
        if not hasattr(context, "shape"):
            context = jnp.asarray(context)
        check_context(context, self._context_dim, "ConditionalMVN")
        check_finite(context, "context")
        if not jnp.issubdtype(context.dtype, jnp.floating):
            context = jnp.asarray(context, self._dtype)
        return context

    def condition(self, context) -> "ConditionalMVN":
        """``p(y | context)``; batch shape ``context.shape[:-1]``."""
        children, aux = self.tree_flatten()
        return type(self).tree_unflatten(aux, children[:3] + (self._prepare_context(context),))

    def _resolved(self, context):
        if context is not None:
            return self.condition(context)
        if self._context_dim and self.context is None:
            check_context(None, self._context_dim, "ConditionalMVN")
        return self

    def _raw(self):
        d = self._dim
        if self._context_dim:
            out = self.net(self.context)
            return out[..., :d], out[..., d:]
        return self.loc_param, self.raw_tril

    def _loc_scale_tril(self):
        d = self._dim
        loc, raw = self._raw()
        diag = jax.nn.softplus(raw[..., :d]) + self._diag_floor
        rows, cols = np.tril_indices(d, -1)
        c = jnp.zeros(raw.shape[:-1] + (d, d), raw.dtype)
        c = c.at[..., rows, cols].set(raw[..., d:])
        c = c + diag[..., :, None] * jnp.eye(d, dtype=raw.dtype)
        return loc, c

    def distribution(self, *, context=None) -> dist.MultivariateNormal:
        """The numpyro ``MultivariateNormal(mu(x), scale_tril=C(x))``."""
        m = self._resolved(context)
        loc, c = m._loc_scale_tril()
        return dist.MultivariateNormal(loc, scale_tril=c)

    @property
    def mean(self):
        return jnp.broadcast_to(self._resolved(None)._loc_scale_tril()[0], self.batch_shape + (self._dim,))

    @property
    def scale_tril(self):
        return self._resolved(None)._loc_scale_tril()[1]

    @property
    def covariance_matrix(self):
        c = self.scale_tril
        return c @ jnp.swapaxes(c, -1, -2)

    @property
    def variance(self):
        return jnp.diagonal(self.covariance_matrix, axis1=-2, axis2=-1)

    # ------------------------------------------------------------- density / sampling
    def _check_value(self, value):
        shape = np.shape(value)
        if len(shape) < 1 or shape[-1] != self._dim:
            raise ValueError(f"value must have shape (..., {self._dim}) (event size {self._dim}); "
                             f"got shape {tuple(shape)}")
        check_finite(value, "value")
        value = jnp.asarray(value)
        return value if jnp.issubdtype(value.dtype, jnp.floating) else value.astype(self._dtype)

    def log_prob(self, value, *, context=None):
        """Exact ``log N(y; mu(x), C C^T)``; shape ``broadcast(value batch, batch_shape)``."""
        m = self._resolved(context)
        return _mvn_log_prob_jit(m, m._check_value(value))

    def sample(self, key, sample_shape=(), *, context=None):
        """Draws ``mu + C eps`` (``eps ~ N(0, I)`` in the parameters' dtype) of shape ``sample_shape + batch_shape + (dim,)`` (reparameterised)."""
        m = self._resolved(context)
        return _mvn_sample_jit(m, key, tuple(sample_shape))

    def _sample_core(self, key, sample_shape):
        loc, c = self._loc_scale_tril()
        shape = tuple(sample_shape) + tuple(self.batch_shape) + (self._dim,)
        eps = jax.random.normal(key, shape, c.dtype)  # drawn in the parameters' dtype
        return loc + jnp.einsum("...ij,...j->...i", c, eps)

    def rsample(self, key, sample_shape=()):
        return self.sample(key, sample_shape)

    @property
    def has_rsample(self):
        return True

    def __repr__(self) -> str:
        return (f"ConditionalMVN(dim={self._dim}, context_dim={self._context_dim}, "
                f"batch_shape={self.batch_shape})")


_mvn_log_prob_jit = jax.jit(lambda m, v: m.distribution().log_prob(v))
_mvn_sample_jit = jax.jit(lambda m, key, shape: m._sample_core(key, shape), static_argnums=(2,))


def conditional_mvn(key, dim: int, context_dim: int = 0, *, hidden_dims: Sequence[int] = (64, 64),
                    activation: str = "elu", diag_floor: float = 1e-6, context=None,
                    dtype=None) -> ConditionalMVN:
    """Conditional MVN baseline ``N(mu(x), C(x) C(x)^T)`` (``context_dim=0``: unconditional)."""
    return ConditionalMVN.init(key, dim, context_dim, hidden_dims=hidden_dims, activation=activation,
                               diag_floor=diag_floor, context=context, dtype=dtype)
