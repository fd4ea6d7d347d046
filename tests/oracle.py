"""High-precision (mpmath) ground truth for small cases.

Independent of both the compiled kernels and tiltlab.reference: plain sums at 50+ digits,
and derivatives of the cumulant generating function by mpmath's numerical
differentiation (so cumulants are not checked against the moment recursion they use).
"""

from __future__ import annotations

import mpmath as mp
import numpy as np

DPS = 50


def _row(logits, rewards):
    keep = [(mp.mpf(float(a)), mp.mpf(float(b))) for a, b in zip(logits, rewards, strict=True)
            if a != -np.inf]
    m = max(a for a, _ in keep)
    z = mp.fsum(mp.exp(a - m) for a, _ in keep)
    return [(mp.exp(a - m) / z, b) for a, b in keep]


def log_partition(logits, rewards, lam):
    with mp.workdps(DPS):
        row = _row(logits, rewards)
        lam = mp.mpf(lam)
        top = max(b for _, b in row)
        return mp.log(mp.fsum(p * mp.exp(lam * (b - top)) for p, b in row)) + lam * top


def tilt_stats(logits, rewards, lam):
    """(Lambda, mean, variance, kl) at DPS digits, as mpf."""
    with mp.workdps(DPS):
        row = _row(logits, rewards)
        lam = mp.mpf(lam)
        shift = max(lam * b for _, b in row)
        w = [(p * mp.exp(lam * b - shift), b) for p, b in row]
        z = mp.fsum(x for x, _ in w)
        lp = mp.log(z) + shift
        mean = mp.fsum(x * b for x, b in w) / z
        var = mp.fsum(x * (b - mean) ** 2 for x, b in w) / z
        kl = lam * mean - lp
        return lp, mean, var, kl


def cumulants(logits, rewards, order, lam, dps=DPS + 30):
    """kappa_1..kappa_order as derivatives of Lambda at lam (mpmath numerical diff; the
    working precision must exceed the decades between Lambda and its derivatives)."""
    with mp.workdps(dps):
        row = _row(logits, rewards)

        def cgf(t):
            shift = max(t * b for _, b in row)
            return mp.log(mp.fsum(p * mp.exp(t * b - shift) for p, b in row)) + shift

        return [mp.diff(cgf, mp.mpf(lam), k) for k in range(1, order + 1)]


def kl_max(logits, rewards):
    with mp.workdps(DPS):
        row = _row(logits, rewards)
        top = max(b for _, b in row)
        return -mp.log(mp.fsum(p for p, b in row if b == top))


def kl_divergence(logits_p, logits_q):
    with mp.workdps(DPS):
        p = _row(logits_p, np.zeros(len(logits_p)))
        q_logits = [mp.mpf(float(x)) for x in logits_q if x != -np.inf]
        mq = max(q_logits)
        log_zq = mp.log(mp.fsum(mp.exp(x - mq) for x in q_logits)) + mq
        mp_l = [mp.mpf(float(x)) for x in logits_p if x != -np.inf]
        m = max(mp_l)
        log_zp = mp.log(mp.fsum(mp.exp(x - m) for x in mp_l)) + m
        total = mp.mpf(0)
        for a, b in zip(logits_p, logits_q, strict=True):
            if a == -np.inf:
                continue
            if b == -np.inf:
                return mp.inf
            pa = mp.exp(mp.mpf(float(a)) - log_zp)
            total += pa * ((mp.mpf(float(a)) - log_zp) - (mp.mpf(float(b)) - log_zq))
        del p
        return total


def logsumexp(values):
    with mp.workdps(DPS):
        vals = [mp.mpf(float(v)) for v in values if v != -np.inf]
        if not vals:
            return -mp.inf
        m = max(vals)
        return mp.log(mp.fsum(mp.exp(v - m) for v in vals)) + m


def solve_lambda(logits, rewards, delta):
    """lam >= 0 with KL(phi_lam || p) = delta, by mpmath root finding."""
    with mp.workdps(DPS):

        def f(t):
            return tilt_stats(logits, rewards, t)[3] - mp.mpf(delta)

        lo, hi = mp.mpf(0), mp.mpf(1)
        while f(hi) < 0:
            lo, hi = hi, hi * 2
        for _ in range(200):  # plain bisection: slow, but cannot fail
            mid = (lo + hi) / 2
            if f(mid) < 0:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2


def best_of_n(logits, rewards, log_n, dps=60):
    """Exact best-of-N level law at `dps` digits: (log pi over outcomes, kl, E r, win)."""
    with mp.workdps(dps):
        ln = mp.mpf(log_n)
        n = mp.exp(ln)
        keep = [(i, mp.mpf(float(a)), float(b)) for i, (a, b) in
                enumerate(zip(logits, rewards, strict=True)) if a != -np.inf]
        m = max(a for _, a, _ in keep)
        z = mp.fsum(mp.exp(a - m) for _, a, _ in keep)
        p = {i: mp.exp(a - m) / z for i, a, _ in keep}
        values = sorted({b for _, _, b in keep})
        mass = [mp.fsum(p[i] for i, _, b in keep if b == v) for v in values]
        # F_j from the survival (1 - e^-480 is 1 at 60 digits): log F = log1p(-S)
        surv = [mp.fsum(mass[j + 1:]) for j in range(len(values))]
        log_cdf = [mp.log1p(-s) for s in surv]
        cdf = [mp.exp(lc) for lc in log_cdf]
        powers = [mp.exp(n * lc) for lc in log_cdf]
        w = [powers[0]] + [powers[j] - powers[j - 1] for j in range(1, len(values))]
        kl = mp.fsum(wj * mp.log(wj / mj) for wj, mj in zip(w, mass, strict=True) if wj > 0)
        er = mp.fsum(wj * v for wj, v in zip(w, values, strict=True))
        win = mp.fsum(w[j] * ((cdf[j - 1] if j else 0) + mass[j] / 2) for j in range(len(w)))
        logp = []
        for i in range(len(logits)):
            if i not in p:
                logp.append(-mp.inf)
                continue
            j = values.index(float(rewards[i]))
            logp.append(mp.log(p[i]) + mp.log(w[j]) - mp.log(mass[j]) if w[j] > 0 else -mp.inf)
        return logp, kl, er, win
