"""Goodness of fit of sampled outcomes against an exact law (the samplers' tests)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def chi2_pvalue(counts, law):
    """Chi-square p-value of counts against law, the outcomes expected < 20 times pooled
    (into the last kept bin when the pool expects < 1)."""
    expected = law * counts.sum()
    keep = expected >= 20
    obs, exp_ = counts[keep].astype(float), expected[keep]
    rest_o, rest_e = counts[~keep].sum(), expected[~keep].sum()
    if rest_e >= 1:
        obs, exp_ = np.append(obs, rest_o), np.append(exp_, rest_e)
    else:
        obs[-1] += rest_o
        exp_[-1] += rest_e
    assert len(obs) > 1
    return stats.chisquare(obs, exp_ * obs.sum() / exp_.sum()).pvalue
