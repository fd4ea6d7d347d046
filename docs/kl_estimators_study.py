"""Regenerates the tables of docs/kl-estimators.md (about a minute on 2 cores).

    python docs/kl_estimators_study.py

Best-of-N on one token of the english-sentiment model (needs the data extra) and of the
zipf model, and best-of-N over memoryless ternary sequences: the exact KL(pi_N || p)
against the analytic log N - (N-1)/N and the sample estimators k1, k2, k3 (1000 samples,
200 repeats), plus the per-token Rao-Blackwellised estimator for sequences.
"""

from __future__ import annotations

import numpy as np

import tiltlab


def rows(policy, label, seed):
    st = tiltlab.estimator_study(policy, 1000, 200, rng=seed)
    out = []
    for i, name in enumerate(st.estimator):
        out.append(f"| {label} | {st.exact_kl:.4f} | {name} | {st.mean[i]:.4f} | "
                   f"{st.bias[i]:+.4f} | {st.std[i]:.4f} |")
    return out


def main():
    print("| policy | exact KL | estimator | mean | bias | std over repeats |")
    print("|---|---:|---|---:|---:|---:|")
    for name in ("english-sentiment", "zipf"):
        m = tiltlab.load_model(name)
        for n in (4, 64, 4096):
            b = tiltlab.best_of_n(m.logits, m.rewards, n=n)
            print("\n".join(rows(b, f"{name}, one token, N = {n}", n)))
    lg, r = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0])
    for length, log_n in ((30, 9.0), (100, 30.0)):
        b = tiltlab.Memoryless(lg, r, length).best_of_n(log_n=log_n)
        print("\n".join(rows(b, f"ternary sequences, n = {length}, log N = {log_n:g}", length)))


if __name__ == "__main__":
    main()
