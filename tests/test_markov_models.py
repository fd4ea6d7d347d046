"""The real-data Markov model ``english-letters`` (tiltlab.models, SPEC section 9): letter
bigrams of English estimated from wordfreq, Scrabble-score rewards."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import tiltlab
from tiltlab import reference as ref
from tiltlab.app import models

HAVE_WORDFREQ = importlib.util.find_spec("wordfreq") is not None
needs_wordfreq = pytest.mark.skipif(
    not HAVE_WORDFREQ, reason='english-letters needs wordfreq (the data extra): '
    'pip install "tiltlab[data]"')

LETTERS = "_abcdefghijklmnopqrstuvwxyz"


def _stationary(p):
    """Left Perron vector of a stochastic matrix, from numpy's eigendecomposition."""
    w, vecs = np.linalg.eig(p.T)
    mu = np.real(vecs[:, np.argmax(np.real(w))])
    return mu / mu.sum()


@pytest.fixture(scope="module")
def bigrams():
    if not HAVE_WORDFREQ:
        pytest.skip("english-letters needs wordfreq (the data extra)")
    return models.english_letter_bigrams()


@needs_wordfreq
def test_states_rewards_and_normalisation(bigrams):
    assert "".join(bigrams.names) == LETTERS and bigrams.n_states == 27
    p = np.exp(bigrams.transition_logits)
    assert p.shape == (27, 27)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    assert abs(np.exp(bigrams.initial_logits).sum() - 1.0) < 1e-14
    # smoothing 1e-4: every transition possible, none below 1e-4 / 27
    assert p.min() >= 1e-4 / 27 * (1 - 1e-12)
    score = dict(zip(LETTERS, bigrams.rewards.tolist(), strict=True))
    assert score["_"] == 0 and score["e"] == 1 and score["q"] == score["z"] == 10
    assert score["k"] == 5 and score["j"] == score["x"] == 8 and score["d"] == 2
    assert sum(score.values()) == 87               # the 26 Scrabble letter scores
    for arr in (bigrams.initial_logits, bigrams.transition_logits, bigrams.rewards,
                bigrams.names):
        assert not arr.flags.writeable
    assert bigrams.source["vocab"] == 20_000
    assert 0.9 < bigrams.source["frequency_share"] <= 1.0
    assert 15_000 < bigrams.source["words"] <= 20_000


@needs_wordfreq
def test_facts_of_english(bigrams):
    p = np.exp(bigrams.transition_logits)
    q, u, h, t, e = (LETTERS.index(c) for c in "quhte")
    assert np.argmax(p[q]) == u and p[q, u] > 0.9          # q is followed by u
    assert np.argmax(p[t]) == h                            # th
    assert p[0, 0] < 1e-5                                  # no empty words
    mu = _stationary(p)
    # stationary start: the first token follows the stationary law
    np.testing.assert_allclose(np.exp(bigrams.initial_logits), mu, rtol=1e-10)
    assert np.argmax(mu[1:]) + 1 == e                      # e is the most frequent letter
    assert mu[0] == mu.max() and 0.15 < mu[0] < 0.25       # mean word length 3 to 6
    assert mu[LETTERS.index("z")] < mu[LETTERS.index("q")] * 3 < mu[LETTERS.index("t")]
    # memory: the entropy rate is well below the entropy of the letter frequencies
    rate = -np.sum(mu[:, None] * p * np.log(p))
    unigram = -np.sum(mu * np.log(mu))
    assert rate < unigram - 0.3


@needs_wordfreq
def test_irreducible_aperiodic_and_markov_agrees_with_reference(bigrams):
    assert ref.markov_period(bigrams.transition_logits) == 1
    n = 12
    chain = models.english_letters(n)
    assert isinstance(chain, tiltlab.Markov) and chain.length == n and chain.n_states == 27
    lams = np.array([-0.7, 0.0, 0.3, 1.5])
    st = chain.tilt_stats(lams)
    for i, lam in enumerate(lams):
        want = ref.markov_tilt_stats(bigrams.initial_logits, bigrams.transition_logits,
                                     bigrams.rewards, n, lam)
        got = (st.log_partition[i], st.mean[i], st.variance[i], st.kl[i])
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
    # the stationary start makes every position alike: E R = n mu . r at lam = 0
    mu = np.exp(bigrams.initial_logits)
    assert st.mean[1] == pytest.approx(n * mu @ bigrams.rewards, rel=1e-12)
    assert st.log_partition[1] == 0.0 and st.kl[1] == 0.0
    # tilting towards high scores raises the mean
    assert st.mean[0] < st.mean[1] < st.mean[2] < st.mean[3]


@needs_wordfreq
def test_word_start_options_and_determinism(bigrams):
    word = models.english_letter_bigrams(start="word")
    np.testing.assert_array_equal(word.transition_logits, bigrams.transition_logits)
    np.testing.assert_array_equal(word.initial_logits, bigrams.transition_logits[0])
    assert word.initial_logits[0] < np.log(1e-5)           # a word does not start empty
    # the in-memory cache is only a cache: a fresh estimate is bitwise the same
    models._letter_counts.cache_clear()
    again = models.english_letter_bigrams()
    np.testing.assert_array_equal(again.transition_logits, bigrams.transition_logits)
    np.testing.assert_array_equal(again.initial_logits, bigrams.initial_logits)
    # more smoothing moves every probability by at most the smoothing weight
    smooth = models.english_letter_bigrams(smoothing=0.05)
    diff = np.abs(np.exp(smooth.transition_logits) - np.exp(bigrams.transition_logits))
    assert 0.0 < diff.max() <= 0.05
    assert np.exp(smooth.transition_logits).min() >= 0.05 / 27 * (1 - 1e-12)
    # a tiny vocabulary still gives a valid chain (unseen letters get the uniform row)
    tiny = models.english_letter_bigrams(vocab=5)
    assert tiny.source["words"] <= 5
    np.testing.assert_allclose(np.exp(tiny.transition_logits[LETTERS.index("z")]), 1 / 27,
                               rtol=1e-13)
    assert ref.markov_period(tiny.transition_logits) == 1
    assert models.MARKOV_MODELS["english-letters"] is models.english_letter_bigrams
    assert tiltlab.models.english_letters is models.english_letters


def test_bad_arguments():
    with pytest.raises(TypeError, match="vocab"):
        models.english_letter_bigrams(vocab=2.5)
    with pytest.raises(ValueError, match="vocab"):
        models.english_letter_bigrams(vocab=0)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="smoothing"):
            models.english_letter_bigrams(smoothing=bad)
    with pytest.raises(ValueError, match="smoothing"):
        models.english_letter_bigrams(smoothing=float("nan"))
    with pytest.raises(TypeError, match="smoothing"):
        models.english_letter_bigrams(smoothing="small")
    with pytest.raises(ValueError, match="start"):
        models.english_letter_bigrams(start="middle")


@needs_wordfreq
def test_bad_length():
    with pytest.raises(ValueError, match="length"):
        models.english_letters(0)


def test_without_wordfreq(monkeypatch):
    from importlib import metadata

    real = metadata.version

    def fake(dist):
        if dist == "wordfreq":
            raise metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(metadata, "version", fake)
    with pytest.raises(models.MissingDependency, match=r'pip install "tiltlab\[data\]"'):
        models.english_letters(10)
