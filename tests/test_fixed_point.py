"""The sequential direction of autoregressive layers stops at its fixed point: the answer of ``d`` sweeps
(to rounding); exact gradients of every order through the implicit-function theorem; fewer sweeps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from layer_cases import perturb
from nf_ppl import MADE
from nf_ppl.fixed_point import FIXED_SWEEPS_UP_TO, SWEEP_RTOL, sweep_until_fixed, triangular_fixed_point
from nf_ppl.layers import MaskedAffineAutoregressive, MaskedAutoregressive
from nf_ppl.layers.transformers import DeepSigmoid

D = 9  # above FIXED_SWEEPS_UP_TO: the early-stopping path


def _layer(mode, dtype=jnp.float64, dim=D, scale=0.5, context_dim=0):
    made = perturb(MADE.init(jax.random.PRNGKey(0), dim, (16,), 2, context_dim=context_dim, dtype=dtype),
                   jax.random.PRNGKey(1), scale)
    return MaskedAffineAutoregressive.from_made(made, mode)


def _sweep_fn(layer, w):
    def sweep(v):
        params = layer.conditioner(v)
        out, log_d, _ = layer.transformer.inverse_with_info(w, params)
        return out, jnp.sum(log_d, axis=-1)
    return sweep


def _d_sweeps(layer, w):
    """The reference: exactly ``d`` sweeps from zero, unrolled (differentiable by plain autodiff)."""
    sweep, v = _sweep_fn(layer, w), jnp.zeros_like(w)
    for _ in range(layer.event_size):
        v, log_d = sweep(v)
    return v, log_d


def test_the_early_stop_gives_the_answer_of_d_sweeps():
    assert D > FIXED_SWEEPS_UP_TO
    iaf = _layer("iaf", jnp.float32)
    w = jax.random.normal(jax.random.PRNGKey(2), (64, D), jnp.float32)
    want_v, want_ld = jax.jit(_d_sweeps)(iaf, w)
    got_v, got_ld, _ = jax.jit(lambda layer, w: layer._g_inverse(w))(iaf, w)
    # two compiled programs may round a sweep differently: the last bit or two, not more
    np.testing.assert_allclose(got_v, want_v, rtol=4e-7, atol=1e-6)
    np.testing.assert_allclose(got_ld, want_ld, rtol=4e-7, atol=1e-5)


def test_sweeps_stop_once_a_sweep_changes_nothing():
    calls = []

    def step(v):  # coordinate i reads v_<i; only coordinate 1 depends on coordinate 0, so 2 sweeps are exact
        jax.debug.callback(lambda: calls.append(1))
        return jnp.stack([jnp.ones(()), 2.0 * v[0]] + [v[0] * 0.0 + i for i in range(2, 40)])

    v = jax.jit(lambda v: sweep_until_fixed(step, v, 40))(jnp.zeros(40))
    np.testing.assert_array_equal(v, np.r_[1.0, 2.0, np.arange(2, 40)])
    assert len(calls) == 3  # two to get there, one to see that nothing changes (not 40)
    calls.clear()
    nan = jax.jit(lambda v: sweep_until_fixed(lambda v: v + jnp.nan, v, 7))(jnp.zeros(3))
    assert bool(jnp.all(jnp.isnan(nan))) and len(calls) == 0  # no callback there; a NaN row ends at max_sweeps


def test_sweeps_stop_once_no_value_moves_by_more_than_rounding():
    """A chain ``v_0 = 1``, ``v_i = 1 + v_{i-1} / 2`` (float32, 40 coordinates; fixed point ``2 - 2^-i``):
    from zero, sweep ``k`` leaves an error of ``2^-k`` on the later coordinates, so stopping when a
    sweep changes nothing bit for bit takes about 26 sweeps, and stopping at ``SWEEP_RTOL`` eps of
    the row's largest entry (2) takes a few fewer; both answers agree with the exact one to rounding."""
    dim, calls = 40, []

    def step(v):
        jax.debug.callback(lambda: calls.append(1))
        return jnp.concatenate([jnp.ones(1, v.dtype), 1 + 0.5 * v[:-1]])

    exact = 2.0 - 0.5 ** np.arange(dim)
    bitwise = jax.jit(lambda v: sweep_until_fixed(step, v, dim))(jnp.zeros(dim, jnp.float32))
    n_bitwise, calls[:] = len(calls), []
    ours = jax.jit(lambda v: triangular_fixed_point(lambda u: (step(u),), v, dim)[0])(jnp.zeros(dim, jnp.float32))
    n_ours = len(calls) - 2  # less the first sweep (outside the loop) and the differentiable one at the solution
    assert 20 <= n_bitwise <= 27 and n_ours <= n_bitwise - 3, (n_bitwise, n_ours)
    eps = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(bitwise, exact, rtol=0, atol=2 * eps)
    np.testing.assert_allclose(ours, exact, rtol=0, atol=SWEEP_RTOL * eps * 2 * 2)


def test_gradients_of_every_order_match_d_unrolled_sweeps(x64):
    iaf = _layer("iaf")
    w = jax.random.normal(jax.random.PRNGKey(3), (5, D))

    def loss(layer, w, solve):
        v, log_d = solve(layer, w)
        return jnp.sum(log_d) + jnp.sum(jnp.sin(v))

    ours = lambda layer, w: layer._g_inverse(w)[:2]
    got = jax.jit(jax.grad(loss, (0, 1)), static_argnums=2)(iaf, w, ours)
    want = jax.jit(jax.grad(loss, (0, 1)), static_argnums=2)(iaf, w, _d_sweeps)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    # second order (forward over reverse mode), in the input
    hess = lambda solve: jax.jit(jax.hessian(lambda u: loss(iaf, u[None], solve)))(w[0])
    np.testing.assert_allclose(hess(ours), hess(_d_sweeps), rtol=1e-8, atol=1e-10)


def test_maf_sampling_and_iaf_density_are_exact_inverses_with_autodiff_log_dets(x64):
    @jax.jit
    def run(maf, iaf, z):
        x, ld = maf.forward_and_log_det(z)  # the d-sweep direction of a MAF
        jac = jax.vmap(jax.jacrev(lambda u: maf.forward_and_log_det(u)[0]))(z)
        y, ld_iaf = iaf.forward_and_log_det(z)
        back, ld_inv = iaf.inverse_and_log_det(y)  # the d-sweep direction of an IAF
        rows = jax.vmap(lambda r: iaf.inverse_and_log_det(r)[0])(y)
        return x, ld, maf.inverse_and_log_det(x)[0], jnp.linalg.slogdet(jac)[1], back, ld_inv, ld_iaf, rows

    z = jax.random.normal(jax.random.PRNGKey(4), (6, D))
    x, ld, z_back, ld_autodiff, back, ld_inv, ld_iaf, rows = run(_layer("maf"), _layer("iaf"), z)
    np.testing.assert_allclose(z_back, z, atol=1e-10)
    np.testing.assert_allclose(ld, ld_autodiff, atol=1e-9)
    np.testing.assert_allclose(back, z, atol=1e-10)
    np.testing.assert_allclose(ld_inv, ld_iaf, atol=1e-10)  # log|det J_f| at x, either way
    # vmap over rows agrees with the batched call (the batch's loop runs until every row is settled)
    np.testing.assert_allclose(rows, back, rtol=1e-13, atol=1e-13)


def test_a_context_batch_broadcasts_through_the_solve(x64):
    maf = _layer("maf", context_dim=2).condition(jax.random.normal(jax.random.PRNGKey(5), (4, 2)))
    z = jax.random.normal(jax.random.PRNGKey(6), (D,))  # one input, four contexts
    x, ld = maf.forward_and_log_det(z)
    assert x.shape == (4, D) and ld.shape == (4,)
    np.testing.assert_allclose(maf.inverse_and_log_det(x)[0], jnp.broadcast_to(z, (4, D)), atol=1e-10)


def test_a_numerical_transformer_solves_inside_the_sweeps(x64):
    made = perturb(MADE.init(jax.random.PRNGKey(7), 6, (12,), DeepSigmoid(4).num_params, dtype=jnp.float64),
                   jax.random.PRNGKey(8), 0.3)

    @jax.jit
    def run(maf, z):
        x, ld = maf.forward_and_log_det(z)  # d sweeps of root solves, stopped at the fixed point
        jac = jax.vmap(jax.jacrev(lambda u: maf.forward_and_log_det(u)[0]))(z)
        return maf.inverse_and_log_det(x)[0], ld, jnp.linalg.slogdet(jac)[1]

    z = jax.random.normal(jax.random.PRNGKey(9), (5, 6))
    z_back, ld, ld_autodiff = run(MaskedAutoregressive(made, DeepSigmoid(4), mode="maf"), z)
    np.testing.assert_allclose(z_back, z, atol=1e-8)
    np.testing.assert_allclose(ld, ld_autodiff, atol=1e-7)


def test_few_coordinates_run_a_plain_loop_of_d_sweeps(x64):
    dim = FIXED_SWEEPS_UP_TO
    iaf = _layer("iaf", dim=dim)
    w = jax.random.normal(jax.random.PRNGKey(10), (3, dim))
    sweep = _sweep_fn(iaf, w)
    got = triangular_fixed_point(sweep, jnp.zeros_like(w), dim)
    want = _d_sweeps(iaf, w)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-13, atol=1e-13)
    g = jax.grad(lambda l: jnp.sum(triangular_fixed_point(_sweep_fn(l, w), jnp.zeros_like(w), dim)[1]))(iaf)
    g_ref = jax.grad(lambda l: jnp.sum(_d_sweeps(l, w)[1]))(iaf)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def _broadcasting_sweep_fn(layer, w):
    """A sweep whose input may lack the batch of ``w`` (its conditioner's output is broadcast)."""
    def sweep(v):
        params = jnp.broadcast_to(layer.conditioner(v), w.shape[:-1] + (2, w.shape[-1]))
        out, log_d, _ = layer.transformer.inverse_with_info(w, params)
        return out, jnp.sum(log_d, axis=-1)
    return sweep


def test_a_start_without_the_batch_gives_the_same_answer_and_gradients(x64):
    """One zero vector as the start for every row (the first sweep then runs once): the values and the
    gradients in the parameters are those of ``d`` sweeps from a batch of zeros, on both paths."""
    for dim in (FIXED_SWEEPS_UP_TO, D):
        iaf = _layer("iaf", dim=dim)
        w = jax.random.normal(jax.random.PRNGKey(11), (4, dim))
        run = lambda l: triangular_fixed_point(_broadcasting_sweep_fn(l, w), jnp.zeros(dim), dim)  # noqa: E731
        got = jax.jit(run)(iaf)
        want = _d_sweeps(iaf, w)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-13)
        g = jax.jit(jax.grad(lambda l: jnp.sum(run(l)[1]) + jnp.sum(run(l)[0] ** 2)))(iaf)
        g_ref = jax.grad(lambda l: jnp.sum(_d_sweeps(l, w)[1]) + jnp.sum(_d_sweeps(l, w)[0] ** 2))(iaf)
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_ref)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_the_layers_first_sweep_runs_its_conditioner_once_for_all_rows(monkeypatch):
    """The first sweep of a layer's sequential direction reads zeros: its conditioner sees one vector
    of shape ``(d,)``, every later sweep the batch (shapes recorded while tracing)."""
    seen = []
    original = MaskedAutoregressive.conditioner

    def recording(self, v):
        seen.append(v.shape)
        return original(self, v)

    monkeypatch.setattr(MaskedAutoregressive, "conditioner", recording)
    iaf = _layer("iaf", jnp.float32)
    w = jax.random.normal(jax.random.PRNGKey(12), (6, D))
    jax.make_jaxpr(lambda layer: layer.inverse_and_log_det(w))(iaf)
    assert seen[0] == (D,) and set(seen[1:]) == {(6, D)}, seen
