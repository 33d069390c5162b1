"""Linear-chain CRF against brute-force enumeration on tiny label spaces."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp as np_logsumexp

from nf_ppl.models.crf import LinearChainCRF, crf_forward

DTYPE = jnp.result_type(float)  # the JAX default float (float32 unless x64 is on)


from stats_checks import chi2_pvalue  # noqa: E402


# ---------------------------------------------------------------- reference
def brute_scores(emissions, params, length=None):
    """Explicit scores s(x, y) of every labelling of the first ``length`` positions.

    Returns (labellings (V**length, length), scores (V**length,)) in float64.
    """
    e = np.asarray(emissions, np.float64)
    T = np.asarray(params["transitions"], np.float64)
    a = np.asarray(params["start"], np.float64)
    b = np.asarray(params["end"], np.float64)
    n = e.shape[0] if length is None else length
    v = T.shape[0]
    ys = np.array(list(itertools.product(range(v), repeat=n)))
    scores = []
    for y in ys:
        s = a[y[0]] + b[y[-1]] + sum(e[i, y[i]] for i in range(n))
        s += sum(T[y[i - 1], y[i]] for i in range(1, n))
        scores.append(s)
    return ys, np.array(scores)


def make_crf(seed, batch, n, v, scale=1.0, **kw):
    """Random CRF; the direct logsumexp forward unless asked (it compiles faster; the
    default matmul form is checked against enumeration and against it below)."""
    kw.setdefault("forward_method", "logsumexp")
    emissions = jnp.asarray(np.random.default_rng(seed).normal(size=batch + (n, v)), DTYPE)
    return LinearChainCRF.init(jax.random.PRNGKey(seed), v, emissions, scale=scale, **kw)


# ---------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "n,v,method", [(1, 2, "matmul"), (3, 2, "logsumexp"), (4, 3, "matmul"), (4, 3, "logsumexp")]
)
def test_log_partition_and_log_prob_match_enumeration(n, v, method):
    crf = make_crf(n * 10 + v, (2,), n, v, forward_method=method)
    ys = jnp.asarray(list(itertools.product(range(v), repeat=n)))
    lp = np.asarray(crf.log_prob(ys[:, None, :]))  # (V**N, 2)
    log_z = np.asarray(crf.log_partition())
    emissions = np.asarray(crf.emissions)
    for b in range(2):
        _, scores = brute_scores(emissions[b], crf.params)
        ref_z = np_logsumexp(scores)
        np.testing.assert_allclose(log_z[b], ref_z, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lp[:, b], scores - ref_z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.exp(np_logsumexp(lp, axis=0)), 1.0, atol=1e-5)


@pytest.mark.parametrize("n,v", [(2, 3), (4, 3)])
def test_viterbi_is_argmax_of_enumeration(n, v):
    crf = make_crf(7 + n, (3,), n, v, scale=1.5)
    labels, score = map(np.asarray, crf.viterbi())
    emissions = np.asarray(crf.emissions)
    for b in range(3):
        ys, scores = brute_scores(emissions[b], crf.params)
        np.testing.assert_array_equal(np.asarray(labels[b]), ys[np.argmax(scores)])
        np.testing.assert_allclose(score[b], scores.max(), rtol=1e-5, atol=1e-5)


def test_marginals_match_enumeration():
    crf = make_crf(3, (), 3, 3)
    ys, scores = brute_scores(crf.emissions, crf.params)
    p = np.exp(scores - np_logsumexp(scores))
    ref = np.zeros((3, 3))
    for y, py in zip(ys, p):
        ref[np.arange(3), y] += py
    np.testing.assert_allclose(np.asarray(crf.marginals()), ref, atol=1e-5)


def test_sample_frequencies_chi_square():
    n, v = 3, 3
    crf = make_crf(11, (), n, v)
    num = 20000
    draws = np.asarray(crf.sample(jax.random.PRNGKey(0), (num,)))
    assert draws.shape == (num, n)
    ys, scores = brute_scores(crf.emissions, crf.params)
    probs = np.exp(scores - np_logsumexp(scores))
    idx = (draws * v ** np.arange(n - 1, -1, -1)).sum(-1)  # same order as itertools.product
    counts = np.bincount(idx, minlength=v ** n)
    assert chi2_pvalue(counts, probs) > 1e-3


# ---------------------------------------------------------- variable length
def test_variable_lengths_match_enumeration_of_prefixes():
    n, v = 4, 2
    lengths = np.array([1, 2, 4])
    crf = make_crf(5, (3,), n, v, forward_method="matmul").condition(
        np.random.default_rng(9).normal(size=(3, n, v)).astype(DTYPE), lengths=lengths
    )
    assert crf.batch_shape == (3,) and crf.event_shape == (n,)
    log_z = np.asarray(crf.log_partition())
    labels, best = map(np.asarray, crf.viterbi())
    emissions = np.asarray(crf.emissions)
    draws = np.asarray(crf.sample(jax.random.PRNGKey(1), (4000,)))
    # log_prob of every full-length labelling: the positions past L_b are padding and
    # are ignored, so row y must score as its prefix y[:L_b]
    full = np.array(list(itertools.product(range(v), repeat=n)))
    lp_full = np.asarray(crf.log_prob(full[:, None, :]))  # (V**N, 3)
    for b, L in enumerate(lengths):
        ys, scores = brute_scores(emissions[b], crf.params, length=L)
        ref_z = np_logsumexp(scores)
        np.testing.assert_allclose(log_z[b], ref_z, atol=1e-5)
        prefix_idx = (full[:, :L] * v ** np.arange(L - 1, -1, -1)).sum(-1)
        np.testing.assert_allclose(lp_full[:, b], (scores - ref_z)[prefix_idx], atol=1e-5)
        # viterbi
        np.testing.assert_array_equal(labels[b, :L], ys[np.argmax(scores)])
        np.testing.assert_array_equal(labels[b, L:], 0)
        np.testing.assert_allclose(best[b], scores.max(), atol=1e-5)
        # sampling: padding is 0, prefix frequencies match
        assert np.all(draws[:, b, L:] == 0)
        idx = (draws[:, b, :L] * v ** np.arange(L - 1, -1, -1)).sum(-1)
        counts = np.bincount(idx, minlength=v ** L)
        assert chi2_pvalue(counts, np.exp(scores - ref_z)) > 1e-3
    np.testing.assert_array_equal(np.asarray(crf.lengths), lengths)


def test_feature_form_equals_emission_form():
    key = jax.random.PRNGKey(2)
    x = np.random.default_rng(2).normal(size=(2, 3, 5)).astype(DTYPE)
    crf = LinearChainCRF.init(key, 3, x, num_features=5, scale=1.0)
    assert crf.params["W"].shape == (5, 3)
    direct = LinearChainCRF(
        {k: crf.params[k] for k in ("transitions", "start", "end")}, x @ crf.params["W"] + crf.params["b"]
    )
    ys = jnp.asarray([[0, 1, 2], [2, 2, 0]])
    np.testing.assert_allclose(crf.log_prob(ys), direct.log_prob(ys), atol=1e-6)


@jax.jit
def _both_forward_methods(e, t, mask):
    """log Z and d(sum log Z)/dT by the direct and the matmul forward algorithm."""
    a = jnp.zeros(t.shape[0], t.dtype)

    def z(t, method):
        return crf_forward(e, t, a, a, mask, method=method)

    z1, z2 = z(t, "logsumexp"), z(t, "matmul")
    g1 = jax.grad(lambda t: z(t, "logsumexp").sum())(t)
    g2 = jax.grad(lambda t: z(t, "matmul").sum())(t)
    return z1, z2, g1, g2


@pytest.mark.parametrize("scale", [3.0, 300.0])  # 300: the underflow fallback must kick in
def test_matmul_forward_matches_logsumexp_on_a_larger_problem(scale):
    rng = np.random.default_rng(4)
    e = jnp.asarray(scale * rng.normal(size=(4, 16, 8)), DTYPE)
    mask = jnp.asarray((np.arange(16) < np.array([16, 9, 3, 1])[:, None]).astype(DTYPE))
    t = jnp.asarray(scale * rng.normal(size=(8, 8)), DTYPE)
    z1, z2, g1, g2 = map(np.asarray, _both_forward_methods(e, t, mask))
    assert np.all(np.isfinite(z2)) and np.all(np.isfinite(g2))
    np.testing.assert_allclose(z1, z2, rtol=1e-5)
    np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- pytree
def test_grad_jit_and_pytree_roundtrip():
    crf = make_crf(0, (2,), 3, 3, lengths=np.array([3, 2]))
    y = jnp.asarray([[0, 1, 2], [1, 1, 0]])
    leaves, treedef = jax.tree_util.tree_flatten(crf)
    assert all(jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in leaves)
    g = jax.grad(lambda m: -m.log_prob(y).mean())(crf)
    assert jax.tree_util.tree_structure(g) == treedef
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(g))
    # d(-log p)/d(start) = p(y_1 = j) - 1[y_1 = j], averaged over the batch
    marg = np.asarray(crf.marginals())[:, 0, :]
    onehot = np.eye(3)[np.asarray(y)[:, 0]]
    np.testing.assert_allclose(g.params["start"], (marg - onehot).mean(0), atol=1e-5)
    # jit through the model object
    np.testing.assert_allclose(jax.jit(lambda m: m.log_prob(y))(crf), crf.log_prob(y), atol=1e-6)
    # vmap over the conditioning data only
    v = jax.vmap(lambda e: crf.condition(e).log_partition())(np.asarray(crf.context)[:, None])
    np.testing.assert_allclose(np.asarray(v)[:, 0], crf.condition(crf.context).log_partition(), atol=1e-6)


# ---------------------------------------------------------------- bad input
def test_bad_inputs_raise():
    crf = make_crf(0, (2,), 3, 3)
    with pytest.raises(ValueError, match=r"value labels must lie in \[0, V=3\)"):
        crf.log_prob(jnp.asarray([[0, 1, 3], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"value labels must lie in \[0, V=3\)"):
        crf.log_prob(jnp.asarray([[0, -1, 2], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"value must have shape \(\.\.\., N=3\)"):
        crf.log_prob(jnp.zeros((2, 4), int))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., N, V \(emission scores\)=3\)"):
        crf.condition(jnp.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, N=3\]"):
        crf.condition(crf.context, lengths=np.array([0, 3]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, N=3\]"):
        crf.condition(crf.context, lengths=np.array([4, 3]))
    with pytest.raises(ValueError, match="lengths of shape"):
        crf.condition(crf.context, lengths=np.array([1, 2, 3]))
    with pytest.raises(TypeError, match="lengths must be an integer array"):
        crf.condition(crf.context, lengths=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"params\['transitions'\] must have shape \(V, V\)"):
        LinearChainCRF({"transitions": jnp.zeros((3, 2)), "start": jnp.zeros(3), "end": jnp.zeros(3)},
                       jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="num_labels must be a positive integer"):
        LinearChainCRF.init(jax.random.PRNGKey(0), 0, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="forward_method must be one of"):
        make_crf(0, (), 2, 2, forward_method="fast")
    x = jnp.zeros((2, 3, 5))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., N, F \(features\)=4\)"):
        LinearChainCRF.init(jax.random.PRNGKey(0), 3, x, num_features=4)
