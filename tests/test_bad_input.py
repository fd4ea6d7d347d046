"""Bad input (SPEC section 6): a clear ValueError / TypeError naming the argument, never a
crash or a silent NaN.

The matrix below covers every public function of ``tiltlab.__all__`` (and the methods of
the objects they return) with wrong shapes, NaN / inf, empty and zero-size inputs, wrong
dtypes (strings, objects, complex, booleans where numbers are expected), negative and
non-integer sizes, and sizes that cannot fit in memory: those must fail with a
MemoryError / ValueError naming the argument *before* anything is allocated (checked
within a second and without the process growing, :func:`test_huge_sizes_fail_before_allocating`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import tiltlab

L = np.log([0.5, 0.3, 0.2])
R = np.array([0.0, 1.0, 3.0])
LB = np.log([0.7, 0.3])          # Bernoulli token (SPEC section 8)
RB = np.array([0.0, 1.0])


@functools.cache
def _seq():
    """A small memoryless model (length 10)."""
    return tiltlab.Memoryless(L, R, 10)


@functools.cache
def _seq_bon():
    return _seq().best_of_n(n=4)


@functools.cache
def _bon():
    return tiltlab.best_of_n(L, R, n=4)


@functools.cache
def _huge_bon():
    """Best-of-N metrics of a batch of 10^6 (a broadcast n) over 10^6 outcomes: cheap, but
    its log_probs would be 10^12 floats."""
    big = np.zeros(10**6)
    return tiltlab.best_of_n(big, big, n=np.broadcast_to(2.0, (10**6, 1)))


@functools.cache
def _longest_seq_bon():
    """Best-of-N over Bernoulli sequences of the longest length (2^31 - 1): cheap (a window
    of the lattice), but sampling a sequence needs a segment tree over 2^31 positions."""
    return tiltlab.Memoryless(LB, RB, 2**31 - 1).best_of_n(n=4)


@functools.cache
def _policy():
    return tiltlab.worst_of_n(L, R, n=2)


def _npz_model(**arrays):
    """load_model on an .npz file holding ``arrays`` (written to a temporary directory)."""
    def call():
        with tempfile.TemporaryDirectory(prefix="tiltlab-bad-model-") as d:
            path = os.path.join(d, "model.npz")
            np.savez(path, **arrays)
            return tiltlab.load_model(path)
    return call


def _text_file_model(text: str):
    def call():
        with tempfile.TemporaryDirectory(prefix="tiltlab-bad-model-") as d:
            path = os.path.join(d, "model.npz")
            with open(path, "w") as f:
                f.write(text)
            return tiltlab.load_model(path)
    return call


def _cases():
    nan_r = R.copy()
    nan_r[1] = np.nan
    inf_r = R.copy()
    inf_r[2] = np.inf
    hidden = R.copy()
    hidden[0] = np.nan
    l_hidden = L.copy()
    l_hidden[0] = -np.inf
    ninf = np.full(3, -np.inf)
    strs = np.array(["a", "b", "c"])
    objs = np.array([1.0, None, 2.0], dtype=object)

    # ---- tilt_stats / tilt / solve_lambda / frontier / kl_max / cumulants ----
    yield "shape mismatch", lambda: tiltlab.tilt_stats(L, R[:2], 1.0), ValueError, "rewards has 2"
    yield "batch mismatch", lambda: tiltlab.tilt_stats(np.zeros((2, 3)), np.zeros((4, 3)), 1.0), \
        ValueError, "broadcast"
    yield "lam batch mismatch", lambda: tiltlab.tilt_stats(np.zeros((2, 3)), R, [1.0, 2.0, 3.0]), \
        ValueError, "lam shape"
    yield "NaN reward", lambda: tiltlab.tilt_stats(L, nan_r, 1.0), ValueError, \
        "rewards contains NaN at index (1,)"
    yield "inf reward", lambda: tiltlab.tilt_stats(L, inf_r, 1.0), ValueError, \
        "rewards contains +inf at index (2,)"
    yield "NaN reward under -inf logit", lambda: tiltlab.tilt_stats(l_hidden, hidden, 1.0), \
        ValueError, "where the logit is -inf"
    yield "all -inf row", lambda: tiltlab.tilt_stats(np.array([[0.0, 1.0, 2.0], [-np.inf] * 3]),
                                                     R, 1.0), ValueError, \
        "logits row at batch index (1,) is all -inf"
    yield "NaN logit", lambda: tiltlab.tilt_stats(np.array([0.0, np.nan, 1.0]), R, 1.0), \
        ValueError, "logits contains NaN at index (1,)"
    yield "+inf logit", lambda: tiltlab.tilt_stats(np.array([0.0, np.inf, 1.0]), R, 1.0), \
        ValueError, "logits contains +inf"
    yield "NaN lam", lambda: tiltlab.tilt_stats(L, R, np.nan), ValueError, "lam contains NaN"
    yield "NaN lam in array", lambda: tiltlab.tilt(L, R, [1.0, np.nan]), ValueError, \
        "lam contains NaN at index (1,)"
    yield "negative kl", lambda: tiltlab.solve_lambda(L, R, -0.1), ValueError, "kl must be >= 0"
    yield "NaN kl", lambda: tiltlab.frontier(L, R, [0.1, np.nan]), ValueError, "kl contains NaN"
    yield "joint kl not scalar", lambda: tiltlab.solve_lambda(L, R, [0.1, 0.2], joint=True), \
        ValueError, "must be a scalar"
    yield "complex logits", lambda: tiltlab.tilt_stats(L.astype(complex), R, 1.0), TypeError, \
        "logits must be real-valued"
    yield "object rewards", lambda: tiltlab.tilt_stats(L, np.array([1, "a", None], dtype=object),
                                                       1.0), TypeError, "rewards must be an array"
    yield "string lam", lambda: tiltlab.tilt_stats(L, R, "1.0"), TypeError, "lam must be"
    yield "ragged list", lambda: tiltlab.tilt_stats([[0.0, 1.0], [0.0]], [0.0, 1.0], 1.0), \
        ValueError, "logits could not be converted"
    yield "scalar logits", lambda: tiltlab.tilt_stats(0.0, 0.0, 1.0), ValueError, \
        "at least one dimension"
    yield "no outcomes", lambda: tiltlab.tilt_stats(np.zeros(0), np.zeros(0), 1.0), ValueError, \
        "no outcomes"
    yield "order zero", lambda: tiltlab.cumulants(L, R, 0), ValueError, "order must be between"
    yield "order too large", lambda: tiltlab.cumulants(L, R, 33), ValueError, "order must be"
    yield "order float", lambda: tiltlab.cumulants(L, R, 2.5), TypeError, "order must be"
    yield "n_threads zero", lambda: tiltlab.tilt_stats(L, R, 1.0, n_threads=0), ValueError, \
        "n_threads must be >= 1"
    yield "n_threads float", lambda: tiltlab.tilt_stats(L, R, 1.0, n_threads=1.5), TypeError, \
        "n_threads"
    yield "kl_max NaN reward", lambda: tiltlab.kl_max(L, nan_r), ValueError, "rewards contains NaN"
    yield "kl_divergence shapes", lambda: tiltlab.kl_divergence(L, L[:2]), ValueError, \
        "logits_q has 2"
    yield "kl_divergence NaN q", lambda: tiltlab.kl_divergence(L, np.array([0.0, np.nan, 0.0])), \
        ValueError, "logits_q contains NaN"
    yield "kl_divergence empty p", lambda: tiltlab.kl_divergence(np.full(3, -np.inf), L), \
        ValueError, "logits_p row is all -inf"
    yield "kl_divergence empty q", lambda: tiltlab.kl_divergence(L, np.full(3, -np.inf)), \
        ValueError, "logits_q row is all -inf"
    # complex a is accepted since issue 17 (scipy.special.logsumexp's semantics)
    yield "logsumexp b not broadcastable", lambda: tiltlab.logsumexp(np.ones(3), b=np.ones(2)), \
        ValueError, "b of shape"
    yield "logsumexp bad axis type", lambda: tiltlab.logsumexp(np.ones(3), axis=0.5), TypeError, \
        "axis"
    yield "logsumexp repeated axis", lambda: tiltlab.logsumexp(np.ones((2, 2)), axis=(0, 0)), \
        ValueError, "repeated"
    yield "cumulants NaN logit", lambda: tiltlab.cumulants(np.array([np.nan, 0.0, 0.0]), R, 3), \
        ValueError, "logits contains NaN"
    yield "tilt all -inf", lambda: tiltlab.tilt(np.full(3, -np.inf), R, 1.0), ValueError, \
        "all -inf"
    yield "solve all -inf", lambda: tiltlab.solve_lambda(np.full(3, -np.inf), R, 0.1), ValueError, \
        "all -inf"
    yield "tilt_stats string logits", lambda: tiltlab.tilt_stats(strs, R, 1.0), TypeError, \
        "logits must be an array of real numbers"
    yield "tilt_stats datetime rewards", lambda: tiltlab.tilt_stats(
        L, np.array(["2020-01-01"] * 3, dtype="datetime64[D]"), 1.0), TypeError, \
        "rewards must be an array of real numbers"
    yield "tilt_stats bool lam", lambda: tiltlab.tilt_stats(L, R, True), TypeError, \
        "lam must be a real number"
    yield "tilt_stats complex lam", lambda: tiltlab.tilt_stats(L, R, 1j), TypeError, \
        "lam must be real-valued"
    yield "tilt_stats n_threads -1", lambda: tiltlab.tilt_stats(L, R, 1.0, n_threads=-1), \
        ValueError, "n_threads must be >= 1"
    yield "tilt_stats n_threads 2^40", lambda: tiltlab.tilt_stats(L, R, 1.0, n_threads=2**40), \
        ValueError, "n_threads must be at most"
    yield "tilt outcome mismatch", lambda: tiltlab.tilt(L, R[:2], 1.0), ValueError, \
        "rewards has 2 outcomes"
    yield "tilt n_threads string", lambda: tiltlab.tilt(L, R, 1.0, n_threads="2"), TypeError, \
        "n_threads must be None or a positive integer"
    yield "cumulants order -1", lambda: tiltlab.cumulants(L, R, -1), ValueError, \
        "order must be between 1 and 32"
    yield "cumulants order string", lambda: tiltlab.cumulants(L, R, "3"), TypeError, \
        "order must be a positive integer"
    yield "cumulants order bool", lambda: tiltlab.cumulants(L, R, True), TypeError, \
        "order must be a positive integer"
    yield "cumulants NaN lam", lambda: tiltlab.cumulants(L, R, 3, lam=np.nan), ValueError, \
        "lam contains NaN"
    yield "solve_lambda bool kl", lambda: tiltlab.solve_lambda(L, R, True), TypeError, \
        "kl must be a real number"
    yield "solve_lambda string kl", lambda: tiltlab.solve_lambda(L, R, "0.1"), TypeError, \
        "kl must be an array of real numbers"
    yield "solve_lambda joint zero-size batch", lambda: tiltlab.solve_lambda(
        np.zeros((0, 3)), np.zeros((0, 3)), 0.1, joint=True), ValueError, \
        "joint=True needs at least one row"
    yield "frontier negative kl in array", lambda: tiltlab.frontier(L, R, [0.1, -1.0]), \
        ValueError, "kl must be >= 0; got np.float64(-1.0) at index (1,)"
    yield "kl_max +inf reward", lambda: tiltlab.kl_max(L, inf_r), ValueError, \
        "rewards contains +inf"
    yield "kl_max ragged", lambda: tiltlab.kl_max([[0.0], [0.0, 1.0]], R), ValueError, \
        "logits could not be converted"

    # ---- logsumexp / kl_divergence ----
    yield "logsumexp strings", lambda: tiltlab.logsumexp(strs), TypeError, \
        "a must be an array of real numbers"
    yield "logsumexp object array", lambda: tiltlab.logsumexp(objs), TypeError, \
        "a must be an array of real numbers"
    yield "logsumexp axis out of range", lambda: tiltlab.logsumexp(L, axis=5), ValueError, \
        "axis 5 is out of bounds"
    yield "logsumexp n_threads -1", lambda: tiltlab.logsumexp(L, n_threads=-1), ValueError, \
        "n_threads must be >= 1"
    yield "kl_divergence complex q", lambda: tiltlab.kl_divergence(L, L.astype(complex)), \
        TypeError, "logits_q must be real-valued"
    yield "kl_divergence batch mismatch", lambda: tiltlab.kl_divergence(
        np.zeros((2, 3)), np.zeros((3, 3))), ValueError, \
        "cannot broadcast logits_p batch shape (2,), logits_q batch shape (3,)"
    yield "kl_divergence +inf p", lambda: tiltlab.kl_divergence([0.0, np.inf, 0.0], L), \
        ValueError, "logits_p contains +inf at index (1,)"
    yield "kl_divergence scalar", lambda: tiltlab.kl_divergence(0.0, 0.0), ValueError, \
        "logits_p must have at least one dimension"
    yield "kl_divergence no outcomes", lambda: tiltlab.kl_divergence(np.zeros((2, 0)),
                                                                     np.zeros((2, 0))), \
        ValueError, "logits_p has no outcomes"

    # ---- best_of_n / BestOfN / reward_levels / samplers / beirami_kl_estimate ----
    yield "best_of_n n < 1", lambda: tiltlab.best_of_n(L, R, n=-3), ValueError, \
        "n must be >= 1"
    yield "best_of_n NaN n", lambda: tiltlab.best_of_n(L, R, n=np.nan), ValueError, \
        "n contains NaN"
    yield "best_of_n neither n nor log_n", lambda: tiltlab.best_of_n(L, R), ValueError, \
        "give exactly one of n"
    yield "best_of_n both n and log_n", lambda: tiltlab.best_of_n(L, R, n=2, log_n=1.0), \
        ValueError, "both were given"
    yield "best_of_n negative log_n", lambda: tiltlab.best_of_n(L, R, log_n=-1.0), ValueError, \
        "log_n must be >= 0"
    yield "best_of_n bool n", lambda: tiltlab.best_of_n(L, R, n=True), TypeError, \
        "n must be a real number"
    yield "best_of_n string n", lambda: tiltlab.best_of_n(L, R, n="4"), TypeError, \
        "n must be an array of real numbers"
    yield "best_of_n NaN reward", lambda: tiltlab.best_of_n(L, nan_r, n=4), ValueError, \
        "rewards contains NaN at index (1,)"
    yield "best_of_n all -inf row", lambda: tiltlab.best_of_n(ninf, R, n=4), ValueError, \
        "logits row is all -inf"
    yield "best_of_n no outcomes", lambda: tiltlab.best_of_n(np.zeros((2, 0)), np.zeros((2, 0)),
                                                             n=4), \
        ValueError, "logits has no outcomes"
    yield "BestOfN.kl_to_tilted NaN lam", lambda: _bon().kl_to_tilted(np.nan), ValueError, \
        "lam contains NaN"
    yield "BestOfN.sample size -1", lambda: _bon().sample(-1), ValueError, "size must be >= 0"
    yield "reward_levels NaN reward", lambda: tiltlab.reward_levels(L, nan_r), ValueError, \
        "rewards contains NaN"
    yield "reward_levels shape mismatch", lambda: tiltlab.reward_levels(L, R[:2]), ValueError, \
        "rewards has 2 outcomes"
    yield "reward_levels string rewards", lambda: tiltlab.reward_levels(L, strs), TypeError, \
        "rewards must be an array of real numbers"
    yield "sample size -1", lambda: tiltlab.sample_best_of_n(L, R, n=4, size=-1), ValueError, \
        "size must be >= 0"
    yield "sample size 2.5", lambda: tiltlab.sample_best_of_n(L, R, n=4, size=2.5), TypeError, \
        "size must be None or a non-negative integer"
    yield "sample size string", lambda: tiltlab.sample_best_of_n(L, R, n=4, size="3"), TypeError, \
        "size must be None or a non-negative integer"
    yield "sample n_threads 0", lambda: tiltlab.sample_best_of_n(L, R, n=4, size=3,
                                                                 n_threads=0), \
        ValueError, "n_threads must be >= 1"
    yield "sample NaN logit", lambda: tiltlab.sample_best_of_n([0.0, np.nan, 0.0], R, n=4,
                                                               size=3), \
        ValueError, "logits contains NaN at index (1,)"
    yield "sample n < 1", lambda: tiltlab.sample_best_of_n(L, R, n=0.5, size=3), ValueError, \
        "n must be >= 1"
    yield "sample_categorical size -1", lambda: tiltlab.sample_categorical(L, -1), \
        ValueError, "size must be non-negative"
    yield "sample_categorical size 2.5", lambda: tiltlab.sample_categorical(L, 2.5), \
        TypeError, "size must be None, a non-negative integer or a tuple"
    yield "sample_categorical NaN logit", lambda: tiltlab.sample_categorical(
        [0.0, np.nan, 0.0]), ValueError, "logits contains NaN at index (1,)"
    yield "sample_categorical empty row", lambda: tiltlab.sample_categorical(
        [[0.0, 1.0], [-np.inf, -np.inf]]), ValueError, "row at batch index (1,) is all -inf"
    yield "sample_categorical string rng", lambda: tiltlab.sample_categorical(L, rng="x"), \
        TypeError, "rng must be None, an int"
    yield "sample_categorical string logits", lambda: tiltlab.sample_categorical(strs), \
        TypeError, "logits must be an array of real numbers"
    yield "sample_tilted NaN lam", lambda: tiltlab.sample_tilted(L, R, np.nan), ValueError, \
        "lam contains NaN"
    yield "sample_tilted inf reward", lambda: tiltlab.sample_tilted(L, [0.0, np.inf, 1.0], 1.0), \
        ValueError, "rewards contains +inf at index (1,)"
    yield "sample_tilted shape mismatch", lambda: tiltlab.sample_tilted(L, R[:2], 1.0), \
        ValueError, "rewards has 2 outcomes"
    yield "sample_tilted size (2, -1)", lambda: tiltlab.sample_tilted(L, R, 1.0, (2, -1)), \
        ValueError, "size must be non-negative"
    yield "simulate n -3", lambda: tiltlab.simulate_best_of_n(L, R, -3), ValueError, \
        "n must be >= 1"
    yield "simulate n 2.5", lambda: tiltlab.simulate_best_of_n(L, R, 2.5), ValueError, \
        "n must be an integer"
    yield "simulate n inf", lambda: tiltlab.simulate_best_of_n(L, R, np.inf), ValueError, \
        "n contains an infinite value"
    # n beyond int64 used to be cast to a negative count: the kernel then wrote nothing and
    # the (uninitialised) output was returned as draws
    yield "simulate n 1e30", lambda: tiltlab.simulate_best_of_n(L, R, 1e30, size=2), \
        ValueError, "n must be below 2^63"
    yield "simulate bool n", lambda: tiltlab.simulate_best_of_n(L, R, True, size=2), TypeError, \
        "n must be a real number"
    yield "simulate size -1", lambda: tiltlab.simulate_best_of_n(L, R, 4, size=-1), ValueError, \
        "size must be >= 0"
    bke = tiltlab.beirami_kl_estimate
    yield "beirami_kl_estimate eps 0", lambda: bke(0.0, 4), ValueError, "eps must be in (0, 1]"
    yield "beirami_kl_estimate NaN eps", lambda: bke(np.nan, 4), ValueError, "eps contains NaN"
    yield "beirami_kl_estimate n < 1", lambda: bke(0.1, 0.5), ValueError, "n must be >= 1"
    yield "beirami_kl_estimate string eps", lambda: bke("a", 4), TypeError, \
        "eps must be an array of real numbers"
    yield "beirami_kl_estimate shapes", lambda: bke([0.1, 0.2], [2, 3, 4]), ValueError, \
        "cannot broadcast eps of shape (2,) with n of shape (3,)"

    # ---- Markov ----
    tr = np.zeros((3, 3))
    yield "Markov length 0", lambda: tiltlab.Markov(L, tr, R, 0), ValueError, \
        "length must be >= 1"
    yield "Markov length 2.5", lambda: tiltlab.Markov(L, tr, R, 2.5), TypeError, \
        "length must be a positive integer"
    yield "Markov transition shape", lambda: tiltlab.Markov(L, np.zeros((2, 2)), R, 4), \
        ValueError, "transition_logits must have shape (V, V) = (3, 3)"
    yield "Markov empty transition row", \
        lambda: tiltlab.Markov(L, [[0.0, 0.0, 0.0], [-np.inf] * 3, [0.0, 0.0, 0.0]], R, 4), \
        ValueError, "transition_logits row 1 is all -inf"
    yield "Markov rewards shape", lambda: tiltlab.Markov(L, tr, R[:2], 4), ValueError, \
        "rewards must have shape (V,) = (3,) (per token) or (V, V)"
    yield "Markov NaN reward", lambda: tiltlab.Markov(L, tr, [0.0, np.nan, 1.0], 4), \
        ValueError, "rewards contains NaN at index (1,)"
    yield "Markov initial_rewards per token", \
        lambda: tiltlab.Markov(L, tr, R, 4, initial_rewards=R), ValueError, \
        "initial_rewards is only for per-transition rewards"
    yield "Markov NaN lam", lambda: tiltlab.Markov(L, tr, R, 4).tilt_stats(np.nan), \
        ValueError, "lam contains NaN"
    yield "Markov negative delta", lambda: tiltlab.Markov(L, tr, R, 4).solve_lambda(-1.0), \
        ValueError, "delta must be >= 0"

    # ---- Memoryless and SequenceBestOfN ----
    yield "Memoryless length 0", lambda: tiltlab.Memoryless(L, R, 0), ValueError, \
        "length must be >= 1"
    yield "Memoryless length -3", lambda: tiltlab.Memoryless(L, R, -3), ValueError, \
        "length must be >= 1"
    yield "Memoryless length 2.5", lambda: tiltlab.Memoryless(L, R, 2.5), TypeError, \
        "length must be a positive integer"
    yield "Memoryless length string", lambda: tiltlab.Memoryless(L, R, "10"), TypeError, \
        "length must be a positive integer"
    yield "Memoryless rows mismatch", lambda: tiltlab.Memoryless(np.zeros((3, 3)), R, 5), \
        ValueError, "logits has 3 rows but length is 5"
    yield "Memoryless zero-size rows", lambda: tiltlab.Memoryless(np.zeros((0, 3)), R, 5), \
        ValueError, "logits has 0 rows but length is 5"
    yield "Memoryless 3-d logits", lambda: tiltlab.Memoryless(np.zeros((2, 2, 3)), R, 2), \
        ValueError, "logits must have shape (V,)"
    yield "Memoryless outcome mismatch", lambda: tiltlab.Memoryless(L, R[:2], 5), ValueError, \
        "rewards has 2 outcomes"
    yield "Memoryless non-lattice", lambda: tiltlab.Memoryless(L, [0.0, 1.0, np.sqrt(2)], 5), \
        ValueError, "rewards are not on a lattice"
    yield "Memoryless step 0", lambda: tiltlab.Memoryless(L, R, 5, step=0), ValueError, \
        "step must be a positive number"
    yield "Memoryless NaN step", lambda: tiltlab.Memoryless(L, R, 5, step=np.nan), ValueError, \
        "step contains NaN"
    yield "Memoryless NaN reward", lambda: tiltlab.Memoryless(L, nan_r, 5), ValueError, \
        "rewards contains NaN at index (0, 1)"
    yield "Memoryless +inf logit", lambda: tiltlab.Memoryless([0.0, np.inf, 0.0], R, 5), \
        ValueError, "logits contains +inf"
    yield "Memoryless all -inf", lambda: tiltlab.Memoryless(ninf, R, 5), ValueError, \
        "all -inf"
    yield "Memoryless complex logits", lambda: tiltlab.Memoryless(L.astype(complex), R, 5), \
        TypeError, "logits must be real-valued"
    yield "Memoryless n_threads 0", lambda: tiltlab.Memoryless(L, R, 5, n_threads=0), \
        ValueError, "n_threads must be >= 1"
    yield "Memoryless.best_of_n n 0", lambda: _seq().best_of_n(n=0), ValueError, \
        "n must be >= 1"
    yield "Memoryless.best_of_n array n", lambda: _seq().best_of_n(n=[2, 3]), ValueError, \
        "takes one N"
    yield "Memoryless.best_of_n NaN log_n", lambda: _seq().best_of_n(log_n=np.nan), ValueError, \
        "log_n contains NaN"
    yield "Memoryless.reward_log_pmf NaN lam", lambda: _seq().reward_log_pmf(lam=np.nan), \
        ValueError, "lam contains NaN"
    yield "Memoryless.reward_log_pmf array lam", lambda: _seq().reward_log_pmf(lam=[1.0, 2.0]), \
        ValueError, "lam must be a single number"
    yield "Memoryless.reward_log_pmf string lam", lambda: _seq().reward_log_pmf(lam="x"), \
        TypeError, "lam must be an array of real numbers"
    yield "Memoryless.solve_lambda negative", lambda: _seq().solve_lambda(-1.0), ValueError, \
        "delta must be >= 0"
    yield "Memoryless.cumulants order 0", lambda: _seq().cumulants(0), ValueError, \
        "order must be between"
    yield "Memoryless.scaled_cumulants float order", lambda: _seq().scaled_cumulants(2.5), \
        TypeError, "order must be a positive integer"
    yield "Memoryless.asymptotics array", lambda: _seq().asymptotics([0.1, 0.2]), ValueError, \
        "delta must be a single number"
    yield "Memoryless.rate_function NaN x", lambda: _seq().rate_function(np.nan), ValueError, \
        "x contains NaN"
    yield "Memoryless.scaled_cgf NaN t", lambda: _seq().scaled_cgf(np.nan), ValueError, \
        "t contains NaN"
    yield "Memoryless.tilt_stats NaN lam", lambda: _seq().tilt_stats(np.nan), ValueError, \
        "lam contains NaN"
    yield "SequenceBestOfN.sample size -1", lambda: _seq_bon().sample(-1), ValueError, \
        "size must be >= 0"
    yield "SequenceBestOfN.sample_rewards size 2.5", lambda: _seq_bon().sample_rewards(2.5), \
        TypeError, "size must be None or a non-negative integer"
    yield "SequenceBestOfN.sample n_threads 0", lambda: _seq_bon().sample(3, n_threads=0), \
        ValueError, "n_threads must be >= 1"
    yield "SequenceBestOfN.kl_to_tilted NaN", lambda: _seq_bon().kl_to_tilted(np.nan), \
        ValueError, "lam contains NaN"

    # ---- rate_function / scaled_cgf / renyi_divergence / renyi_cross_entropy ----
    yield "rate_function NaN x", lambda: tiltlab.rate_function(L, R, np.nan), ValueError, \
        "x contains NaN"
    yield "rate_function NaN lam", lambda: tiltlab.rate_function(L, R, 1.0, lam=np.nan), \
        ValueError, "lam contains NaN"
    yield "rate_function x shape", lambda: tiltlab.rate_function(
        np.zeros((2, 3)), np.zeros((2, 3)), [1.0, 2.0, 3.0]), ValueError, "x shape (3,)"
    yield "rate_function complex x", lambda: tiltlab.rate_function(L, R, 1j), TypeError, \
        "x must be real-valued"
    yield "rate_function n_threads 0", lambda: tiltlab.rate_function(L, R, 1.0, n_threads=0), \
        ValueError, "n_threads must be >= 1"
    yield "rate_function all -inf", lambda: tiltlab.rate_function(ninf, R, 1.0), ValueError, \
        "all -inf"
    yield "scaled_cgf NaN t", lambda: tiltlab.scaled_cgf(L, R, np.nan), ValueError, \
        "t contains NaN"
    yield "scaled_cgf object t", lambda: tiltlab.scaled_cgf(L, R, objs), TypeError, \
        "t must be an array of real numbers"
    yield "scaled_cgf +inf reward", lambda: tiltlab.scaled_cgf(L, inf_r, 1.0), ValueError, \
        "rewards contains +inf"
    yield "scaled_cgf shape mismatch", lambda: tiltlab.scaled_cgf(L, R[:2], 1.0), ValueError, \
        "rewards has 2 outcomes"
    yield "renyi_divergence negative alpha", lambda: tiltlab.renyi_divergence(L, L, -1.0), \
        ValueError, "alpha must be >= 0"
    yield "renyi_divergence NaN alpha", lambda: tiltlab.renyi_divergence(L, L, np.nan), \
        ValueError, "alpha contains NaN"
    yield "renyi_divergence NaN p", lambda: tiltlab.renyi_divergence([0.0, np.nan, 0.0], L, 2.0), \
        ValueError, "logits_p contains NaN"
    yield "renyi_divergence all -inf q", lambda: tiltlab.renyi_divergence(L, ninf, 2.0), \
        ValueError, "logits_q row is all -inf"
    yield "renyi_divergence shapes", lambda: tiltlab.renyi_divergence(L, L[:2], 2.0), \
        ValueError, "logits_q has 2 outcomes"
    yield "renyi_cross_entropy negative alpha", lambda: tiltlab.renyi_cross_entropy(L, L, -1), \
        ValueError, "alpha must be >= 0"
    yield "renyi_cross_entropy +inf q", lambda: tiltlab.renyi_cross_entropy(
        L, [0.0, np.inf, 0.0], 2.0), ValueError, "logits_q contains +inf"
    yield "renyi_cross_entropy strings", lambda: tiltlab.renyi_cross_entropy(strs, L, 2.0), \
        TypeError, "logits_p must be an array of real numbers"
    yield "renyi_cross_entropy bool alpha", lambda: tiltlab.renyi_cross_entropy(L, L, True), \
        TypeError, "alpha must be a real number"

    # ---- policies ----
    yield "soft_best_of_n n 0", lambda: tiltlab.soft_best_of_n(L, R, 0, 1.0), ValueError, \
        "n must be >= 1"
    yield "soft_best_of_n NaN n", lambda: tiltlab.soft_best_of_n(L, R, np.nan, 1.0), \
        ValueError, "n contains NaN"
    yield "soft_best_of_n bool n", lambda: tiltlab.soft_best_of_n(L, R, True, 1.0), TypeError, \
        "n must be a number"
    yield "soft_best_of_n array n", lambda: tiltlab.soft_best_of_n(L, R, [2, 3], 1.0), \
        ValueError, "n must be a single number"
    yield "soft_best_of_n negative temperature", lambda: tiltlab.soft_best_of_n(L, R, 4, -1.0), \
        ValueError, "temperature must be >= 0"
    yield "soft_best_of_n NaN temperature", lambda: tiltlab.soft_best_of_n(L, R, 4, np.nan), \
        ValueError, "temperature contains NaN"
    yield "soft_best_of_n string temperature", lambda: tiltlab.soft_best_of_n(L, R, 4, "1"), \
        TypeError, "temperature must be an array of real numbers"
    yield "soft_best_of_n tiny temperature", lambda: tiltlab.soft_best_of_n(L, R, 4, 1e-300), \
        ValueError, "temperature=1e-300 is too small"
    yield "soft_best_of_n batch", lambda: tiltlab.soft_best_of_n(np.zeros((2, 3)),
                                                                 np.zeros((2, 3)), 4, 1.0), \
        ValueError, "must be one distribution of shape (V,)"
    yield "soft_best_of_n zero-size batch", lambda: tiltlab.soft_best_of_n(
        np.zeros((0, 3)), np.zeros((0, 3)), 4, 1.0), ValueError, "must be one distribution"
    yield "soft_best_of_n reward spread overflow", lambda: tiltlab.soft_best_of_n(
        L, [-1e308, 0.0, 1e308], 4, 1.0), ValueError, "reward spread r_max - r_min overflows"
    yield "soft_best_of_n n_threads 0", lambda: tiltlab.soft_best_of_n(L, R, 4, 1.0,
                                                                       n_threads=0), \
        ValueError, "n_threads must be >= 1"
    yield "worst_of_n n 0.5", lambda: tiltlab.worst_of_n(L, R, 0.5), ValueError, \
        "n must be >= 1"
    yield "worst_of_n neither", lambda: tiltlab.worst_of_n(L, R), ValueError, \
        "give exactly one of n and log_n"
    yield "worst_of_n negative log_n", lambda: tiltlab.worst_of_n(L, R, log_n=-1.0), ValueError, \
        "log_n must be >= 0"
    yield "worst_of_n inf n", lambda: tiltlab.worst_of_n(L, R, np.inf), ValueError, \
        "n contains an infinite value"
    yield "best_of_poisson negative mu", lambda: tiltlab.best_of_poisson(L, R, -1.0), \
        ValueError, "mu must be >= 0"
    yield "best_of_poisson NaN mu", lambda: tiltlab.best_of_poisson(L, R, np.nan), ValueError, \
        "mu contains NaN"
    yield "best_of_poisson NaN reward", lambda: tiltlab.best_of_poisson(L, nan_r, 1.0), \
        ValueError, "rewards contains NaN"
    yield "rewind_and_repeat eps 0", lambda: tiltlab.rewind_and_repeat(L, R, 0.0), ValueError, \
        "eps must be > 0"
    yield "rewind_and_repeat eps 1.5", lambda: tiltlab.rewind_and_repeat(L, R, 1.5), \
        ValueError, "eps must be <= 1"
    yield "rewind_and_repeat NaN eps", lambda: tiltlab.rewind_and_repeat(L, R, np.nan), \
        ValueError, "eps contains NaN"
    yield "calibrated_tilt NaN c", lambda: tiltlab.calibrated_tilt(L, R, np.nan), ValueError, \
        "c contains NaN"
    yield "calibrated_tilt inf c", lambda: tiltlab.calibrated_tilt(L, R, np.inf), ValueError, \
        "c contains an infinite value"
    yield "calibrated_tilt complex c", lambda: tiltlab.calibrated_tilt(L, R, 1j), TypeError, \
        "c must be real-valued"
    yield "calibrated_tilt all -inf", lambda: tiltlab.calibrated_tilt(ninf, R, 1.0), \
        ValueError, "logits row is all -inf"
    yield "PolicyLaw.kl_to_tilted NaN lam", lambda: _policy().kl_to_tilted(np.nan), ValueError, \
        "lam contains NaN"
    yield "PolicyLaw.sample size -1", lambda: _policy().sample(-1), ValueError, \
        "size must be >= 0"
    pf = tiltlab.policy_frontier
    yield "policy_frontier unknown method", lambda: pf(L, R, "nope", [1.0]), ValueError, \
        "method must be one of"
    yield "policy_frontier empty grid", lambda: pf(L, R, "tilted", []), ValueError, \
        "grid is empty"
    yield "policy_frontier NaN grid", lambda: pf(L, R, "tilted", [0.0, np.nan]), ValueError, \
        "grid contains NaN"
    yield "policy_frontier 2-d grid", lambda: pf(L, R, "tilted", [[1.0]]), ValueError, \
        "grid must be one-dimensional"
    yield "policy_frontier string grid", lambda: pf(L, R, "tilted", ["a"]), TypeError, \
        "grid must be an array of real numbers"
    yield "policy_frontier bool grid", lambda: pf(L, R, "best_of_n", [True, True]), TypeError, \
        "grid must hold real numbers, not booleans"
    yield "policy_frontier N < 1", lambda: pf(L, R, "best_of_n", [0.5]), ValueError, \
        "the grid of N must be finite and >= 1"
    yield "policy_frontier soft neither", lambda: pf(L, R, "soft_best_of_n", [1.0]), ValueError, \
        "needs exactly one of n= (grid over the temperature) and temperature="
    yield "policy_frontier soft negative temperature", lambda: pf(
        L, R, "soft_best_of_n", [-1.0], n=2), ValueError, "temperatures must be >= 0"
    yield "policy_frontier soft n grid < 1", lambda: pf(L, R, "soft_best_of_n", [0.5],
                                                        temperature=1.0), \
        ValueError, "the grid of n must be finite and >= 1"
    yield "policy_frontier poisson negative", lambda: pf(L, R, "best_of_poisson", [-1.0]), \
        ValueError, "the grid of mu must be finite and >= 0"
    yield "policy_frontier rewind 0", lambda: pf(L, R, "rewind_and_repeat", [0.0]), ValueError, \
        "the grid of eps must lie in (0, 1]"
    yield "policy_frontier calibrated inf", lambda: pf(L, R, "calibrated_tilt", [np.inf]), \
        ValueError, "the grid of c must be finite"
    # n_threads used to be checked only by the soft best-of-n branch
    yield "policy_frontier n_threads 0", lambda: pf(L, R, "tilted", [1.0], n_threads=0), \
        ValueError, "n_threads must be >= 1"

    # ---- kl_estimators / estimator_study ----
    x = np.array([0, 1, 2, 2, 1])
    yield "kl_estimators float samples", lambda: tiltlab.kl_estimators(x.astype(float), L, L), \
        TypeError, "samples must be integer outcome indices"
    yield "kl_estimators bool samples", lambda: tiltlab.kl_estimators(x > 0, L, L), TypeError, \
        "samples must be integer outcome indices"
    yield "kl_estimators out of range", lambda: tiltlab.kl_estimators(x + 10, L, L), ValueError, \
        "samples must be indices in [0, 3)"
    yield "kl_estimators negative index", lambda: tiltlab.kl_estimators(-x - 1, L, L), \
        ValueError, "samples must be indices in [0, 3)"
    yield "kl_estimators one sample", lambda: tiltlab.kl_estimators([0], L, L), ValueError, \
        "need at least 2 samples"
    yield "kl_estimators shapes", lambda: tiltlab.kl_estimators(x, L, L[:2]), ValueError, \
        "log_pi and log_p must be laws of the same shape"
    yield "kl_estimators NaN", lambda: tiltlab.kl_estimators(x, L, [0.0, np.nan, 0.0]), \
        ValueError, "log_pi and log_p must not contain NaN"
    yield "kl_estimators string log_pi", lambda: tiltlab.kl_estimators(x, strs, L), TypeError, \
        "log_pi must be an array of real numbers"
    yield "kl_estimators per-sample shapes", lambda: tiltlab.kl_estimators(None, [0.1, 0.2],
                                                                           [0.1]), \
        ValueError, "per-sample log_pi and log_p differ in shape"
    study = tiltlab.estimator_study
    yield "estimator_study n_samples 1", lambda: study(_bon(), 1, 10, rng=0), ValueError, \
        "n_samples must be >= 2"
    yield "estimator_study n_samples -3", lambda: study(_bon(), -3, 10, rng=0), ValueError, \
        "n_samples must be >= 2"
    yield "estimator_study repeats 0", lambda: study(_bon(), 10, 0, rng=0), ValueError, \
        "repeats must be >= 2"
    yield "estimator_study float n_samples", lambda: study(_bon(), 10.0, 10, rng=0), TypeError, \
        "n_samples must be an integer"
    yield "estimator_study bad policy", lambda: study("x", 10, 10), TypeError, \
        "policy must be a PolicyLaw"
    yield "estimator_study batch BestOfN", lambda: study(tiltlab.best_of_n(L, R, n=[2, 4]), 10,
                                                         10), \
        ValueError, "single best-of-N row"
    yield "estimator_study Memoryless without lam", lambda: study(_seq(), 10, 10), ValueError, \
        "give lam="
    yield "estimator_study NaN lam", lambda: study(_seq(), 10, 10, lam=np.nan), ValueError, \
        "lam contains NaN"

    # ---- load_model ----
    yield "load_model unknown name", lambda: tiltlab.load_model("nope"), ValueError, \
        "unknown model 'nope'"
    yield "load_model int", lambda: tiltlab.load_model(3), TypeError, \
        "model must be a name or a path"
    yield "load_model missing file", lambda: tiltlab.load_model(
        os.path.join(tempfile.gettempdir(), "tiltlab-no-such-dir", "m.npz")), ValueError, \
        "does not exist"
    yield "load_model file without logits", _npz_model(rewards=R), ValueError, \
        "lacks the array(s) logits"
    yield "load_model NaN logits", _npz_model(logits=[0.0, np.nan, 1.0], rewards=R), ValueError, \
        "logits contain NaN"
    yield "load_model shape mismatch", _npz_model(logits=L, rewards=R[:2]), ValueError, \
        "differ in shape"
    yield "load_model string logits", _npz_model(logits=strs, rewards=R), ValueError, \
        "logits must be real numbers"
    yield "load_model empty logits", _npz_model(logits=np.zeros(0), rewards=np.zeros(0)), \
        ValueError, "logits must have shape (V,) with V >= 1"
    yield "load_model negative step", _npz_model(logits=L, rewards=R, step=-1.0), ValueError, \
        "step must be a positive finite scalar"
    yield "load_model not an npz", _text_file_model("not a zip archive"), ValueError, \
        "is not a readable .npz file"
    yield "load_model bad option", lambda: tiltlab.load_model("ternary", vocab=3), TypeError, \
        "vocab"
    # zipf's vocab / exponent used to be unchecked: vocab=0 gave numpy's "zero-size array to
    # reduction operation", vocab=2.5 a model, exponent=NaN a model of NaN logits
    yield "load_model zipf vocab 0", lambda: tiltlab.load_model("zipf", vocab=0), ValueError, \
        "vocab must be >= 1"
    yield "load_model zipf vocab 2.5", lambda: tiltlab.load_model("zipf", vocab=2.5), TypeError, \
        "vocab must be an integer"
    yield "load_model zipf NaN exponent", lambda: tiltlab.load_model("zipf", vocab=10,
                                                                     exponent=np.nan), \
        ValueError, "exponent contains NaN"
    yield "load_model english-sentiment vocab 1", lambda: tiltlab.load_model(
        "english-sentiment", vocab=1), ValueError, "vocab must be in [2, 200000]"


CASES = list(_cases())


@pytest.mark.parametrize("name,call,exc,match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_clearly(name, call, exc, match):
    with pytest.raises(exc) as info:
        call()
    assert match in str(info.value), str(info.value)


# --------------------------------------------------------------------------------------
# sizes that cannot fit in memory: an error naming the argument, before any allocation
# --------------------------------------------------------------------------------------

def _huge_cases():
    view = np.broadcast_to  # a view of 10^12 elements costs nothing until copied
    big = np.zeros(10**6)
    pf = tiltlab.policy_frontier
    yield "sample_best_of_n size 1e15", lambda: tiltlab.sample_best_of_n(
        L, R, n=4, size=10**15), MemoryError, "size=1000000000000000"
    yield "sample_best_of_n batch x size", lambda: tiltlab.sample_best_of_n(
        view(L, (10**5, 3)), R, n=4, size=10**10), MemoryError, \
        "size=10000000000 draws for each of the 100000 rows"
    yield "sample_categorical size 1e15", lambda: tiltlab.sample_categorical(
        L, 10**15), MemoryError, "size=1000000000000000 draws"
    yield "sample_categorical logits view", lambda: tiltlab.sample_categorical(
        view(L, (10**12, 3))), MemoryError, "logits of shape (1000000000000, 3)"
    yield "sample_tilted size 1e10 x 1e10", lambda: tiltlab.sample_tilted(
        L, R, 1.0, (10**10, 10**10)), MemoryError, "size=(10000000000, 10000000000) draws"
    yield "sample_tilted lam view 1e12", lambda: tiltlab.sample_tilted(
        L, R, view(1.0, (10**12,))), MemoryError, "lam of shape (1000000000000,)"
    yield "simulate_best_of_n n 1e12 size 1e12", lambda: tiltlab.simulate_best_of_n(
        L, R, n=10**12, size=10**12), MemoryError, "size=1000000000000"
    yield "BestOfN.sample 1e15", lambda: _bon().sample(10**15), MemoryError, \
        "size=1000000000000000"
    yield "BestOfN.log_probs of a huge batch", lambda: _huge_bon().log_probs, MemoryError, \
        "log_probs of the batch shape (1000000, 1) x 1000000 outcomes"
    yield "SequenceBestOfN.sample 1e15", lambda: _seq_bon().sample(10**15), MemoryError, \
        "size=1000000000000000 sequences"
    yield "SequenceBestOfN.sample_rewards 1e15", lambda: _seq_bon().sample_rewards(10**15), \
        MemoryError, "size=1000000000000000 sampled rewards"
    yield "SequenceBestOfN.sample of length 2^31 - 1", lambda: _longest_seq_bon().sample(1), \
        MemoryError, "size=1 sequences of length 2147483647"
    yield "Memoryless.reward_log_pmf of 2^28 + 1 points", lambda: tiltlab.Memoryless(
        LB, RB, 2**28).reward_log_pmf(), ValueError, "the full law of R has 268435457 lattice"
    yield "Memoryless length 1e15", lambda: tiltlab.Memoryless(L, R, 10**15), ValueError, \
        "length must be at most"
    yield "Memoryless lattice 3 * 2^31", lambda: tiltlab.Memoryless(L, R, 2**31), ValueError, \
        "lattice points (length 2147483648"
    yield "Memoryless step 1e-12", lambda: tiltlab.Memoryless(L, R, 10, step=1e-12), \
        ValueError, "step 1e-12 has too many points"
    yield "cumulants order 1e9", lambda: tiltlab.cumulants(L, R, 10**9), ValueError, \
        "order must be between 1 and 32"
    yield "tilt 1e6 x 1e6 result", lambda: tiltlab.tilt(big, big, np.zeros((10**6, 1))), \
        MemoryError, "lam (1000000, 1)"
    yield "tilt_stats lam view 1e12", lambda: tiltlab.tilt_stats(L, R, view(1.0, (10**12,))), \
        MemoryError, "lam of shape (1000000000000,)"
    yield "cumulants lam view 1e11", lambda: tiltlab.cumulants(L, R, 32,
                                                               view(0.0, (10**11,))), \
        MemoryError, "lam of shape (100000000000,)"
    yield "solve_lambda kl view 1e12", lambda: tiltlab.solve_lambda(L, R, view(0.1, (10**12,))), \
        MemoryError, "kl of shape"
    yield "frontier kl view 1e12", lambda: tiltlab.frontier(L, R, view(0.1, (10**12,))), \
        MemoryError, "kl of shape"
    yield "kl_max logits view", lambda: tiltlab.kl_max(view(L, (10**12, 3)), R), MemoryError, \
        "logits of shape (1000000000000, 3)"
    yield "logsumexp view 1e12 x 3", lambda: tiltlab.logsumexp(view(0.0, (10**12, 3))), \
        MemoryError, "a of shape (1000000000000, 3)"
    yield "kl_divergence view", lambda: tiltlab.kl_divergence(view(0.0, (10**12, 3)), L), \
        MemoryError, "logits_p of shape"
    yield "best_of_n n view", lambda: tiltlab.best_of_n(L, R, n=view(2.0, (10**12,))), \
        MemoryError, "n of shape"
    yield "reward_levels batch view", lambda: tiltlab.reward_levels(view(L, (10**12, 3)), R), \
        MemoryError, "logits of shape"
    yield "rate_function x view", lambda: tiltlab.rate_function(L, R, view(1.0, (10**12,))), \
        MemoryError, "x of shape"
    yield "scaled_cgf t view", lambda: tiltlab.scaled_cgf(L, R, view(1.0, (10**12,))), \
        MemoryError, "t of shape"
    yield "renyi_divergence alpha view", lambda: tiltlab.renyi_divergence(
        L, L, view(2.0, (10**12,))), MemoryError, "alpha of shape"
    yield "renyi_cross_entropy alpha view", lambda: tiltlab.renyi_cross_entropy(
        L, L, view(2.0, (10**12,))), MemoryError, "alpha of shape"
    yield "policy_frontier grid view", lambda: pf(L, R, "calibrated_tilt",
                                                  view(1.0, (10**12,))), \
        MemoryError, "grid of shape (1000000000000,)"
    yield "policy_frontier tilted grid view", lambda: pf(L, R, "tilted", view(1.0, (10**12,))), \
        MemoryError, "grid of shape"
    yield "estimator_study n_samples 1e15", lambda: tiltlab.estimator_study(
        _bon(), 10**15, 2, rng=0), MemoryError, "n_samples=1000000000000000"
    yield "estimator_study repeats 1e15", lambda: tiltlab.estimator_study(
        _bon(), 2, 10**15, rng=0), MemoryError, "repeats=1000000000000000"
    yield "load_model zipf vocab 1e12", lambda: tiltlab.load_model("zipf", vocab=10**12), \
        MemoryError, "vocab=1000000000000"
    yield "logsumexp n_threads 2^40", lambda: tiltlab.logsumexp(L, n_threads=2**40), \
        ValueError, "n_threads must be at most"


HUGE = list(_huge_cases())


def _rss_bytes():
    """Resident set size from /proc/self/statm (None where there is no /proc)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


@contextlib.contextmanager
def _deadline(seconds: float):
    """Interrupt Python code that runs longer than ``seconds`` (a loop over a huge size
    that the validation failed to catch) instead of hanging the test run."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def stop(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: the size was not rejected")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def _address_space_budget(extra: int):
    """Cap the address space at its current size + ``extra`` bytes (RLIMIT_AS, restored
    afterwards): an allocation attempt that the validation failed to stop becomes a quick
    MemoryError instead of a machine running out of memory.  Not under AddressSanitizer,
    whose shadow memory needs the address space."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not Unix
        yield
        return
    if "asan" in os.environ.get("LD_PRELOAD", "") or not os.path.exists("/proc/self/statm"):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = size + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY:
        cap = min(cap, soft)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize("name,call,exc,match", HUGE, ids=[c[0] for c in HUGE])
def test_huge_sizes_fail_before_allocating(name, call, exc, match):
    _seq_bon(), _bon()  # build the cached objects outside the measurement
    if "log_probs" in name:
        _huge_bon()
    if "2^31 - 1" in name:
        _longest_seq_bon()
    before = _rss_bytes()
    t0 = time.perf_counter()
    with _deadline(10.0), _address_space_budget(2**30), pytest.raises(exc) as info:
        call()
    elapsed = time.perf_counter() - t0
    after = _rss_bytes()
    assert match in str(info.value), str(info.value)
    assert elapsed < 1.0, f"took {elapsed:.2f} s to reject"
    if before is not None:
        grown = (after - before) / 2**20
        assert grown < 100, f"RSS grew by {grown:.0f} MiB before the error"


def test_absurd_thread_count_is_an_error_not_an_abort():
    """n_threads=10^9 used to reach OpenMP, which aborted the process ("libgomp: Out of
    memory allocating ..."); run in a child process so that a regression cannot take the
    test session down with it."""
    code = ("import numpy as np, tiltlab\n"
            "for f in (lambda: tiltlab.logsumexp(np.zeros(10**5), n_threads=10**9),\n"
            "          lambda: tiltlab.tilt_stats(np.zeros(10**5), np.zeros(10**5), 1.0,\n"
            "                                     n_threads=10**9)):\n"
            "    try:\n"
            "        f()\n"
            "    except ValueError as e:\n"
            "        assert 'n_threads must be at most' in str(e), str(e)\n"
            "    else:\n"
            "        raise SystemExit('no error')\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr


# --------------------------------------------------------------------------------------
# zero-size batches: shape (0, V) broadcasts like NumPy (documented: "every function
# broadcasts the leading (batch) axes"), so the result is an empty batch, not an error
# --------------------------------------------------------------------------------------

Z = np.zeros((0, 3))

EMPTY = [
    ("tilt_stats", lambda: tiltlab.tilt_stats(Z, Z, 1.0).kl, (0,)),
    ("tilt", lambda: tiltlab.tilt(Z, Z, 1.0), (0, 3)),
    ("solve_lambda", lambda: tiltlab.solve_lambda(Z, Z, 0.1), (0,)),
    ("frontier", lambda: tiltlab.frontier(Z, Z, 0.1), (0,)),
    ("kl_max", lambda: tiltlab.kl_max(Z, Z), (0,)),
    ("cumulants", lambda: tiltlab.cumulants(Z, Z, 4), (0, 4)),
    ("kl_divergence", lambda: tiltlab.kl_divergence(Z, Z), (0,)),
    ("logsumexp rows", lambda: tiltlab.logsumexp(Z, axis=-1), (0,)),
    ("best_of_n", lambda: tiltlab.best_of_n(Z, Z, n=4).kl, (0,)),
    ("best_of_n log_probs", lambda: tiltlab.best_of_n(Z, Z, n=4).log_probs, (0, 3)),
    ("sample_best_of_n", lambda: tiltlab.sample_best_of_n(Z, Z, n=4, size=5, rng=0), (0, 5)),
    ("simulate_best_of_n", lambda: tiltlab.simulate_best_of_n(Z, Z, 4, size=5, rng=0), (0, 5)),
    ("sample_categorical", lambda: tiltlab.sample_categorical(Z, 5, rng=0), (0, 5)),
    ("sample_tilted", lambda: tiltlab.sample_tilted(Z, Z, 1.0, rng=0), (0,)),
    ("reward_levels", lambda: np.array(tiltlab.reward_levels(Z, Z), dtype=object), (0,)),
    ("rate_function", lambda: tiltlab.rate_function(Z, Z, 1.0), (0,)),
    ("scaled_cgf", lambda: tiltlab.scaled_cgf(Z, Z, 1.0), (0,)),
    ("renyi_divergence", lambda: tiltlab.renyi_divergence(Z, Z, 2.0), (0,)),
    ("renyi_cross_entropy", lambda: tiltlab.renyi_cross_entropy(Z, Z, 2.0), (0,)),
]


@pytest.mark.parametrize("name,call,shape", EMPTY, ids=[c[0] for c in EMPTY])
def test_zero_size_batch_gives_an_empty_result(name, call, shape):
    out = np.asarray(call())
    assert out.shape == shape


def test_extreme_valid_parameters_give_no_silent_nan():
    """Valid but extreme parameters give the limits, not NaN.  policy_frontier('tilted')
    used to shift by the largest reward for every lam, so lam = -1e308 gave inf - inf."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow on the way to a limit
        f = tiltlab.policy_frontier(L, R, "tilted", [-1e308, -1.0, 1e308])
        assert not np.isnan(f.win_rate).any(), f.win_rate
        assert f.win_rate[0] == pytest.approx(0.25) and f.win_rate[2] == pytest.approx(0.9)
        for law in (tiltlab.best_of_poisson(L, R, 1e300), tiltlab.calibrated_tilt(L, R, 1e308),
                    tiltlab.calibrated_tilt(L, R, -1e308), tiltlab.worst_of_n(L, R, 1e300),
                    tiltlab.rewind_and_repeat(L, R, 1e-320),
                    tiltlab.soft_best_of_n(L, R, 1e300, 1.0)):
            values = [law.kl, law.expected_reward, law.win_rate, *law.log_probs]
            assert not np.isnan(values).any(), (law.method, values)
        out = [tiltlab.rate_function(L, R, [1e308, -1e308, 3.0]),
               tiltlab.scaled_cgf(L, R, [1e308, -1e308, np.inf]),
               tiltlab.tilt_stats(L, R, [1e308, -1e308, 5e-324]).kl,
               tiltlab.solve_lambda(L, R, [5e-324, 1e308]),
               tiltlab.best_of_n(L, R, log_n=[1e308, 1e-300]).kl,
               tiltlab.beirami_kl_estimate(1e-300, np.inf)]
        for v in out:
            assert not np.isnan(v).any(), out


def test_logsumexp_of_an_empty_reduction_is_minus_inf():
    """SciPy's semantics, as documented: an empty reduction gives -inf (not an error)."""
    out = tiltlab.logsumexp(np.zeros((3, 0)), axis=-1)
    assert out.shape == (3,) and np.all(out == -np.inf)


def test_matrix_covers_every_public_function():
    """Every callable of tiltlab.__all__ (classes: their constructor or the function that
    returns them) appears in the ids of the matrix above."""
    ids = " ".join(c[0] for c in CASES + HUGE)
    returned_by = {"BestOfN": "best_of_n", "RewardLevels": "reward_levels",
                   "LatticeLaw": "reward_log_pmf", "SequenceBestOfN": "SequenceBestOfN",
                   "Asymptotics": "asymptotics", "Model": "load_model",
                   "PolicyLaw": "PolicyLaw", "KLEstimates": "kl_estimators",
                   "EstimatorStudy": "estimator_study", "Frontier": "policy_frontier",
                   "TiltStats": "tilt_stats"}
    # no numeric input to validate; sweep: its bad input is tested in tests/test_sweep.py
    exempt = {"__version__", "build_info", "reproduce", "sweep"}
    missing = [name for name in tiltlab.__all__ if name not in exempt
               and returned_by.get(name, name) not in ids
               and returned_by.get(name, name).replace("_", " ") not in ids]
    assert not missing, missing


def test_at_least_sixty_cases():
    assert len(CASES) + len(HUGE) >= 60


def test_float32_nan_is_reported_too():
    lg = L.astype(np.float32)
    rw = R.astype(np.float32)
    rw[0] = np.nan
    with pytest.raises(ValueError, match="rewards contains NaN at index"):
        tiltlab.tilt_stats(lg, rw, 1.0)


def test_bad_values_in_a_long_row_are_located():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 40_000))
    rewards = rng.normal(size=(2, 40_000))
    rewards[1, 33_333] = np.inf
    with pytest.raises(ValueError, match=r"rewards contains \+inf at index \(1, 33333\)"):
        tiltlab.tilt_stats(logits, rewards, 0.5)


def test_memory_check_rejects_views_not_real_arrays(monkeypatch):
    """The size check is for broadcast views, which every kernel must copy; an array that
    really holds its elements (e.g. a large memmap, streamed without a copy) is not
    second-guessed.  Seen through a pretend machine with 4 KiB of memory."""
    from tiltlab import _validation

    monkeypatch.setattr(_validation, "memory_limit", lambda: 4096)
    real = np.zeros(1000)                                  # 8000 bytes, really allocated
    assert tiltlab.logsumexp(real) == pytest.approx(np.log(1000.0))
    with pytest.raises(MemoryError, match=r"a of shape \(1000,\) \(a broadcast view"):
        tiltlab.logsumexp(np.broadcast_to(0.0, (1000,)))
