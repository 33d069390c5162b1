"""Statistical checks shared by the tests of discrete models."""

from __future__ import annotations

import numpy as np
from scipy import stats


def chi2_pvalue(counts, probs):
    """Chi-square goodness-of-fit p-value; cells with expected count < 5 are pooled into one
    cell (the chi-square approximation needs moderate expected counts)."""
    counts = np.asarray(counts, np.float64)
    probs = np.asarray(probs, np.float64)
    expected = probs / probs.sum() * counts.sum()
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return stats.chisquare(obs, exp).pvalue
