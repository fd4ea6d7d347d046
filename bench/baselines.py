"""Honest NumPy baselines that are not part of tiltlab (for benchmark context only).

``numpy_simple_tilt_stats`` is what a researcher writes in a few lines (SPEC section 7's
"straightforward NumPy: max, exp, three sums"): fast-ish, but it returns log Z of the
tilted weights (not Lambda relative to the normalised p), loses all digits of the KL for
small tilts and overflows nothing only because it max-shifts.  It is the speed bar that
tiltlab.reference (which is written for accuracy, and is slower) is not.
"""

from __future__ import annotations

import functools
import math

import numpy as np


def numpy_simple_tilt_stats(logits, rewards, lam):
    x = logits + lam * rewards
    m = x.max(axis=-1, keepdims=True)
    w = np.exp(x - m)
    z = w.sum(axis=-1)
    mean = (w * rewards).sum(axis=-1) / z
    second = (w * rewards * rewards).sum(axis=-1) / z
    log_z = np.log(z) + m[..., 0]
    return log_z, mean, second - mean * mean


def numpy_tiled_tilt_stats(logits, rewards, lam, tile_elements=1 << 15):
    """Tilted statistics the way a careful NumPy programmer writes them for speed (SPEC
    section 7's "NumPy tiled to L2-sized blocks with out= buffers"): rows are processed in
    tiles of about `tile_elements` elements, every temporary lives in a preallocated
    buffer (no allocation per tile), and the normaliser of p is included, so it returns
    what tiltlab.tilt_stats returns: Lambda(lam) = log E_p e^{lam r}, the tilted mean and
    variance, and KL = lam mean - Lambda.  It has no protection against cancellation
    (variance as E r^2 - mean^2, KL by subtraction): the honest speed bar, not an oracle.
    """
    logits = np.asarray(logits)
    rewards = np.asarray(rewards)
    n, V = logits.shape
    dtype = np.result_type(logits.dtype, rewards.dtype)
    rows = max(1, tile_elements // V)
    x = np.empty((rows, V), dtype)
    w = np.empty((rows, V), dtype)
    log_partition = np.empty(n)
    mean = np.empty(n)
    var = np.empty(n)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        k = i1 - i0
        L, R, X, W = logits[i0:i1], rewards[i0:i1], x[:k], w[:k]
        # normaliser of p
        ml = L.max(axis=1, keepdims=True)
        np.subtract(L, ml, out=W)
        np.exp(W, out=W)
        log_norm = np.log(W.sum(axis=1)) + ml[:, 0]
        # tilted weights
        np.multiply(R, lam, out=X)
        np.add(X, L, out=X)
        mx = X.max(axis=1, keepdims=True)
        np.subtract(X, mx, out=X)
        np.exp(X, out=X)
        z = X.sum(axis=1)
        np.multiply(X, R, out=W)
        m1 = W.sum(axis=1) / z
        np.multiply(W, R, out=W)
        m2 = W.sum(axis=1) / z
        log_partition[i0:i1] = np.log(z) + mx[:, 0] - log_norm
        mean[i0:i1] = m1
        var[i0:i1] = m2 - m1 * m1
    kl = lam * mean - log_partition
    return log_partition, mean, var, kl


def torch_tilt_stats(logits, rewards, lam):
    """The same statistics with torch CPU tensors (shared memory, no copy): logsumexp for
    both normalisers, softmax weights for the moments.  None if torch is not installed."""
    import torch

    L = torch.from_numpy(np.asarray(logits))
    R = torch.from_numpy(np.asarray(rewards))
    log_norm = torch.logsumexp(L, dim=1)
    X = L + lam * R
    log_z = torch.logsumexp(X, dim=1)
    W = torch.softmax(X, dim=1)
    m1 = (W * R).sum(dim=1)
    m2 = (W * R * R).sum(dim=1)
    log_partition = log_z - log_norm
    return log_partition, m1, m2 - m1 * m1, lam * m1 - log_partition


@functools.cache
def _numba_kernels():
    """The numba loops below, compiled lazily (None if numba is not installed)."""
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(parallel=True)
    def tilt_stats_rows(L, R, lam, out):
        # two passes per row, rows in parallel: what a researcher writes in numba
        for i in numba.prange(L.shape[0]):
            ml = -np.inf
            mx = -np.inf
            for j in range(L.shape[1]):
                x = L[i, j] + lam * R[i, j]
                ml = max(ml, L[i, j])
                mx = max(mx, x)
            zl = 0.0
            z = 0.0
            s1 = 0.0
            s2 = 0.0
            for j in range(L.shape[1]):
                r = R[i, j]
                zl += math.exp(L[i, j] - ml)
                w = math.exp(L[i, j] + lam * r - mx)
                z += w
                s1 += w * r
                s2 += w * r * r
            log_partition = (math.log(z) + mx) - (math.log(zl) + ml)
            mean = s1 / z
            out[0, i] = log_partition
            out[1, i] = mean
            out[2, i] = s2 / z - mean * mean
            out[3, i] = lam * mean - log_partition

    @numba.njit(parallel=True)
    def logsumexp_rows(X, out):
        for i in numba.prange(X.shape[0]):
            m = -np.inf
            for j in range(X.shape[1]):
                m = max(m, X[i, j])
            s = 0.0
            for j in range(X.shape[1]):
                s += math.exp(X[i, j] - m)
            out[i] = math.log(s) + m

    return numba, tilt_stats_rows, logsumexp_rows


def numba_available() -> bool:
    return _numba_kernels() is not None


def numba_tilt_stats(logits, rewards, lam, n_threads=2):
    """Tilted statistics by a plain numba ``@njit(parallel=True)`` loop (no fastmath):
    rows in parallel, two passes per row (the maxima of the logits and of the tilted
    logits, then the two normalisers and the two moment sums).  Returns what
    numpy_tiled_tilt_stats and tiltlab.tilt_stats return: (Lambda, mean, variance, KL),
    with the same lack of protection against cancellation as numpy_tiled_tilt_stats.
    Compiles on the first call for each dtype (benchmarks warm it up first)."""
    numba, rows, _ = _numba_kernels()
    numba.set_num_threads(n_threads)
    out = np.empty((4, logits.shape[0]))
    rows(logits, rewards, float(lam), out)
    return out[0], out[1], out[2], out[3]


def numba_logsumexp(x, n_threads=2):
    """Row-wise log-sum-exp by a plain numba loop: max, then sum of exp (two passes)."""
    numba, _, rows = _numba_kernels()
    numba.set_num_threads(n_threads)
    out = np.empty(x.shape[0])
    rows(x, out)
    return out


def numpy_tiled_logsumexp(x, tile_elements=1 << 15):
    """Row-wise log-sum-exp in L2-sized tiles with a preallocated buffer."""
    x = np.asarray(x)
    n, V = x.shape
    out = np.empty(n)
    if n == 1:
        # one long row: tiles along the row, merged with running maxima
        buf = np.empty(min(V, tile_elements), x.dtype)
        m, s = -np.inf, 0.0
        for j0 in range(0, V, tile_elements):
            seg = x[0, j0:j0 + tile_elements]
            b = buf[:seg.size]
            bm = float(seg.max())
            if bm > m:
                s *= np.exp(m - bm)
                m = bm
            np.subtract(seg, m, out=b)
            np.exp(b, out=b)
            s += float(b.sum())
        out[0] = m + np.log(s)
        return out
    rows = max(1, tile_elements // V)
    buf = np.empty((rows, V), x.dtype)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        X, B = x[i0:i1], buf[:i1 - i0]
        mx = X.max(axis=1, keepdims=True)
        np.subtract(X, mx, out=B)
        np.exp(B, out=B)
        out[i0:i1] = np.log(B.sum(axis=1)) + mx[:, 0]
    return out


def numpy_fft_sequence_bon(logits, rewards, length, log_n):
    """Sequence best-of-N metrics by the plain NumPy prototype of SPEC section 4's method.

    One tilt ``lam(log_n / length)``, the per-token lattice law raised to the power
    ``length`` by one FFT over the whole lattice, untilted, values below 1e-11 of the
    peak dropped, then the level law of tiltlab.reference.  Stationary models with
    integer rewards only.  Returns (expected reward, KL(pi_N || p^n), win rate).
    """
    from tiltlab import reference

    lp = logits - reference.logsumexp(logits)
    k = np.rint(rewards - rewards.min()).astype(np.int64)
    K = int(k.max())
    lam = float(reference.solve_lambda(logits, k.astype(float), log_n / length))
    m = np.bincount(k, weights=np.exp(lp), minlength=K + 1)
    with np.errstate(divide="ignore"):
        lx = np.log(m) + lam * np.arange(K + 1)
    top = lx.max()
    x = np.exp(lx - top)
    log_z = top + np.log(x.sum())  # Lambda(lam) per token
    x /= x.sum()
    size = length * K + 1
    pt = np.fft.irfft(np.fft.rfft(x, size) ** length, size)
    keep = pt >= 1e-11 * pt.max()
    s = np.flatnonzero(keep)
    log_mass = np.log(pt[s]) - lam * s + length * log_z
    total = np.exp(log_mass).sum()
    values = s.astype(float)
    if total < 1 - 1e-9:  # the mass below the window, as one level
        values = np.append(values[0] - 1, values)
        log_mass = np.append(np.log1p(-total), log_mass)
    else:
        log_mass -= np.log(total)
    log_w, log_f, _ = reference._bon_level_law(log_mass, log_n)
    w = np.exp(log_w)
    f_prev = np.append(0.0, np.exp(log_f[:-1]))
    kl = np.sum(np.where(w > 0, w * (log_w - log_mass), 0.0))
    er = np.sum(w * values) + length * rewards.min()
    wr = np.sum(w * (f_prev + np.exp(log_mass) / 2))
    return er, kl, wr


def monte_carlo_soft_bon(logits, rewards, n, temperature, draws, rng):
    """What users write today for soft best-of-n: simulate, histogram, plug-in KL.

    ``draws`` rounds of n candidates from p (``Generator.choice``), the winner picked with
    probability ``softmax(r / temperature)`` among them (Gumbel-max), its outcome counted;
    the law is the histogram and ``KL(pi || p)`` the plug-in sum over the observed
    outcomes.  Returns (histogram law, KL estimate)."""
    lg = np.asarray(logits, dtype=np.float64)
    p = np.exp(lg - lg.max())
    p /= p.sum()
    r = np.asarray(rewards, dtype=np.float64)
    cand = rng.choice(p.size, size=(draws, int(n)), p=p)
    score = r[cand] / temperature + rng.gumbel(size=cand.shape)
    win = cand[np.arange(draws), np.argmax(score, axis=1)]
    hist = np.bincount(win, minlength=p.size) / draws
    seen = hist > 0
    return hist, float(np.sum(hist[seen] * np.log(hist[seen] / p[seen])))
