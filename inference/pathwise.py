"""Sticking the landing: a flow whose log-density passes gradients only through the point it is evaluated at.

For a reparametrised guide ``z = T_theta(u)``, ``u ~ N(0, I)``, the single-draw ELBO gradient is

    d/dtheta [log p(z) - log q_theta(z)]
        = (grad_z log p(z) - grad_z log q_theta(z)) . dz/dtheta      (path term)
          - (d/dtheta log q_theta)(z)  at fixed z                    (score term, mean zero)

``PathwiseFlow`` drops the score term (Roeder, Wu and Duvenaud 2017, "sticking the landing"):
its ``log_prob`` has the same value as the flow's but holds the flow's parameters fixed, so
only the path term remains.  The estimate stays unbiased and its variance vanishes as ``q``
approaches the posterior (at ``q = p`` every draw's gradient is exactly zero), which is what lets
a flow guide settle instead of jittering around the optimum.

The path term needs ``grad_z log q(z)``.  With the draw's base point ``u`` (NumPyro's
intermediates) and ``J = dT/du`` it is ``J^{-T} grad_u [log N(u) - log|det J(u)|]``: one
forward-mode Jacobian (``D`` JVPs, a single batched pass) and a ``D x D`` solve, no inverse pass,
so it costs about the same for IAF (whose inverse is up to ``D`` sequential sweeps) as for coupling
flows.  The log-density is a ``jax.custom_jvp``: its value is read off the sampling pass's
intermediates and the Jacobian is built only where a gradient is taken, so programs that only
evaluate it (ELBO estimates, ``diagnose``) compile and run without either.  For event sizes above ``dense_max``,
conditional flows, or without intermediates, it evaluates ``log q`` through the flow's inverse
instead (with the parameters held fixed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import nf_ppl
from nf_ppl.layers.base import forward_and_log_det

__all__ = ["PathwiseFlow", "pathwise"]


class PathwiseFlow(nf_ppl.Flow):
    """A ``Flow`` whose ``log_prob`` is the sticking-the-landing surrogate (see the module docstring).

    Sampling, ``sample_with_intermediates`` and the value of ``log_prob`` are the flow's own;
    only gradients with respect to the flow's parameters differ (the score term is dropped).
    Build it with :func:`pathwise`.
    """

    dense_max = 64  # largest event size that uses the dense-Jacobian path

    def log_prob(self, value, intermediates=None, *, context=None):
        if context is not None:
            return self.condition(context).log_prob(value, intermediates)
        frozen = jax.lax.stop_gradient(self)
        dense = (intermediates is not None and not self.context_dim and len(self.flow_event_shape) == 1
                 and self.flow_event_shape[0] <= self.dense_max)
        if not dense:  # log q through the inverse, differentiable in value only
            return nf_ppl.Flow.log_prob(frozen, value)
        value = self._check_value(value)
        return _stl_log_q(frozen, jax.lax.stop_gradient(intermediates), value)


@jax.custom_jvp
def _stl_log_q(flow, intermediates, value):
    """``log q(value)`` read off the sampling pass's ``intermediates`` (``nf_ppl.Flow.log_prob``: no pass
    through the flow); its derivative in ``value`` is ``grad_z log q`` (the rule below), so a program
    that only evaluates it carries neither a flow pass nor a Jacobian."""
    return nf_ppl.Flow.log_prob(flow, value, intermediates)


@_stl_log_q.defjvp
def _stl_log_q_jvp(primals, tangents):
    flow, intermediates, value = primals  # flow and intermediates come in with their gradients stopped
    score = _score(flow, intermediates[0][0])
    return _stl_log_q(flow, intermediates, value), jnp.sum(score * tangents[2], -1)


def _score(flow, u):
    """``grad_z log q`` at ``z = T(u)``, for ``u`` of shape (..., D)."""
    transform, base_dist = flow.bound_transform(), flow.base_dist
    batch, dim = u.shape[:-1], u.shape[-1]

    def z_and_log_q(v):
        z, log_det = forward_and_log_det(transform, v)
        return z, base_dist.log_prob(v) - log_det

    def one(v):
        # one forward-mode pass (D JVPs): J[i, j] = dz_i / du_j and grad_u log q together
        jac, grad_u = jax.jacfwd(z_and_log_q)(v)
        return jnp.linalg.solve(jac.T, grad_u)

    score = jax.vmap(one)(u.reshape((int(np.prod(batch, dtype=int)), dim)))
    return score.reshape(batch + (dim,))


def pathwise(flow: nf_ppl.Flow) -> PathwiseFlow:
    """The same flow (same pytree leaves) as a :class:`PathwiseFlow`, for sticking-the-landing gradients."""
    if not isinstance(flow, nf_ppl.Flow):
        raise TypeError(f"flow must be an nf_ppl.Flow; got {type(flow).__name__}")
    children, aux = flow.tree_flatten()
    return PathwiseFlow.tree_unflatten(aux, children)
