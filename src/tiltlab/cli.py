"""The ``tiltlab`` command line."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _demo(args) -> int:
    import tiltlab

    p1 = 0.3
    logits = np.log([1 - p1, p1])
    rewards = np.array([0.0, 1.0])
    print("tiltlab: the optimal KL-constrained policy of a Bernoulli token model")
    print(f"  p(1) = {p1}, reward r(y) = y, phi_lam ~ p exp(lam r)   (SPEC section 2)")
    print(f"  kl_max = -log p(1) = {tiltlab.kl_max(logits, rewards):.10f}")
    print()
    lams = np.array([0.0, 0.5, 1.0, 2.0, 4.0, np.inf])
    s = tiltlab.tilt_stats(logits, rewards, lams)
    print(f"  {'lam':>6} {'Lambda(lam)':>14} {'mean':>14} {'variance':>14} {'KL(phi||p)':>14}")
    for i, lam in enumerate(lams):
        print(f"  {lam:>6} {s.log_partition[i]:>14.10f} {s.mean[i]:>14.10f} "
              f"{s.variance[i]:>14.10f} {s.kl[i]:>14.10f}")
    print()
    budgets = np.array([0.01, 0.1, 0.5, 1.0, 1.2039728043])
    lam = tiltlab.solve_lambda(logits, rewards, budgets)
    best = tiltlab.frontier(logits, rewards, budgets)
    print(f"  {'KL budget':>10} {'lam':>14} {'optimal E r':>14}")
    for b, lm, m in zip(budgets, lam, best, strict=True):
        print(f"  {b:>10.4g} {lm:>14.10f} {m:>14.10f}")
    print()
    _theorem()
    return 0


def _theorem() -> None:
    """The paper's theorem on a ternary memoryless model, exactly at finite n."""
    import math

    import tiltlab

    logits, rewards, delta = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0]), 0.3
    print("tiltlab: best-of-N over length-n sequences vs the optimal policy (SPEC section 4)")
    print("  p = (0.5, 0.3, 0.2), r = (0, 1, 3), R = sum of token rewards, N = e^(n delta),"
          f" delta = {delta}")
    lam = float(tiltlab.solve_lambda(logits, rewards, delta))
    mean = float(tiltlab.tilt_stats(logits, rewards, lam).mean)
    print(f"  theorem: E R / n -> mean(lam) = {mean:.10f} (lam = {lam:.10f}) and"
          " KL(pi_N || phi^n) / n -> 0")
    print(f"  {'n':>7} {'E R / n':>14} {'KL(pi||phi^n)/n':>16} {'KL - log(n)/2':>14} "
          f"{'n mean - E R':>13} {'log(n)/(2 lam)':>14}")
    for n in (10, 100, 1000, 10_000, 100_000):
        m = tiltlab.Memoryless(logits, rewards, n)
        b = m.best_of_n(log_n=n * delta)
        kl = float(b.kl_to_tilted(lam))
        print(f"  {n:>7} {b.expected_reward / n:>14.10f} {kl / n:>16.10f} "
              f"{kl - 0.5 * math.log(n):>14.6f} {n * mean - b.expected_reward:>13.6f} "
              f"{math.log(n) / (2 * lam):>14.6f}")


def _info(args) -> int:
    import tiltlab

    for k, v in tiltlab.build_info().items():
        print(f"{k}: {v}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="tiltlab",
        description="Exact numerics for language-model alignment theory. "
        "Without a subcommand, prints the tilted statistics of a built-in Bernoulli model.",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="tilted statistics of the built-in Bernoulli model (default)")
    sub.add_parser("info", help="version, OpenMP and thread count of the compiled core")
    args = parser.parse_args(argv)
    if args.command == "info":
        return _info(args)
    return _demo(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
