"""MADE's autoregressive masks, checked by autodiff: d out_i / d x_j == 0 unless j precedes i."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layer_cases import perturb
from nf_ppl import MADE
from nf_ppl.nn import made_degrees


def _dependency(made, x, context=None):
    """|d out[k, i] / d x_j| summed over k and a few points: shape (dim, dim)."""
    jac = jax.vmap(jax.jacfwd(lambda v: made(v, context)))(x)  # (n, k, i, j)
    return np.asarray(jnp.abs(jac).sum(axis=(0, 1)))


@pytest.mark.parametrize("ordering", ["natural", "reversed", "random", (2, 0, 4, 1, 3)])
@pytest.mark.parametrize("hidden_dims", [(), (8,), (6, 7, 9)])
@pytest.mark.parametrize("num_params", [1, 3])
def test_made_depends_exactly_on_predecessors(ordering, hidden_dims, num_params):
    dim = 5
    made = MADE.init(jax.random.PRNGKey(0), dim, hidden_dims, num_params, ordering=ordering)
    made = perturb(made, jax.random.PRNGKey(1), 0.5)
    x = jax.random.normal(jax.random.PRNGKey(2), (4, dim))
    dep = _dependency(made, x)
    position = {v: p for p, v in enumerate(made.ordering)}
    for i in range(dim):
        for j in range(dim):
            if position[j] < position[i]:
                assert dep[i, j] > 0, f"output {i} must see its predecessor {j}"
            else:
                assert dep[i, j] == 0, f"output {i} must not see input {j}"
    if isinstance(ordering, tuple):
        assert made.ordering == ordering


def test_made_context_reaches_every_output():
    made = perturb(MADE.init(jax.random.PRNGKey(0), 4, (8, 8), 2, context_dim=3), jax.random.PRNGKey(1), 0.5)
    x = jax.random.normal(jax.random.PRNGKey(2), (4,))
    ctx = jax.random.normal(jax.random.PRNGKey(3), (3,))
    jac = jax.jacfwd(lambda c: made(x, c))(ctx)  # (2, 4, 3)
    assert np.all(np.abs(np.asarray(jac)).sum(axis=(0, 2)) > 0)
    assert made(x, ctx).shape == (2, 4)


def test_degrees_cover_every_predecessor_count():
    degrees = made_degrees(4, (3, 5), (0, 1, 2, 3))
    assert degrees[0] == (1, 2, 3, 4)
    assert set(degrees[1]) == {1, 2, 3} and set(degrees[2]) == {1, 2, 3}


def test_made_with_one_dimension_is_a_constant_map():
    made = perturb(MADE.init(jax.random.PRNGKey(0), 1, (4,), 2), jax.random.PRNGKey(1), 0.5)
    out = made(jnp.array([[0.0], [5.0]]))
    np.testing.assert_allclose(out[0], out[1])
