"""Sequence models: exact log_prob, sampling and decoding on tiny vocabularies.

Vocabulary {0, 1, 2} with EOS = 0 and max_len L = 4: the complete sequences are
y_1..y_J with J <= 4, y_J = EOS and y_j in {1, 2} before it (1 + 2 + 4 + 8 = 15).
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nf_ppl import encoders as enc
from nf_ppl.models.sequence import (
    SequenceModel,
    pad_sequences,
    sequence_lengths,
    top_k_filter,
    top_p_filter,
)

DTYPE = jnp.result_type(float)  # the JAX default float (float32 unless x64 is on)


from stats_checks import chi2_pvalue  # noqa: E402


V, L, EOS = 3, 4, 0
KINDS = ["gru", "lstm", "transformer"]
CTX = np.array([[0.5, -1.0], [1.5, 0.3]], DTYPE)


def all_sequences(vocab=V, max_len=L, eos=EOS):
    out = []
    symbols = [s for s in range(vocab) if s != eos]
    for j in range(1, max_len + 1):
        for body in itertools.product(symbols, repeat=j - 1):
            out.append(list(body) + [eos] * (max_len - j + 1))
    return np.array(out)


SEQS = all_sequences()  # (15, L)


_MODELS = {}


def model(kind, conditional=True):
    """Tiny models, built once (conditional ones bound to a batch of 2 contexts)."""
    if (kind, conditional) not in _MODELS:
        m = SequenceModel.init(
            jax.random.PRNGKey(KINDS.index(kind)), V, L, encoder=kind, eos_id=EOS, embed_dim=8,
            hidden_dim=8 if kind != "transformer" else 16, num_layers=2 if kind == "lstm" else 1,
            num_heads=2, context_dim=2 if conditional else 0,
        )
        # larger output weights so that the distributions are far from uniform
        params = dict(m.params, out_W=3.0 * m.params["out_W"])
        m = SequenceModel(params, encoder=kind, max_len=L, eos_id=EOS,
                          num_heads=2 if kind == "transformer" else 1)
        _MODELS[kind, conditional] = m.condition(CTX) if conditional else m
    return _MODELS[kind, conditional]


# ------------------------------------------------------- numpy reference model
def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _ln(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * g + b


def _np_transformer(p, xs, heads):
    t, d = xs.shape
    dh = d // heads
    x = xs
    for lay in p["layers"]:
        u = _ln(x, lay["ln1_g"], lay["ln1_b"])
        out = np.zeros_like(x)
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            q, k, v = (u @ lay["Wq"])[:, sl], (u @ lay["Wk"])[:, sl], (u @ lay["Wv"])[:, sl]
            s = q @ k.T / math.sqrt(dh)
            s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
            a = np.exp(s - s.max(-1, keepdims=True))
            out[:, sl] = (a / a.sum(-1, keepdims=True)) @ v
        x = x + out @ lay["Wo"]
        hid = np.maximum(_ln(x, lay["ln2_g"], lay["ln2_b"]) @ lay["W1"] + lay["b1"], 0.0)
        x = x + hid @ lay["W2"] + lay["b2"]
    return _ln(x, p["lnf_g"], p["lnf_b"])


def ref_step_log_probs(m, tokens, ctx=None):
    """Conditionals log p(. | y_<j, x) for j = 0..len(tokens)-1, computed explicitly
    one step at a time in float64 (recurrent: carried state; attention: recomputed
    over the prefix only). The last position L-1 is the forced EOS."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), m.params)
    inputs = [m.bos_id] + list(tokens[:-1])
    c = 0.0 if ctx is None else np.asarray(ctx, np.float64) @ p["ctx_W"] + p["ctx_b"]
    out = []
    if m.encoder in ("gru", "lstm"):
        state = [None] * len(p["encoder"])
        for u in inputs:
            x = p["embed"][u] + c
            for i, lay in enumerate(p["encoder"]):
                H = lay["Wh"].shape[0]
                if m.encoder == "gru":
                    h = np.zeros(H) if state[i] is None else state[i]
                    gx, gh = x @ lay["Wx"] + lay["bx"], h @ lay["Wh"] + lay["bh"]
                    r = _sig(gx[:H] + gh[:H])
                    z = _sig(gx[H:2 * H] + gh[H:2 * H])
                    n = np.tanh(gx[2 * H:] + r * gh[2 * H:])
                    h = (1 - z) * n + z * h
                    state[i] = h
                    x = h
                else:
                    h, cc = (np.zeros(H), np.zeros(H)) if state[i] is None else state[i]
                    g = x @ lay["Wx"] + h @ lay["Wh"] + lay["b"]
                    cc = _sig(g[H:2 * H]) * cc + _sig(g[:H]) * np.tanh(g[2 * H:3 * H])
                    h = _sig(g[3 * H:]) * np.tanh(cc)
                    state[i] = (h, cc)
                    x = h
            out.append(_log_softmax(x @ p["out_W"] + p["out_b"]))
    else:
        d = p["embed"].shape[1]
        pos = np.arange(L)[:, None] / 10000.0 ** (2 * (np.arange(d) // 2) / d)
        pe = np.where(np.arange(d) % 2 == 0, np.sin(pos), np.cos(pos))
        for j in range(len(inputs)):
            xs = p["embed"][inputs[: j + 1]] + c + pe[: j + 1]
            h = _np_transformer(p["encoder"], xs, 2)[-1]
            out.append(_log_softmax(h @ p["out_W"] + p["out_b"]))
    for j in range(len(out)):
        if j == L - 1:
            out[j] = np.where(np.arange(V) == EOS, 0.0, -np.inf)
    return out


def ref_log_prob(m, seq, ctx=None):
    seq = list(seq)
    J = seq.index(EOS) + 1
    lps = ref_step_log_probs(m, seq[:J], ctx)
    return sum(lps[j][seq[j]] for j in range(J))


def seq_index(rows):
    """Index of each padded row in SEQS."""
    lookup = {tuple(s): i for i, s in enumerate(SEQS)}
    return np.array([lookup[tuple(int(t) for t in r)] for r in rows])


# ------------------------------------------------------------------- density
@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_matches_explicit_conditionals_and_sums_to_one(kind):
    m = model(kind)
    lp = np.asarray(m.log_prob(SEQS[:, None, :]))  # (15, 2)
    assert lp.shape == (len(SEQS), 2)
    np.testing.assert_allclose(np.exp(lp).sum(0), 1.0, atol=1e-5)
    for b in range(2):
        ref = [ref_log_prob(m, s, CTX[b]) for s in SEQS]
        np.testing.assert_allclose(lp[:, b], ref, atol=2e-5, rtol=1e-5)
    # positions after the first EOS are padding: junk there changes nothing
    junk = SEQS.copy()
    after = (np.cumsum(junk == EOS, -1) - (junk == EOS)) > 0
    junk[after] = np.random.default_rng(0).integers(0, V, after.sum())
    np.testing.assert_allclose(m.log_prob(junk[:, None, :]), lp, atol=1e-6)


def test_unconditional_model_sums_to_one_and_accepts_short_width():
    m = model("lstm", conditional=False)
    assert m.batch_shape == () and m.event_shape == (L,)
    lp = np.asarray(m.log_prob(SEQS))
    np.testing.assert_allclose(np.exp(lp).sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(lp, [ref_log_prob(m, s) for s in SEQS], atol=2e-5)
    # rows of width L' < L are padded with EOS
    short = np.array([[1, 0], [2, 0]])
    np.testing.assert_allclose(m.log_prob(short), lp[seq_index([[1, 0, 0, 0], [2, 0, 0, 0]])], atol=1e-6)
    # with matching lengths (EOS included)
    np.testing.assert_allclose(m.log_prob(SEQS, lengths=sequence_lengths(SEQS)), lp, atol=1e-6)
    assert bool(m.support(SEQS).all())
    assert not m.support(np.array([[1, 1, 1, 1], [3, 0, 0, 0]])).any()


def test_bits_per_dim():
    m = model("gru")
    lp = m.log_prob(SEQS[:, None, :])
    J = (SEQS == EOS).argmax(-1) + 1
    np.testing.assert_allclose(m.bits_per_dim(SEQS[:, None, :]), -lp / (J[:, None] * np.log(2)), rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_causal_property_by_perturbation(kind):
    """Changing y_k leaves the conditionals at positions <= k unchanged."""
    m = model(kind)
    base = np.array([[1, 2, 1, 0]])
    lp0 = np.asarray(m.conditional_log_probs(base[:, None, :]))
    for k in range(L - 1):
        other = base.copy()
        other[0, k] = 2 if base[0, k] == 1 else 1
        lp1 = np.asarray(m.conditional_log_probs(other[:, None, :]))
        np.testing.assert_allclose(lp1[..., : k + 1, :], lp0[..., : k + 1, :], atol=1e-6)
        if k + 1 < L - 1:  # ... and does change a later (non-forced) conditional
            assert np.abs(lp1[..., k + 1 : L - 1, :] - lp0[..., k + 1 : L - 1, :]).max() > 1e-6


def test_causal_attention_by_autodiff():
    p = enc.init_causal_transformer(jax.random.PRNGKey(0), 4, num_layers=2, num_heads=2, mlp_dim=8)
    xs = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)), DTYPE)
    jac = jax.jit(jax.jacobian(lambda x: enc.causal_transformer_apply(p, x, 2)))(xs)  # (5, 4, 5, 4)
    dep = np.abs(np.asarray(jac)).sum(axis=(1, 3))  # (t_out, t_in)
    assert np.all(dep[np.triu_indices(5, 1)] == 0.0)
    assert np.all(dep[np.tril_indices(5)] > 0.0)


def test_grad_and_jit_through_the_model():
    m = model("gru")
    leaves, treedef = jax.tree_util.tree_flatten(m)
    assert all(jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in leaves)
    y = SEQS[:6, None, :]
    # (the CRF test runs jax.grad eagerly; here jit(grad) keeps the test fast)
    g = jax.jit(jax.grad(lambda mm: -mm.log_prob(y).mean()))(m)
    assert jax.tree_util.tree_structure(g) == treedef
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(g))
    assert float(jnp.abs(g.params["out_W"]).sum()) > 0


# ------------------------------------------------------------------ sampling
@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_sample_frequencies_chi_square(kind):
    m = model(kind)
    n = 3000
    draws = np.asarray(m.sample(jax.random.PRNGKey(1), (n,)))
    assert draws.shape == (n, 2, L)
    probs = np.exp(np.asarray(m.log_prob(SEQS[:, None, :])))
    for b in range(2):
        counts = np.bincount(seq_index(draws[:, b]), minlength=len(SEQS))
        assert chi2_pvalue(counts, probs[:, b]) > 1e-3


def greedy_reference(m, ctx):
    seq = []
    for j in range(L):
        lps = ref_step_log_probs(m, seq + [EOS], ctx)
        tok = int(np.argmax(lps[j]))
        seq.append(tok)
        if tok == EOS:
            break
    return seq + [EOS] * (L - len(seq))


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_greedy_and_beam_search(kind):
    m = model(kind)
    g, g_lp = map(np.asarray, m.greedy())
    lp_all = np.asarray(m.log_prob(SEQS[:, None, :]))
    for b in range(2):
        np.testing.assert_array_equal(g[b], greedy_reference(m, CTX[b]))
        np.testing.assert_allclose(g_lp[b], lp_all[seq_index(g[b : b + 1])[0], b], atol=1e-5)
    if kind == "gru":  # beam width 1 == greedy
        b1, s1 = map(np.asarray, m.beam_search(1))
        assert b1.shape == (2, 1, L)
        np.testing.assert_array_equal(b1[:, 0], g)
        np.testing.assert_allclose(s1[:, 0], g_lp, atol=1e-5)
    # a beam as wide as the number of sequences is exact: best = argmax of enumeration
    bw, sw = map(np.asarray, m.beam_search(len(SEQS)))
    for b in range(2):
        np.testing.assert_array_equal(bw[b, 0], SEQS[np.argmax(lp_all[:, b])])
        # all 15 sequences found, sorted by log-prob, with exact scores
        np.testing.assert_allclose(np.sort(lp_all[:, b])[::-1], sw[b], atol=1e-5)
        np.testing.assert_allclose(lp_all[seq_index(bw[b]), b], sw[b], atol=1e-5)


def test_sampling_limits_recover_greedy():
    m = model("gru")
    g = np.asarray(m.greedy()[0])
    key = jax.random.PRNGKey(3)
    s = m.sample(key, (50,), top_k=1)
    assert np.all(np.asarray(s) == np.asarray(g)[None])
    s = m.sample(key, (50,), temperature=1e-3)
    assert np.all(np.asarray(s) == np.asarray(g)[None])
    s = m.sample(key, (50,), top_p=1e-6)
    assert np.all(np.asarray(s) == np.asarray(g)[None])
    # sampled log-probs are those of the unfiltered model
    s, lp = map(np.asarray, m.sample_with_log_prob(key, (50,), top_k=2))
    lp_all = np.asarray(m.log_prob(SEQS[:, None, :]))
    for b in range(2):
        np.testing.assert_allclose(lp[:, b], lp_all[seq_index(s[:, b]), b], atol=1e-5)


def test_top_p_and_top_k_filters():
    probs = np.array([0.15, 0.5, 0.05, 0.3])
    logits = jnp.asarray(np.log(probs), DTYPE)
    kept = lambda f: set(np.flatnonzero(np.isfinite(np.asarray(f))).tolist())
    assert kept(top_p_filter(logits, 0.5)) == {1}
    assert kept(top_p_filter(logits, 0.6)) == {1, 3}
    assert kept(top_p_filter(logits, 0.8)) == {1, 3}
    assert kept(top_p_filter(logits, 0.81)) == {0, 1, 3}
    assert kept(top_p_filter(logits, 0.96)) == {0, 1, 2, 3}
    assert kept(top_p_filter(logits, 1.0)) == {0, 1, 2, 3}
    # smallest set with mass >= p, for every p on a grid
    order = np.argsort(-probs)
    for p in np.linspace(0.01, 1.0, 37):
        k = int(np.searchsorted(np.cumsum(probs[order]), p - 1e-7) + 1)
        assert kept(top_p_filter(logits, float(p))) == set(order[:k].tolist())
    assert kept(top_k_filter(logits, 2)) == {1, 3}
    assert kept(top_k_filter(logits, 1)) == {1}
    # kept logits are unchanged
    np.testing.assert_allclose(np.asarray(top_p_filter(logits, 0.6))[1], np.log(probs[1]), rtol=1e-6)


def test_mbr_decoding_maximises_average_utility():
    m = model("gru")
    key = jax.random.PRNGKey(5)

    def accuracy(a, b):  # a JAX utility: fraction of matching positions
        return jnp.mean((a == b).astype(DTYPE))

    res = jax.tree.map(np.asarray, m.mbr_decode(key, accuracy, num_samples=50))
    samples = res.samples
    assert samples.shape == (50, 2, L)
    np.testing.assert_array_equal(samples, m.sample(key, (50,)))
    for b in range(2):
        cand = samples[:, b]
        U = (cand[:, None, :] == cand[None, :, :]).mean(-1).mean(1)
        np.testing.assert_allclose(res.expected_utilities[:, b], U, atol=1e-6)
        assert res.expected_utility[b] == pytest.approx(U.max(), abs=1e-6)
        np.testing.assert_array_equal(res.sequence[b], cand[np.argmax(U)])
    # a Python (non-JAX) utility and a user candidate set
    cands = SEQS[:5]

    def py_utility(a, b):  # numpy inputs, Python float out
        return float(np.argmax(a == EOS) == np.argmax(b == EOS))

    res2 = m.mbr_decode(key, py_utility, num_samples=50, candidates=cands, vectorized=False)
    res2 = jax.tree.map(np.asarray, res2)
    for b in range(2):
        la = (cands == EOS).argmax(-1)
        lb = (samples[:, b] == EOS).argmax(-1)
        U = (la[:, None] == lb[None, :]).mean(1)
        np.testing.assert_allclose(res2.expected_utilities[:, b], U, atol=1e-6)
        np.testing.assert_array_equal(res2.sequence[b], cands[np.argmax(U)])


def test_pad_sequences_and_lengths():
    y = pad_sequences([[1, 2], [], [2, 2, 1]], max_len=4, eos_id=0)
    np.testing.assert_array_equal(y, [[1, 2, 0, 0], [0, 0, 0, 0], [2, 2, 1, 0]])
    np.testing.assert_array_equal(sequence_lengths(y), [3, 1, 4])
    with pytest.raises(ValueError, match="longer than max_len=4"):
        pad_sequences([[1, 2, 1, 2]], max_len=4)


# ----------------------------------------------------------------- bad input
def test_bad_inputs_raise():
    m = model("gru")
    u = model("lstm", conditional=False)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, V=3\)"):
        u.log_prob(np.array([[1, 3, 0, 0]]))
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, V=3\)"):
        u.log_prob(np.array([[-1, 0, 0, 0]]))
    with pytest.raises(ValueError, match="longer than the declared maximum max_len=4"):
        u.log_prob(np.array([[1, 1, 1, 1, 0]]))
    with pytest.raises(ValueError, match="no end-of-sequence symbol eos_id=0"):
        u.log_prob(np.array([[1, 1, 2, 1]]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        u.log_prob(np.array([[1, 0, 0, 0], [1, 2, 0, 0]]), lengths=np.array([2, 3, 1]))
    with pytest.raises(ValueError, match="lengths do not match the padded batch"):
        u.log_prob(np.array([[1, 0, 0, 0], [1, 2, 0, 0]]), lengths=np.array([2, 2]))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., context_dim=2\)"):
        m.condition(np.zeros((2, 3), DTYPE))
    with pytest.raises(ValueError, match="needs a context"):
        SequenceModel(m.params, encoder="gru", max_len=L).log_prob(SEQS)
    with pytest.raises(ValueError, match="unconditional"):
        u.condition(np.zeros((2,), DTYPE))
    key = jax.random.PRNGKey(0)
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"top_p must lie in \(0, 1\]"):
            m.sample(key, top_p=p)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        m.sample(key, top_k=0)
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            m.sample(key, temperature=t)
    for w in (0, -2, 1.5):
        with pytest.raises(ValueError, match="beam_width must be an integer >= 1"):
            m.beam_search(w)
    with pytest.raises(ValueError, match="encoder must be one of"):
        SequenceModel.init(key, V, L, encoder="rnn")
    with pytest.raises(ValueError, match=r"eos_id must be an integer in \[0, V=3\)"):
        SequenceModel.init(key, V, L, eos_id=3)
