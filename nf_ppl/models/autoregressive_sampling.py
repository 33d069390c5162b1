"""Exact ancestral sampling of an :class:`~nf_ppl.models.AutoregressiveModel`: network passes from
all-zero draws, each fixing one more coordinate (Gaussian, Laplace, mixture and categorical
conditionals; mixture components and levels by the Gumbel-max trick), stopped when a pass changes
nothing (at most ``dim``; :mod:`nf_ppl.fixed_point`: the same draws as ``dim`` passes, to the last bit).
A mixin of the model."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..fixed_point import triangular_fixed_point


class AutoregressiveSampling:
    """``sample`` and ``sample_with_log_prob`` of an autoregressive model."""

    def _draw(self, out, noise):
        params = self._split(out)
        if self._family == "gaussian":
            loc, log_scale = params
            return loc + jnp.exp(log_scale) * noise[0]
        if self._family == "laplace":
            loc, log_scale = params
            return loc + jnp.exp(log_scale) * noise[0]
        if self._family == "mixture":
            log_w, loc, log_scale = params
            c = jnp.argmax(log_w + noise[1], axis=-2)[..., None, :]
            mu = jnp.take_along_axis(loc, c, axis=-2)[..., 0, :]
            ls = jnp.take_along_axis(log_scale, c, axis=-2)[..., 0, :]
            return mu + jnp.exp(ls) * noise[0]
        (logp,) = params
        return jnp.argmax(logp + noise[1], axis=-2).astype(jnp.int32)

    def _sample_core(self, key, sample_shape):
        shape = tuple(sample_shape) + tuple(self.batch_shape)
        dim, dt = self.dim, self._dtype
        k1, k2 = jax.random.split(key)
        if self._family == "gaussian":
            noise = (jax.random.normal(k1, shape + (dim,), dt), None)
        elif self._family == "laplace":
            noise = (jax.random.laplace(k1, shape + (dim,), dt), None)
        elif self._family == "mixture":
            noise = (jax.random.normal(k1, shape + (dim,), dt),
                     jax.random.gumbel(k2, shape + (self._num_components, dim), dt))
        else:
            noise = (None, jax.random.gumbel(k2, shape + (self._num_levels, dim), dt))
        m = self
        if self.made.context_dim:
            ctx = jnp.broadcast_to(self.context, shape + self.context.shape[-1:])
            m = self._replace(context=ctx, keep_context=False)
        y0 = jnp.zeros((dim,), jnp.int32 if self.is_discrete else dt)  # one start for all rows: the first pass runs once

        def sweep(y):
            out = m._network(y)
            return (m._draw(jnp.broadcast_to(out, shape + out.shape[-2:]), noise),)

        return triangular_fixed_point(sweep, y0, dim)[0]

    def sample(self, key, sample_shape=(), *, context=None):
        """Exact ancestral draws ``sample_shape + batch_shape + (dim,)`` in at most ``dim`` network passes
        (int32 levels for ``"categorical"``)."""
        m = self._resolved(context)
        return _sample_jit(m, key, tuple(sample_shape))

    def sample_with_log_prob(self, key, sample_shape=(), *, context=None):
        """Draws and their exact log-density."""
        m = self._resolved(context)
        y = m.sample(key, sample_shape)
        return y, _log_prob_jit(m, y)


# jitted entry points: the model is a pytree with hashable aux (the MADE degrees included),
# so each configuration/shape compiles once.
_log_prob_jit = jax.jit(lambda m, v: m._log_prob_core(v))
_sample_jit = jax.jit(lambda m, key, shape: m._sample_core(key, shape), static_argnums=(2,))
