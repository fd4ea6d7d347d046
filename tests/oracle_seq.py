"""Brute-force ground truth for memoryless sequences (SPEC section 4), small cases only.

Every sequence is enumerated with its exact probability at DPS digits (mpmath), independent
of tiltlab and of tiltlab.reference: no lattice detection, no convolution, no level-law
formulas. Sequence rewards are grouped into levels by rounding to a 1e-9 grid.
"""

from __future__ import annotations

import itertools

import mpmath as mp
import numpy as np

DPS = 40
GRID = 9  # rewards equal after round(., GRID) are one level


def _rows(logits, rewards, length):
    """Per position: a list of (token, p(token), reward) over tokens with finite logit."""
    logits = np.asarray(logits, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    v = max(logits.shape[-1], rewards.shape[-1])
    lg = np.broadcast_to(logits, (length, v))
    rw = np.broadcast_to(rewards, (length, v))
    out = []
    for i in range(length):
        keep = [j for j in range(v) if lg[i, j] != -np.inf]
        m = max(mp.mpf(float(lg[i, j])) for j in keep)
        e = {j: mp.exp(mp.mpf(float(lg[i, j])) - m) for j in keep}
        z = mp.fsum(e.values())
        out.append([(j, e[j] / z, mp.mpf(float(rw[i, j]))) for j in keep])
    return out


def _key(reward):
    return round(float(reward), GRID)


def _sequences(logits, rewards, length):
    """All sequences of positive probability: list of (tokens, prob, reward) (mpf)."""
    rows = _rows(logits, rewards, length)
    seqs = []
    for combo in itertools.product(*rows):
        tokens = tuple(c[0] for c in combo)
        prob = mp.fprod(c[1] for c in combo)
        reward = mp.fsum(c[2] for c in combo)
        seqs.append((tokens, prob, reward))
    return seqs, rows


def enumerate_sequences(logits, rewards, length):
    """Law of ``R = sum_i r_i(y_i)`` by enumerating all sequences: dict value -> prob (mpf).

    ``logits``/``rewards`` are ``(V,)`` (stationary) or ``(length, V)``; keys are the
    sequence rewards rounded to ``GRID`` decimals (equal-reward sequences are grouped).
    """
    with mp.workdps(DPS):
        seqs, _ = _sequences(logits, rewards, length)
        law = {}
        for _, prob, reward in seqs:
            k = _key(reward)
            law[k] = law.get(k, mp.mpf(0)) + prob
        return law


def brute_force_sequence_bon(logits, rewards, length, n, lam=0.0, method="auto",
                             max_tuples=20000):
    """Best-of-n (integer n) over sequences by enumeration, at DPS digits.

    ``method="sequences"`` enumerates every n-tuple of sequences literally and keeps the
    first sequence of maximal reward (uniform tie-breaking); ``method="levels"`` enumerates
    n-tuples of reward levels (each with its mass) for the law of the maximum level w_s and
    spreads it over sequences as ``pi(y) = p^n(y) w_s / m_s``: the same law, because the
    maximum depends on the rewards only and ties are broken uniformly. ``"auto"`` takes
    ``"sequences"`` when there are at most ``max_tuples`` tuples.

    Returns a dict (mpf values): ``expected_reward``, ``kl`` (KL(pi || p^n)),
    ``kl_to_tilted`` (KL(pi || phi_lam^n), phi_lam^n formed per sequence as the product of
    per-position tilts ``p_i(y_i) e^{lam r_i(y_i)} / Z_i``), ``win_rate`` (against an
    independent draw from p^n, ties half), ``law`` (level -> w_s) and ``method``.
    """
    with mp.workdps(DPS):
        seqs, rows = _sequences(logits, rewards, length)
        keys = [_key(reward) for _, _, reward in seqs]
        mass = {}
        for (_, prob, _), k in zip(seqs, keys, strict=True):
            mass[k] = mass.get(k, mp.mpf(0)) + prob
        if method == "auto":
            method = "sequences" if len(seqs) ** n <= max_tuples else "levels"
        pi = [mp.mpf(0)] * len(seqs)
        if method == "sequences":
            for tup in itertools.product(range(len(seqs)), repeat=n):
                best = tup[0]
                for j in tup[1:]:
                    if keys[j] > keys[best]:
                        best = j
                pi[best] += mp.fprod(seqs[j][1] for j in tup)
        elif method == "levels":
            levels = sorted(mass)
            w = dict.fromkeys(levels, mp.mpf(0))
            for tup in itertools.product(levels, repeat=n):
                w[max(tup)] += mp.fprod(mass[s] for s in tup)
            for idx, ((_, prob, _), k) in enumerate(zip(seqs, keys, strict=True)):
                pi[idx] = prob * w[k] / mass[k]
        else:
            raise ValueError(f"unknown method {method!r}")
        law = {}
        for p_y, k in zip(pi, keys, strict=True):
            law[k] = law.get(k, mp.mpf(0)) + p_y
        lam = mp.mpf(float(lam))
        log_z = [mp.log(mp.fsum(p * mp.exp(lam * r) for _, p, r in row)) for row in rows]
        log_tilt = [{tok: mp.log(p) + lam * r - lz for tok, p, r in row}
                    for row, lz in zip(rows, log_z, strict=True)]
        expected = kl = kl_tilted = mp.mpf(0)
        for (tokens, prob, reward), p_y in zip(seqs, pi, strict=True):
            if p_y == 0:
                continue
            log_phi = mp.fsum(log_tilt[i][t] for i, t in enumerate(tokens))
            expected += p_y * reward
            kl += p_y * (mp.log(p_y) - mp.log(prob))
            kl_tilted += p_y * (mp.log(p_y) - log_phi)
        win = mp.fsum(law[s] * mass[t] * (1 if s > t else mp.mpf(1) / 2 if s == t else 0)
                      for s in law for t in mass)
        return {"expected_reward": expected, "kl": kl, "kl_to_tilted": kl_tilted,
                "win_rate": win, "law": law, "method": method}
