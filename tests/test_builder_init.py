"""Every builder starts well scaled: close to its standard-normal base, for any width and depth."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy import stats

import inference

GRID = [(1, (8,)), (4, (16, 16)), (10, (32, 32))]  # the shallowest, a middle and the deepest/widest start
DIM = 3


def _cases():
    for name in sorted(inference.builders()):
        for layers, hidden in GRID:
            yield pytest.param(name, layers, hidden, id=f"{name}-L{layers}-H{'x'.join(map(str, hidden))}")


@pytest.mark.parametrize("name,layers,hidden", list(_cases()))
def test_initial_flow_is_close_to_its_base(name, layers, hidden):
    flow = inference.builders()[name](jax.random.PRNGKey(0), DIM, num_layers=layers, hidden_dims=hidden)
    z = np.random.default_rng(2).normal(size=(1000, DIM))
    draws, log_p = jax.jit(lambda f, k, v: (f.sample(k, (1000,)), f.log_prob(v)))(flow, jax.random.PRNGKey(1), z)
    sd = np.asarray(draws).std(0)
    assert np.all((0.5 <= sd) & (sd <= 2.0)), f"per-coordinate sd of the initial flow's draws: {sd}"
    gap = float(np.mean(np.asarray(log_p) - stats.norm.logpdf(z).sum(-1))) / DIM
    assert abs(gap) < 0.25, f"mean log-density at base draws differs from the base's by {gap:.3f} nats per dimension"
