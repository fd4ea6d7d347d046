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
    return 0


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
