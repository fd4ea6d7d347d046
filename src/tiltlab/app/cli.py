"""The ``tiltlab`` command line."""

from __future__ import annotations

import argparse
import functools
import os
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
    import platform

    import tiltlab

    info = tiltlab.build_info()
    print(f"tiltlab {info['version']} (Python {platform.python_version()}, "
          f"numpy {np.__version__}, {platform.machine()})")
    print(f"version: {info['version']}")
    forced = info["simd_forced"]
    how = (f"forced by {tiltlab.simd.ENV_VAR}={forced}" if forced and forced != "auto"
           else f"chosen by CPU detection; set {tiltlab.simd.ENV_VAR} to force one")
    print(f"compiled variant: {info['simd']} ({how})")
    rows = ", ".join(f"{v['name']} ({'compiled' if v['compiled'] else 'not compiled'}, "
                     f"{'CPU supports it' if v['supported'] else 'CPU lacks it'})"
                     for v in tiltlab.simd.info())
    print(f"variants: {rows}")
    print(f"openmp: {info['openmp']}")
    if info["forked_child"]:
        print(f"threads: {info['max_threads']} (a forked child: the parent's OpenMP pool does "
              f"not survive fork, so every kernel runs on one thread)")
    else:
        print(f"threads: {info['max_threads']} (OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; pass n_threads= or --jobs to "
              f"change)")
    print(f"chunk_size: {info['chunk_size']}")
    return 0


# --------------------------------------------------------------------------------------
# tables: tiltlab frontier / tiltlab bon
# --------------------------------------------------------------------------------------

def _float_list(text: str, name: str, hint: str = "", finite: bool = True) -> np.ndarray:
    try:
        vals = np.array([float(x) for x in text.replace(" ", "").split(",") if x != ""])
    except ValueError:
        raise ValueError(f"{name} must be a comma-separated list of numbers; got {text!r}") \
            from None
    if vals.size == 0:
        raise ValueError(f"{name} is empty")
    if np.isnan(vals).any() or (finite and not np.all(np.isfinite(vals))):
        raise ValueError(f"{name} must be finite numbers; got {text!r}{hint}")
    return vals


def _emit(columns: dict, fmt: str, header: str, formats: dict) -> None:
    import csv
    import json

    names = list(columns)
    n = len(columns[names[0]])
    if fmt == "json":
        rows = [{k: _jsonable(columns[k][i]) for k in names} for i in range(n)]
        print(json.dumps(rows, indent=1))
    elif fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(names)
        for i in range(n):
            w.writerow([repr(float(columns[k][i])) for k in names])
    else:
        print(header)
        cells = [[formats.get(k, "{:.10g}").format(columns[k][i]) for k in names]
                 for i in range(n)]
        widths = [max(len(k), *(len(r[j]) for r in cells)) for j, k in enumerate(names)]
        print("  ".join(k.rjust(w) for k, w in zip(names, widths, strict=True)))
        for r in cells:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def _jsonable(v):
    v = float(v)
    return v if np.isfinite(v) else str(v)


def _model_arg(args):
    from tiltlab.app.models import load_model

    opts = {"vocab": args.vocab} if args.vocab is not None and args.model == "english-sentiment" \
        else {}
    return load_model(args.model, **opts)


_DEFAULT_GRIDS = {
    "best_of_n": "1,2,4,8,16,64,256,1024",
    "worst_of_n": "1,2,4,8,16,64,256,1024",
    "soft_best_of_n": "0,0.05,0.1,0.2,0.5,1,2,5,inf",
    "best_of_poisson": "0,1,3,7,15,63,255,1023",
    "rewind_and_repeat": "1,0.5,0.25,0.1,0.05,0.01,0.001",
    "calibrated_tilt": "0,1,2,4,8,16,32,64",
}
_PARAMETER = {"best_of_n": "N", "worst_of_n": "N", "best_of_poisson": "mu",
              "rewind_and_repeat": "eps", "calibrated_tilt": "c"}


def _policy_table(args, m) -> int:
    import tiltlab

    method = args.method
    if args.length != 1:
        raise ValueError(f"--method {method} is computed for one token; drop --length")
    if args.kl is not None:
        raise ValueError("--kl applies to --method tilted; give --grid for the other methods")
    kw, pname = {}, _PARAMETER.get(method, "")
    if method == "soft_best_of_n":
        if args.temperature is not None:
            kw["temperature"] = args.temperature
            grid_text, pname = args.grid or "1,2,4,8,16,64,256", "n"
        else:
            kw["n"] = args.n_draws if args.n_draws is not None else 16.0
            grid_text, pname = args.grid or _DEFAULT_GRIDS[method], "temperature"
    else:
        grid_text = args.grid or _DEFAULT_GRIDS[method]
    grid = _float_list(grid_text.replace("inf", "1e999"), "--grid", finite=False)
    f = tiltlab.policy_frontier(m.logits, m.rewards, method, grid, **kw)
    fixed = ", ".join(f"{k} = {v:g}" for k, v in kw.items())
    _emit({pname: f.parameter, "kl": f.kl, "expected_reward": f.expected_reward,
           "win_rate": f.win_rate}, args.format,
          f"# {method} of {m.name}, exact law on one token{'; ' + fixed if fixed else ''}",
          {"win_rate": "{:.6f}", pname: "{:.6g}"})
    return 0


def _frontier(args) -> int:
    import tiltlab
    from tiltlab.app.experiments import win_rate_on_levels

    m = _model_arg(args)
    if args.method != "tilted":
        return _policy_table(args, m)
    if args.grid is not None or args.n_draws is not None or args.temperature is not None:
        raise ValueError("--grid, --n and --temperature apply to the other --method values; "
                         "give budgets with --kl")
    n = args.length
    kmax = float(tiltlab.kl_max(m.logits, m.rewards)) + 0.0
    kl = _float_list(args.kl, "--kl") if args.kl else \
        np.array([0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]) * n
    if np.any(kl < 0):
        raise ValueError(f"--kl budgets must be >= 0; got {args.kl}")
    kl = kl[kl / n <= kmax] if not args.kl else kl
    lam = np.asarray(tiltlab.solve_lambda(m.logits, m.rewards, kl / n), dtype=float)
    st = tiltlab.tilt_stats(m.logits, m.rewards, lam)
    if n == 1:
        win = tiltlab.policy_frontier(m.logits, m.rewards, "tilted", lam).win_rate
    else:
        # lam = inf (budget >= kl_max): every token at the top level; it wins unless the
        # reference draw is all-top too, a tie counted 1/2
        top_all = 1.0 - 0.5 * np.exp(n * tiltlab.reward_levels(m.logits, m.rewards)
                                     .log_masses[-1])
        seq = tiltlab.Memoryless(m.logits, m.rewards, n, step=m.step, n_threads=args.jobs)
        law0 = seq.reward_log_pmf()
        win = [win_rate_on_levels(law0.log_pmf, seq.reward_log_pmf(float(lm)).log_pmf)
               if np.isfinite(lm) else top_all for lm in lam]
    cols = {"kl": n * np.atleast_1d(st.kl) + 0.0, "lam": lam,
            "expected_reward": n * np.atleast_1d(st.mean) + 0.0, "win_rate": np.array(win)}
    _emit(cols, args.format,
          f"# optimal KL-constrained policy (tilt) of {m.name}, sequence length {n}; "
          f"kl_max = {n * kmax:.10g}", {"win_rate": "{:.6f}"})
    return 0


def _bon(args) -> int:
    import tiltlab

    m = _model_arg(args)
    if args.n is not None and args.log_n is not None:
        raise ValueError("give --n or --log-n, not both")
    if args.log_n is not None:
        log_n = _float_list(args.log_n, "--log-n")
        if np.any(log_n < 0):
            raise ValueError(f"--log-n must be >= 0; got {args.log_n}")
    else:
        ns = _float_list(args.n or "1,2,4,8,16,64,256,1024,1e6", "--n",
                         hint=" (for N beyond float range give --log-n)")
        if np.any(ns < 1):
            raise ValueError(f"--n must be >= 1; got {args.n}")
        log_n = np.log(ns)
    n = args.length
    if n == 1:
        b = tiltlab.best_of_n(m.logits, m.rewards, log_n=log_n, n_threads=args.jobs)
        kl, er, wr = b.kl, b.expected_reward, b.win_rate
    else:
        seq = tiltlab.Memoryless(m.logits, m.rewards, n, step=m.step, n_threads=args.jobs)
        bs = [seq.best_of_n(log_n=float(x)) for x in log_n]
        kl = np.array([b.kl for b in bs])
        er = np.array([b.expected_reward for b in bs])
        wr = np.array([b.win_rate for b in bs])
    with np.errstate(over="ignore"):
        nn = ns if args.log_n is None else np.exp(log_n)
        bound = np.where(log_n > 700, log_n - 1.0, log_n + np.expm1(-log_n))
    cols = {"log_n": log_n, "kl": np.asarray(kl, float), "kl_bound": bound,
            "expected_reward": np.asarray(er, float), "win_rate": np.asarray(wr, float),
            "win_rate_bound": 1.0 / (1.0 + np.exp(-log_n))}
    if np.all(log_n < 700):
        cols = {"N": nn, **cols}
    _emit(cols, args.format,
          f"# exact best-of-N of {m.name}, sequence length {n} (SPEC section 3"
          f"{'' if n == 1 else ' and 4'})", {"N": "{:.6g}", "log_n": "{:.6g}"})
    return 0


def _reproduce(args) -> int:
    from tiltlab.app.report import reproduce

    reproduce(args.model, args.out, full=args.full, seed=args.seed, jobs=args.jobs,
              delta=args.delta, quiet=args.quiet, vocab=args.vocab, force=args.force,
              echo=functools.partial(print, flush=True))   # lines reach a log file as they come
    return 0


# --------------------------------------------------------------------------------------
# tiltlab sweep
# --------------------------------------------------------------------------------------

def _grid_value(text: str):
    """One grid value from the command line: an int, else a real number (``1e6``, ``inf``),
    else the text itself (a model or method name)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        v = float(text)
    except ValueError:
        return text
    # 1e6 is the integer it names (the sweep keys 1e6 and 1000000 as one cell anyway)
    return int(v) if v.is_integer() and abs(v) < 2.0 ** 53 else v


def _grid(items: list[str], model: str | None) -> dict:
    grid: dict = {}
    if model is not None:   # first: the outermost loop, the first column
        grid["model"] = [m.strip() for m in model.split(",") if m.strip()]
    for item in items:
        name, eq, values = item.partition("=")
        name = name.strip()
        if not eq or not name.isidentifier():
            raise ValueError(f"--grid expects NAME=V1,V2,...; got {item!r}")
        if name in grid:
            raise ValueError(f"--grid names {name!r} twice" if name != "model" else
                             "give the models with --model or with --grid model=..., not both")
        vals = [_grid_value(v.strip()) for v in values.split(",") if v.strip()]
        if not vals:
            raise ValueError(f"--grid {name}= has no values")
        grid[name] = vals
    return grid


def _task_arg(text: str):
    """A built-in task name, or ``package.module:function`` (a user task)."""
    if ":" not in text:
        return text
    import importlib

    mod, _, attr = text.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())   # as `python -m` does: a module in this folder
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"task {text!r}: cannot import it ({exc})") from None
    if not callable(fn):
        raise TypeError(f"task {text!r} is not callable")
    return fn


def _sweep(args) -> int:
    import json

    from tiltlab.app.sweep import sweep

    out = args.out
    if out is not None:
        if not out.endswith((".csv", ".parquet")):
            raise ValueError(f"--out must end in .csv or .parquet; got {out!r}")
        folder = os.path.dirname(os.path.abspath(out))
        if os.path.isdir(out) or not os.path.isdir(folder) or \
                not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"--out {out!r}: cannot write a file there (its folder does not "
                             f"exist or is not writable)")
    task = _task_arg(args.task)
    model = args.model
    if model is None and isinstance(task, str) and \
            not any(g.partition("=")[0].strip() == "model" for g in args.grid):
        model = "ternary"   # a built-in task's default model
    grid = _grid(args.grid, model)
    table = sweep(task, grid, scheduler=args.scheduler, n_workers=args.workers,
                  seed=args.seed, checkpoint=args.checkpoint,
                  progress=False if args.quiet else None)
    arrays = [c for c in table.columns
              if table[c].map(lambda v: isinstance(v, np.ndarray)).any()]
    if out is None:
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.max_columns", None,
                               "display.width", 200):
            print(table.drop(columns=arrays).to_string(index=False))
        if arrays:
            print(f"(array columns not shown: {', '.join(arrays)}; write them with --out)")
        return 0
    if out.endswith(".csv"):
        flat = table.copy()
        for c in arrays:   # arrays as JSON lists in one cell
            flat[c] = flat[c].map(lambda v: json.dumps(v.tolist())
                                  if isinstance(v, np.ndarray) else v)
        flat.to_csv(out, index=False)
    else:
        table.to_parquet(out, index=False)
    if not args.quiet:
        print(f"tiltlab sweep: {len(table)} cells -> {out}", file=sys.stderr)
    return 0


def _int_at_least(lo: int, what: str):
    """An argparse type: an integer >= lo (one-line message otherwise)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = lo - 1
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


_MODEL_HELP = ("bernoulli, ternary, zipf, english-sentiment (needs tiltlab[data]) or the path "
               "of an .npz file with arrays logits and rewards (optional names, step)")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2), like every other tiltlab error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tiltlab",
        description="Exact numerics for language-model alignment theory. Without a "
        "subcommand, prints the tilted statistics of a built-in Bernoulli model and the "
        "paper's theorem as an exact table.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="tilted statistics of a Bernoulli model and the theorem table")
    sub.add_parser("info", help="version, compiled variant, OpenMP and thread count")

    def common(p, model_default):
        p.add_argument("--model", default=model_default, help=_MODEL_HELP +
                       f" (default {model_default})")
        p.add_argument("--vocab", type=_positive_int, default=None,
                       help="vocabulary size of english-sentiment (default 20000)")
        p.add_argument("--jobs", "-j", type=_positive_int, default=None,
                       help="threads for the compiled kernels (default: all cores)")

    r = sub.add_parser("reproduce", help="the paper's results as figures and a report",
                       description="Run eight exact experiments on a model and write "
                       "report.md, report.html, PNG figures, CSV tables and run.json.")
    common(r, "ternary")
    r.add_argument("--out", default="tiltlab-report",
                   help="output folder (default ./tiltlab-report): new, empty or a report "
                   "written by tiltlab reproduce; the report is written aside and moved "
                   "into place whole when complete")
    r.add_argument("--force", action="store_true",
                   help="replace --out even if it is a non-empty folder tiltlab reproduce "
                   "did not write (everything in it is removed)")
    size = r.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="full", action="store_false",
                      help="small sizes, under a minute (default)")
    size.add_argument("--full", dest="full", action="store_true",
                      help="large sizes: n up to 10^5, 10^6 samples")
    r.set_defaults(full=False)
    r.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the samplers (0)")
    r.add_argument("--delta", type=float, default=None,
                   help="per-token KL budget; N = e^(n delta) (default 0.3 or kl_max/4)")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summaries")

    f = sub.add_parser("frontier", help="table of a policy family: KL, reward, win rate",
                       description="The optimal (tilted) policy per KL budget, or with "
                       "--method another policy family over a grid of its parameter.")
    common(f, "bernoulli")
    f.add_argument("--method", default="tilted",
                   choices=("tilted", "best_of_n", "worst_of_n", "soft_best_of_n",
                            "best_of_poisson", "rewind_and_repeat", "calibrated_tilt"),
                   help="policy family (default tilted)")
    f.add_argument("--kl", default=None,
                   help="tilted: comma-separated KL budgets in nats for the whole sequence")
    f.add_argument("--grid", default=None,
                   help="other methods: comma-separated values of the family's parameter "
                   "(N, temperature, mu, eps or c; 'inf' allowed where it means a limit)")
    f.add_argument("--n", dest="n_draws", type=float, default=None,
                   help="soft_best_of_n: the number of candidates (default 16; grid over "
                   "the temperature)")
    f.add_argument("--temperature", type=float, default=None,
                   help="soft_best_of_n: a fixed temperature (the grid is then over n)")
    f.add_argument("--length", type=_positive_int, default=1,
                   help="sequence length n of the memoryless model (default 1)")
    f.add_argument("--format", choices=("text", "csv", "json"), default="text")

    b = sub.add_parser("bon", help="table of exact best-of-N: KL, reward, win rate per N")
    common(b, "bernoulli")
    b.add_argument("--n", default=None, help="comma-separated N (real, >= 1; default "
                   "1,2,4,8,16,64,256,1024,1e6)")
    b.add_argument("--log-n", default=None, help="comma-separated log N instead of --n")
    b.add_argument("--length", type=_positive_int, default=1,
                   help="sequence length n of the memoryless model (default 1)")
    b.add_argument("--format", choices=("text", "csv", "json"), default="text")

    w = sub.add_parser(
        "sweep", help="run a task over a grid of parameters (local pool or Dask)",
        description="Run a built-in task (best_of_n, frontier, policy_frontier, "
        "sequence_best_of_n, simulate_best_of_n, estimator_study) or a user task "
        "(package.module:function) on every cell of a grid, reproducibly: each cell's "
        "random stream is keyed by --seed and the cell's parameters. Needs the "
        "distributed extra (pip install \"tiltlab[distributed]\").",
        epilog="example: tiltlab sweep sequence_best_of_n --model ternary "
        "--grid n=1,4,16,1e6 --grid length=10,100,1000 --out table.csv")
    w.add_argument("task", help="built-in task name or package.module:function")
    w.add_argument("--model", default=None,
                   help=_MODEL_HELP + "; several separated by commas (default ternary for "
                   "a built-in task)")
    w.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a parameter and its values (repeat; the cells are the product); "
                   "numbers are ints or reals (1e6, inf), anything else text")
    where = w.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, default=None,
                       help="local processes (default: one per core; 1 = in this process)")
    where.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                       help="address of a Dask scheduler to run the cells on")
    w.add_argument("--seed", type=_nonneg_int, default=0, help="root seed (default 0)")
    w.add_argument("--checkpoint", default=None, metavar="FILE.parquet",
                   help="record finished cells here; a re-run computes only missing cells")
    w.add_argument("--out", default=None, metavar="TABLE.csv|TABLE.parquet",
                   help="write the table (CSV: arrays as JSON lists); default: print it")
    w.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    return parser


_COMMANDS = {"info": _info, "reproduce": _reproduce, "frontier": _frontier, "bon": _bon,
             "sweep": _sweep}


def main(argv=None) -> int:
    from tiltlab.app.models import MissingDependency

    args = _parser().parse_args(argv)
    try:
        return _COMMANDS.get(args.command, _demo)(args)
    except BrokenPipeError:  # e.g. `tiltlab bon | head` (an OSError: caught before those)
        return 0
    except (ValueError, TypeError, MissingDependency, OSError, RuntimeError) as exc:
        # bad input (a malformed model file included: tiltlab.app.models raises ValueError),
        # a missing extra, an I/O error or a sweep whose pool workers keep dying
        # (RuntimeError): one line on stderr, exit status 2
        if os.environ.get("TILTLAB_DEBUG"):
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        notes = getattr(exc, "__notes__", None)
        if notes:   # e.g. the sweep's "in the cell {...}"
            msg += f" ({str(notes[0]).splitlines()[0]})"
        if "step=" in msg and getattr(args, "model", "").endswith(".npz"):
            msg += " (in a model file: add a scalar array 'step' to the .npz)"
        print(f"tiltlab {args.command or ''}: error: {msg}".replace("  ", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tiltlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
