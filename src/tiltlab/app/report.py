"""``tiltlab reproduce``: run the experiments, draw the figures, write the report.

Output directory layout: ``report.md`` and ``report.html`` (images embedded), one PNG per
figure, every plotted number as CSV (one file per table, named in the report),
``run.json`` (versions, seed, model, sizes, timings) and the stamp ``.tiltlab-report``
(signature and list of files: how a later run recognises a folder it wrote).  The folder is
written aside and swapped in whole (``tiltlab.app._staging``): a killed or failed run never
leaves a partial or mixed report.  Figures use matplotlib's Agg canvas directly (no pyplot
state, no display needed).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import platform
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

import tiltlab
from tiltlab.app import _staging
from tiltlab.app.experiments import EXPERIMENTS, Context, Experiment, Sizes
from tiltlab.app.models import MissingDependency, load_model
from tiltlab.tokenmodel import Model

__all__ = ["reproduce", "write_csv", "read_csv"]

_FIGURE_ORDER = ("frontier", "kl_to_tilt", "large_deviations", "cumulants", "samples",
                 "win_rate", "policies", "markov")


# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------

def _cell(v) -> str:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))          # shortest round-trip representation
    if isinstance(v, (np.integer,)):
        return str(int(v))
    return str(v)


def write_csv(path: Path, columns: dict) -> None:
    """Columns of equal length to CSV, floats written so that they read back exactly."""
    names = list(columns)
    cols = [np.asarray(columns[k]) for k in names]
    lengths = {c.shape[0] for c in cols}
    if len(lengths) != 1:
        raise ValueError(f"columns of {path.name} differ in length: "
                         f"{dict(zip(names, (c.shape[0] for c in cols), strict=True))}")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*(c.tolist() for c in cols), strict=True):
            w.writerow([_cell(v) for v in row])


def read_csv(path: str | Path) -> dict:
    """A CSV written by :func:`write_csv` as columns (numbers as float64 where they parse)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    names, body = rows[0], rows[1:]
    out = {}
    for j, name in enumerate(names):
        col = [r[j] for r in body]
        try:
            out[name] = np.array([float(c) for c in col], dtype=np.float64)
        except ValueError:
            out[name] = np.array(col)
    return out


# --------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------

def _figure(ncols: int = 1, width: float = 6.4, *, nrows: int = 1, height: float = 4.4,
            **subplots):
    """A matplotlib Figure (Agg, no pyplot state) and its axes as a flat list."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependency('figures need matplotlib: pip install "tiltlab[plot]"') from None
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
    return fig, [a for row in axes for a in row]


# one colour and one marker per sequence length (or Δ): told apart in colour and in grey
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _colors(k: int):
    """``k`` colours of viridis, stopping at its green (its last yellow is too pale on white)."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.8 * i / max(k - 1, 1)) for i in range(k)]


def _series(k: int):
    """(colour, marker) of ``k`` series."""
    return list(zip(_colors(k), (_MARKERS * k)[:k], strict=True))


def _kl_axis(ax) -> None:
    """An axis of KL values starts at 0: a KL is never negative."""
    ax.set_xlim(left=0.0)


def _signed(x: float, fmt: str = ".2f") -> str:
    """``+ 0.92`` or ``− 0.92`` (a true minus sign): a constant added to a formula."""
    return f"{'−' if x < 0 else '+'} {abs(x):{fmt}}"


def _positive(x: np.ndarray) -> np.ndarray:
    """``x`` where positive, NaN (not drawn) elsewhere: what a log axis can show."""
    return np.where(x > 0, x, np.nan)


def _log_limits(ax, values: np.ndarray, decades: float = 6.0) -> None:
    """Limits of a log axis: up to 3x the largest positive value, at most ``decades`` below."""
    v = values[np.isfinite(values) & (values > 0)]
    if v.size:
        hi = 3.0 * float(v.max())
        ax.set_ylim(max(float(v.min()) / 3.0, hi * 10.0 ** -decades), hi)


def _plot_frontier(e: Experiment, model: Model):
    fig, (ax, gap) = _figure(1, 7.0, nrows=2, height=6.6, sharex=True, height_ratios=[3, 2])
    t, b = e.tables["frontier_tilted"], e.tables["frontier_best_of_n"]
    ns = np.unique(b["n"])
    for n, (c, mk) in zip(ns, _series(ns.size), strict=True):
        s = b["n"] == n
        o = np.argsort(b["kl_per_token"][s])
        ax.plot(b["kl_per_token"][s][o], b["reward_per_token"][s][o], "-", marker=mk,
                color=c, ms=4, lw=1, label=f"best-of-N, n = {n:,}")
        gap.plot(b["kl_per_token"][s][o], _positive(b["reward_below_frontier_per_token"][s][o]),
                 "-", marker=mk, color=c, ms=4, lw=1)
    # the optimum last and on top: the long-n best-of-N curves converge onto it
    ax.plot(t["kl_per_token"], t["reward_per_token"], color="black", lw=1.6, zorder=3,
            label="optimal policy φ_λ (tilt)")
    gap.set_yscale("log")
    _log_limits(gap, b["reward_below_frontier_per_token"])
    for a in (ax, gap):
        _kl_axis(a)
        a.grid(alpha=0.3)
    ax.set_ylabel("expected reward per token  E R / n")
    ax.set_title(f"{model.name}: reward–KL frontier per token, N = e^(nΔ)")
    ax.legend(fontsize=8, loc="lower right")
    gap.set_xlabel("KL per token  KL(π‖pⁿ)/n  [nats]")
    gap.set_ylabel("below the frontier per token\nat equal KL (log scale)")
    return fig


def _plot_kl_to_tilt(e: Experiment, model: Model):
    fig, (a1, a2) = _figure(2, 5.2)
    t = e.tables["kl_to_tilt"]
    deltas = list(dict.fromkeys(t["delta"].tolist()))
    for d, (c, mk) in zip(deltas, _series(len(deltas)), strict=True):
        s = t["delta"] == d
        n, kl = t["n"][s], t["kl_to_tilted"][s]
        a1.loglog(n, kl / n, "-", marker=mk, color=c, ms=4, label=f"Δ = {d:.3g}")
        a2.semilogx(n, kl, "-", marker=mk, color=c, ms=4, label=f"Δ = {d:.3g}")
        const = kl[-1] - 0.5 * math.log(n[-1])
        # the asymptote only where it is positive: a KL never is negative
        grid = np.geomspace(max(float(n[0]), math.exp(-2.0 * const)), float(n[-1]), 200)
        a2.semilogx(grid, 0.5 * np.log(grid) + const, "--", color=c, lw=1.2,
                    label=f"½ log n {_signed(const)}")
    a1.set_xlabel("sequence length n")
    a1.set_ylabel("KL(π_N‖φ_λⁿ) / n  [nats per token]")
    a1.set_title("per token → 0")
    a2.set_xlabel("sequence length n")
    a2.set_ylabel("KL(π_N‖φ_λⁿ)  [nats]")
    a2.set_title("total ≈ ½ log n + c")
    a2.set_ylim(bottom=0.0)
    for a in (a1, a2):
        a.grid(alpha=0.3, which="both")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{model.name}: best-of-N against the tilted policy")
    return fig


def _plot_large_deviations(e: Experiment, model: Model):
    fig, (ax, dev) = _figure(1, 7.0, nrows=2, height=6.6, sharex=True, height_ratios=[3, 2])
    t, r = e.tables["large_deviations"], e.tables["rate_function"]
    ns = np.unique(t["n"])
    for n, (c, mk) in zip(ns, _series(ns.size), strict=True):
        s = t["n"] == n
        ax.plot(t["x"][s], t["minus_log_tail_over_n"][s], mk, color=c, ms=2.5, mew=0,
                label=f"−(1/n) log P(tail), n = {n:,}")
        # the distance to I(x), where the curves above lie on top of each other
        dev.plot(t["x"][s], _positive(t["minus_log_tail_over_n"][s] - t["rate"][s]), mk,
                 color=c, ms=2.5, mew=0)
    # the limit last and on top, thin: the points of the largest n converge onto it
    ax.plot(r["x"], r["rate"], color="black", lw=1.0, zorder=3, label="rate function I(x)")
    finite = r["rate"][np.isfinite(r["rate"])]
    ax.set_ylim(0.0, 1.1 * finite.max())        # a rate is never negative
    dev.set_yscale("log")
    d = t["minus_log_tail_over_n"] - t["rate"]
    d = d[np.isfinite(d) & (d > 0)]
    if d.size:   # the few rounding-level distances at the end points would flatten the rest
        dev.set_ylim(np.percentile(d, 1) / 3, 3 * d.max())
    for a in (ax, dev):
        a.axvline(e.notes["mean"], color="grey", lw=0.8, ls=":",
                  label="mean E r (I = 0)" if a is ax else None)
        a.grid(alpha=0.3)
    ax.set_ylabel("−(1/n) log P(R/n beyond x)")
    ax.set_title(f"{model.name}: large deviations from the exact law")
    ax.legend(fontsize=8, markerscale=2)
    dev.set_xlabel("x = R / n  (reward per token)")
    dev.set_ylabel("−(1/n) log P − I(x)\n(log scale)")
    return fig


def _plot_cumulants(e: Experiment, model: Model):
    fig, (a1, a2) = _figure(2, 5.2)
    t = e.tables["cumulants"]
    ks = np.unique(t["k"]).astype(int)
    tok = np.array([t["token_cumulant"][t["k"] == k][0] for k in ks])
    neg = tok < 0
    a1.bar(ks, np.abs(tok), color="lightgrey", edgecolor="black", label="|κ_k(r)|, one token")
    if neg.any():
        a1.bar(ks[neg], np.abs(tok[neg]), color="none", edgecolor="black", hatch="//",
               label="(hatched: κ_k(r) < 0)")
    ns = np.unique(t["n"])
    for i, (n, (c, mk)) in enumerate(zip(ns, _series(ns.size), strict=True)):
        s = t["n"] == n
        a1.plot(t["k"][s] + 0.15 * (i - (ns.size - 1) / 2), np.abs(t["scaled_cumulant"][s]),
                mk, color=c, ms=5, label=f"|κ_k(R)|/n, exact law, n = {n:,}")
    if np.all(tok != 0):
        a1.set_yscale("log")
    a1.set_xlabel("order k")
    a1.set_ylabel("|κ_k|  (bars: one token; markers: R / n)")
    a1.set_title("κ_k(R)/n = κ_k(r)")
    a1.set_xticks(ks)
    a1.legend(fontsize=7)
    f, g = e.tables["scaled_cgf_formula"], e.tables["scaled_cgf_exact_law"]
    for i, (n, (c, mk)) in enumerate(zip(np.unique(g["n"]), _series(ns.size), strict=True)):
        s = g["n"] == n       # concentric open markers: equal values stay visible
        a2.plot(g["t"][s][::2], g["scaled_cgf_exact_law"][s][::2], mk, color=c, mfc="none",
                ms=3 + 3 * (ns.size - 1 - i), mew=1.2,
                label=f"(1/n) log E e^(tR), exact law, n = {n:,}")
    # the formula last and on top, thin: it runs through the centre of every marker
    a2.plot(f["t"], f["scaled_cgf_renyi"], color="black", lw=1.0, zorder=3,
            label="t·(log Σ e^r − H_(1+t)(p; softmax r))")
    a2.set_xlabel("t")
    a2.set_ylabel("scaled CGF  (1/n) log E e^(tR)")
    a2.set_title("scaled CGF = Rényi cross-entropy form")
    a2.legend(fontsize=7, loc="upper left")
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.suptitle(f"{model.name}: cumulants of the sequence reward")
    return fig


def _plot_samples(e: Experiment, model: Model):
    fig, (a1, a2) = _figure(2, 5.8)
    h, w = e.tables["samples_histogram"], e.tables["samples_tokens"]
    width = np.min(np.diff(h["reward"])) if h["reward"].size > 1 else 1.0
    a1.bar(h["reward"], h["sampled_freq"], width=width, color="tab:blue", alpha=0.5,
           label=f"sampled ({int(h['sampled_count'].sum()):,} draws)")
    # the exact law as steps over the same cells: where the bars match it, they fill it
    a1.step(h["reward"], h["exact_prob"], where="mid", color="black", lw=1.0,
            label="exact law")
    seen = h["reward"][h["exact_prob"] > 1e-5 * h["exact_prob"].max()]
    pad = 0.02 * (seen[-1] - seen[0]) + width
    a1.set_xlim(seen[0] - pad, seen[-1] + pad)
    a1.set_ylim(bottom=0.0)
    a1.set_xlabel(f"best-of-N sequence reward R (n = {e.notes['n']})")
    a1.set_ylabel("probability")
    a1.set_title("sampled best-of-N rewards vs the exact law")
    a1.legend(fontsize=8)
    k = w["token"].size
    y = np.arange(k)[::-1]
    hgt = 0.27
    a2.barh(y + hgt, w["p"], hgt, color="lightgrey", edgecolor="grey", label="p (reference)")
    a2.barh(y, w["best_of_n_exact"], hgt, color="tab:blue", label="best-of-N (exact)")
    a2.barh(y - hgt, w["tilted"], hgt, color="tab:orange", label="tilted φ_λ")
    a2.plot(w["best_of_n_sampled"], y, "D", color="white", mec="black", mew=1.5, ms=7,
            zorder=3, label="best-of-N (sampled)")
    a2.set_yticks(y, [f"{tok} ({r:+.1f})" for tok, r in zip(w["token"], w["reward"],
                                                             strict=True)], fontsize=8)
    a2.set_ylim(-0.5 - 1.5 * hgt, k - 0.5 + 1.5 * hgt)
    a2.set_xlim(0.0, None)
    a2.set_xlabel("probability of the token at one position")
    a2.set_ylabel("token (its reward r)")
    a2.set_title("tokens best-of-N raises most")
    # outside the bars: with many tokens any corner inside may cover one
    a2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.suptitle(f"{model.name}: samples of best-of-N (n = {e.notes['n']}) against exact laws")
    return fig


def _plot_win_rate(e: Experiment, model: Model):
    fig, (a1, a2) = _figure(2, 5.2)
    bd = e.tables["win_rate_bound"]
    for a, key, title in ((a1, "win_rate_token", "one token"),
                          (a2, "win_rate_sequence", f"sequences, n = {e.notes['L']}")):
        t = e.tables[key]
        for pol, c, mk, lab in (("best_of_n", "tab:blue", "o", "best-of-N"),
                                ("tilted", "tab:orange", "s", "tilted φ_λ")):
            s = t["policy"] == pol
            # not clipped at the top: a win rate of 1 sits on the axis, not half under it
            a.plot(t["kl"][s], t["win_rate"][s], "-", marker=mk, ms=4, lw=2.5 if
                   pol == "best_of_n" else 1.5, color=c, label=lab, clip_on=False)
        # the curve last and on top: where best-of-N meets it, black dashes over blue
        a.plot(bd["kl"], bd["win_rate"], color="black", ls=(0, (4, 3)), lw=1.4, zorder=4,
               label="without reward atoms:\n(log N − (N−1)/N, N/(N+1))")
        top = float(np.max(t["kl"]))
        a.set_xlim(0, top * 1.05)
        a.set_ylim(min(0.5, float(np.min(t["win_rate"]))) - 0.02, 1.0)   # a probability
        a.set_xlabel("KL(π‖p) [nats]")
        a.set_ylabel("win rate against p (ties ½)")
        a.set_title(title)
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{model.name}: win rate vs KL")
    return fig


_POLICY_STYLE = {     # colour, line style, marker, label: told apart where curves coincide
    "tilted": ("black", "-", None, "tilt p·e^(λr)"),
    "calibrated_tilt": ("tab:red", "-", "s", "calibrated tilt p·e^(cQ)"),
    "best_of_n": ("tab:blue", "-", "o", "best-of-N"),
    "soft_best_of_n": ("tab:green", "--", "^", "soft best-of-n (n = 64)"),
    "best_of_poisson": ("tab:purple", ":", "D", "best-of-Poisson"),
    "rewind_and_repeat": ("tab:orange", "-.", "x", "rewind-and-repeat"),
}


def _plot_policies(e: Experiment, model: Model):
    fig, axes = _figure(2, 5.4, nrows=2, height=7.4, sharex=True, height_ratios=[3, 2])
    axes = [axes[:2], axes[2:]]
    t = e.tables["policies"]
    panels = (("expected_reward", "reward_below_tilt", "tilted"),
              ("win_rate", "win_rate_below_calibrated_tilt", "calibrated_tilt"))
    for j, (method, (c, ls, mk, lab)) in enumerate(_POLICY_STYLE.items()):
        s = t["method"] == method
        if not s.any():
            continue
        o = np.argsort(t["kl"][s])
        kl = t["kl"][s][o]
        style = dict(ls=ls, color=c, lw=2.2 if mk is None else 1.4, marker=mk, ms=5,
                     mfc="none" if mk not in (None, "x") else c, mew=1.2,
                     markevery=(0.025 * j, 0.15), label=lab)
        for (what, gap, best), top, bottom in zip(panels, axes[0], axes[1], strict=True):
            top.plot(kl, t[what][s][o], **style)
            if method != best:       # the optimum's own gap is 0: nothing to draw on a log axis
                bottom.plot(kl, _positive(t[gap][s][o]), **style)
    for (_, gap, best), top, bottom in zip(panels, axes[0], axes[1], strict=True):
        g = t[gap][t["method"] != best]
        hi = float(np.max(g)) if g.size and np.max(g) > 0 else 1.0
        bottom.set_yscale("log")
        bottom.set_ylim(1e-6 * hi, 3 * hi)
        for a in (top, bottom):
            a.axvline(e.notes["kl"], color="grey", lw=0.8, ls=":",
                      label=f"KL = {e.notes['kl']:.3g} (numbers in the caption)"
                      if a is top else None)
            a.grid(alpha=0.3, which="major")
            _kl_axis(a)
        bottom.set_xlabel("KL(π‖p) [nats]")
        top.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("expected reward E r")
    axes[0][0].set_title("reward: the tilt is optimal")
    axes[1][0].set_ylabel("below the tilt's reward\nat equal KL (log scale)")
    axes[0][1].set_ylabel("win rate against p (ties ½)")
    axes[0][1].set_title("win rate: the calibrated tilt is optimal")
    axes[1][1].set_ylabel("below the calibrated tilt's\nwin rate at equal KL (log scale)")
    fig.suptitle(f"{model.name}: inference-time policies on one token, exact laws")
    return fig


_MARKOV_STYLE = {    # the Markov model filled and on top, its twin open and larger: where
    # the two coincide (KL(pi_N||p) depends on N and little else) both stay visible
    "markov": dict(color="tab:red", marker="o", ms=4, zorder=4, label="Markov model"),
    "memoryless": dict(color="tab:blue", marker="s", ms=7, mfc="none", mew=1.2, zorder=3,
                       label="memoryless twin"),
}


def _plot_markov(e: Experiment, model: Model):
    fig, axes = _figure(3, 4.6, nrows=2, height=6.8, sharex=True, height_ratios=[3, 2])
    (k1, r1, d1), (k2, r2, d2) = axes[:3], axes[3:]
    t = e.tables["markov"]
    delta = float(t["delta"][0])
    for kind, style in _MARKOV_STYLE.items():
        s = t["model"] == kind
        n = t["n"][s].astype(float)
        c, lab = style["color"], style["label"]
        line = dict(style, lw=1.2)
        kl = t["kl_to_tilted"][s]
        const = float(t["kl_minus_half_log_n"][s][-1])
        k1.loglog(n, kl / n, "-", **line)
        # the asymptote over the last one and a half decades, where it applies
        grid = np.geomspace(max(float(n[0]), float(n[-1]) / 30.0), float(n[-1]), 100)
        k1.loglog(grid, (0.5 * np.log(grid) + const) / grid, "--", color=c, lw=1.0,
                  zorder=5, label=f"(½ log n {_signed(const)}) / n")
        k2.semilogx(n, t["kl_minus_half_log_n"][s], "-", **line)
        k2.axhline(const, color=c, lw=0.8, ls="--")
        r1.semilogx(n, t["tilt_reward_per_token"][s], "-", color=c, lw=1.6,
                    label=f"tilt φ_λ, {lab}")
        r1.semilogx(n, t["best_of_n_reward_per_token"][s], ":",
                    **dict(line, lw=1.0, label=f"best-of-N, {lab}"))
        r2.loglog(n, _positive(t["reward_gap_per_token"][s]), "-", **line)
        d1.semilogx(n, t["kl_to_p_per_token"][s], "-", **line)
        d2.loglog(n, _positive(t["kl_deficit_per_token"][s]), "-", **line)
    n_all = np.unique(t["n"]).astype(float)
    d1.axhline(delta, color="black", lw=1.0, ls="--", label=f"Δ = {delta:.3g}")
    d2.loglog(n_all, 1.0 / n_all, ":", color="black", lw=1.2,
              label="1/n (no reward atoms)")
    k1.set_title("best-of-N against the tilt")
    k1.set_ylabel("KL(π_N‖φ_λ) / n  [nats per token]")
    k2.set_ylabel("KL(π_N‖φ_λ) − ½ log n\n[nats]")
    r1.set_title("expected reward per token")
    r1.set_ylabel("E R / n")
    r2.set_ylabel("tilt − best-of-N\n(E R / n, log scale)")
    d1.set_title("KL(π_N‖p) per token")
    d1.set_ylabel("KL(π_N‖p) / n  [nats per token]")
    d1.set_ylim(0.0, 1.1 * delta)                     # a KL is never negative
    d2.set_ylabel("Δ − KL(π_N‖p) / n\n(log scale)")
    for a in axes:
        a.grid(alpha=0.3, which="major")
    for a in (k2, r2, d2):
        a.set_xlabel("sequence length n")
    k1.legend(fontsize=7, loc="upper right")
    r1.legend(fontsize=7, loc="lower right")
    d1.legend(fontsize=7, loc="lower right")
    d2.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{e.notes['model']} (Markov) against its memoryless twin: best-of-N with "
                 f"N = e^(nΔ), Δ = {delta:.3g}")
    return fig


_PLOTS = {
    "frontier": _plot_frontier,
    "kl_to_tilt": _plot_kl_to_tilt,
    "large_deviations": _plot_large_deviations,
    "cumulants": _plot_cumulants,
    "samples": _plot_samples,
    "win_rate": _plot_win_rate,
    "policies": _plot_policies,
    "markov": _plot_markov,
}


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------

def _cells(cols: dict, fmt: dict) -> list:
    """Rows of formatted cells of a table of columns."""
    names = list(cols)
    return [[fmt[k].format(cols[k][i]) if k in fmt else str(cols[k][i]) for k in names]
            for i in range(len(cols[names[0]]))]


def _md_table(cols: dict, fmt: dict) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(row) + " |" for row in _cells(cols, fmt)]
    return "\n".join(lines)


def _html_table(cols: dict, fmt: dict) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in _cells(cols, fmt))
    return f"<table><tr>{head}</tr>{body}</table>"


def _md_to_html(text: str) -> str:
    out = html.escape(text)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)


def _is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, None, closed)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _progress_factory(quiet: bool, stream=None):
    """Progress bars on ``stream`` (default ``sys.stderr``), but only if it is a terminal.

    Redirected to a file or a pipe, tqdm's bars are carriage-return junk; the plain
    ``[k/8] ... (x s)`` summary lines of :func:`reproduce` are then the only progress shown.
    """
    stream = sys.stderr if stream is None else stream
    if quiet or not _is_terminal(stream):
        return lambda it, desc: it
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return lambda it, desc: it

    def progress(it, desc):
        return tqdm(it, desc=desc, leave=False, file=stream, mininterval=0.5,
                    dynamic_ncols=True)

    return progress


def reproduce(model: str | Model = "ternary", out: str | Path = "tiltlab-report", *,
              full: bool = False, seed: int = 0, jobs: int | None = None,
              delta: float | None = None, quiet: bool = False, vocab: int | None = None,
              force: bool = False, experiments=None, echo=print) -> Path:
    """Run the eight experiments of ``tiltlab reproduce`` on a model and write the report.

    The experiments (:mod:`tiltlab.app.experiments`) check the claims of SPEC section 4 (after
    arXiv 2404.01730) exactly: the reward-KL frontier of best-of-N against the tilt,
    ``KL(pi_N || phi_lam^n)`` against n, large deviations, scaled cumulants and the Rényi
    form of the scaled CGF, samples, win rate against KL, and every policy family of
    :mod:`tiltlab.policies` on one token against the two optimal tilts.  The eighth asks
    the question of SPEC section 9: does best-of-N still approach the tilt per token for a
    Markov model, and how fast compared with its memoryless twin?  It uses its own Markov
    model, not ``model``: ``english-letters`` (:func:`tiltlab.models.english_letter_bigrams`)
    if the data extra is installed, else the built-in ``sticky-ternary``
    (:func:`tiltlab.models.sticky_ternary`), at ``delta`` if given, else 0.1 nats per token.

    Parameters
    ----------
    model : str, path or Model, default "ternary"
        A name or ``.npz`` path for :func:`tiltlab.load_model`, or a loaded model.
    out : str or path, default "tiltlab-report"
        Output folder: ``report.md``, ``report.html``, ``fig*.png``, ``*.csv``, ``run.json``
        and the stamp ``.tiltlab-report`` (the signature and the list of files, which is how
        a later run recognises a folder it wrote).  The report is written into a staging
        folder next to ``out`` (``<out>.tiltlab-staging-<pid>-<hex>``) and moved into place
        whole at the end, so ``out`` holds the previous report, byte for byte, until the new
        one is complete, even if the run is killed; an exception removes the staging folder.
        A run killed while swapping leaves the previous report in
        ``<out>.tiltlab-backup-<pid>-<hex>``; the next run puts it back and removes every
        leftover of killed runs.  ``out`` may be new, empty or a report written here.
    full : bool, default False
        The large sizes (n up to 10^5, 10^6 samples) instead of the quick ones.
    seed : int, default 0
        Seed of the samplers; output is identical for any ``jobs``.
    jobs : int, optional
        Threads for the compiled kernels (None: all cores).
    delta : float, optional
        Per-token KL budget, ``N = e^(n delta)`` (default 0.3, or ``kl_max / 4`` if less;
        figure 8: 0.1).
    quiet : bool, default False
        No progress bars and no summary lines.  Otherwise a summary line
        ``[k/8] ... (x s)`` per experiment goes to ``echo``, and progress bars (tqdm, if
        installed) go to ``sys.stderr`` only if it is a terminal: never into a log file or
        a pipe.
    vocab : int, optional
        Vocabulary size of ``english-sentiment``.
    force : bool, default False
        Replace ``out`` even if it is a non-empty folder this function did not write (no
        stamp, or files the stamp does not list): everything in it is removed once the new
        report is complete.  Without it such a folder is refused and left untouched.  The
        current folder, its parents, the home folder and mount points are always refused.
    experiments : list of str, optional
        A subset of ``tiltlab.app.experiments.EXPERIMENTS`` (default: all eight, in order).
    echo : callable, default print
        Where summary lines go.

    Returns
    -------
    pathlib.Path
        The path of ``report.md``.

    Raises
    ------
    ValueError
        Bad model or option; ``out`` refused (a file, a foreign non-empty folder without
        ``force``, the current or home folder, a mount point), not writable, or being
        written by another run at the same time.
    MissingDependency
        matplotlib (or the data extra for ``english-sentiment``) is not installed.

    Examples
    --------
    >>> import tempfile, tiltlab
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = tiltlab.reproduce("bernoulli", d, quiet=True, experiments=["cumulants"])
    ...     print(path.name, sorted(p.name for p in path.parent.glob("*.png")))
    report.md ['fig1_cumulants.png']
    """
    t_start = time.perf_counter()
    # every argument is checked first (an unknown model is reported as such, with or
    # without matplotlib); the dependency is checked before any experiment runs
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if not isinstance(force, bool):
        raise TypeError(f"force must be True or False; got {force!r}")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path; got {out!r}")
    _staging.check(_staging.resolve(out), force)    # refuse early, before the model loads
    keys = list(experiments) if experiments is not None else list(_FIGURE_ORDER)
    unknown = [k for k in keys if k not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(EXPERIMENTS)}")
    if isinstance(model, Model):
        m = model
    else:
        opts = {"vocab": vocab} if (vocab is not None and model == "english-sentiment") else {}
        m = load_model(model, **opts)
    sizes = Sizes.full() if full else Sizes.quick()
    say = (lambda *a: None) if quiet else echo
    ctx = Context(m, sizes, delta=delta, seed=int(seed), n_threads=jobs,
                  progress=_progress_factory(quiet))
    if "markov" in keys:      # figure 8's model and budget, checked before anything runs
        ctx.markov()
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency('tiltlab reproduce draws figures with matplotlib: '
                                'pip install "tiltlab[plot]"') from None
    say(f"tiltlab reproduce: model {m.name} ({m.description}), "
        f"{'full' if full else 'quick'} sizes, Δ = {ctx.delta:.4g}, λ = {ctx.lam:.6g}")
    results, timings, files = [], {}, {}
    with _staging.staged_folder(out, force=force, say=say,
                                stamp={"tiltlab": tiltlab.__version__}) as stage:
        for i, key in enumerate(keys, 1):
            t0 = time.perf_counter()
            e = EXPERIMENTS[key](ctx)
            for stem, cols in e.tables.items():
                write_csv(stage / f"{stem}.csv", cols)
            fig = _PLOTS[key](e, m)
            png = stage / f"fig{i}_{key}.png"
            fig.savefig(png, dpi=110)
            files[key] = (png.name, [f"{stem}.csv" for stem in e.tables])
            timings[key] = round(time.perf_counter() - t0, 3)
            results.append(e)
            say(f"  [{i}/{len(keys)}] {e.summary}  ({timings[key]:.1f} s)")
            _staging.checkpoint("experiment")
        total = time.perf_counter() - t_start
        run = {
            "tiltlab": tiltlab.__version__,
            "command": "tiltlab reproduce",
            "argv": sys.argv[1:],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "numpy": np.__version__,
            "matplotlib": matplotlib.__version__,
            "build": tiltlab.build_info(),
            "seed": int(seed),
            "jobs": jobs,
            "mode": "full" if full else "quick",
            "model": {"name": m.name, "description": m.description,
                      "vocab_size": m.vocab_size, "step": m.step, "source": m.source},
            "delta": ctx.delta,
            "lam": ctx.lam,
            **({"markov": _markov_run(ctx)} if "markov" in keys else {}),
            "sizes": asdict(sizes),
            "timings_seconds": timings,
            "total_seconds": round(total, 3),
            "files": {k: {"figure": v[0], "tables": v[1]} for k, v in files.items()},
        }
        (stage / "run.json").write_text(json.dumps(run, indent=2, default=str) + "\n",
                                        encoding="utf-8")
        _write_reports(stage, m, ctx, results, files, run)
    out = Path(out)
    say(f"report: {out / 'report.md'}  (also report.html, {len(files)} figures, "
        f"CSV tables, run.json) in {total:.1f} s")
    return out / "report.md"


def _markov_run(ctx: Context) -> dict:
    mm, why, d = ctx.markov()
    return {"model": mm.name, "chosen": why, "description": mm.description,
            "n_states": mm.n_states, "source": mm.source, "delta": d}


def _intro(m: Model, ctx: Context, run: dict) -> str:
    return (
        f"Model **{m.name}**: {m.description} (V = {m.vocab_size:,}). Sequences of n tokens "
        f"are drawn independently from p and scored by the sum R of token rewards. Best-of-N "
        f"uses N = e^(nΔ) with Δ = {ctx.delta:.4g} nats per token unless stated; the optimal "
        f"KL-constrained policy at that budget is the tilt φ_λ ∝ p·e^(λr) with "
        f"λ = {ctx.lam:.6g}. Every number is exact (computed from exact lattice laws, no "
        "Monte Carlo) except the sampled panels of figure 5, which check the samplers. "
        + (f"The Markov figure leaves this model for a Markov model "
           f"({run['markov']['model']}) and "
           f"its memoryless twin, at Δ = {run['markov']['delta']:.4g}. "
           if "markov" in run else "") +
        f"Run: tiltlab {run['tiltlab']}, {run['mode']} sizes, seed {run['seed']}, "
        f"{run['total_seconds']:.1f} s; details in run.json.")


def _write_reports(out: Path, m: Model, ctx: Context, results: list, files: dict,
                   run: dict) -> None:
    title = "tiltlab reproduce: Asymptotics of Language Model Alignment (arXiv 2404.01730)"
    md = [f"# {title}", "", _intro(m, ctx, run), ""]
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{_md_to_html(_intro(m, ctx, run))}</p>"]
    for i, e in enumerate(results, 1):
        png, csvs = files[e.key]
        md += [f"## Figure {i}. {e.title}", "", f"![{e.title}]({png})", "", e.caption, "",
               "Data: " + ", ".join(f"[{c}]({c})" for c in csvs), ""]
        b64 = base64.b64encode((out / png).read_bytes()).decode("ascii")
        parts += [f"<h2>Figure {i}. {html.escape(e.title)}</h2>",
                  f'<img alt="{html.escape(e.title)}" src="data:image/png;base64,{b64}">',
                  f"<p>{_md_to_html(e.caption)}</p>",
                  "<p class=data>Data: " + ", ".join(
                      f'<a href="{html.escape(c)}">{html.escape(c)}</a>' for c in csvs) +
                  "</p>"]
        if e.key == "samples":
            w = e.tables["samples_tokens"]
            fmt = {"reward": "{:+.2f}", "p": "{:.3e}", "best_of_n_exact": "{:.3e}",
                   "best_of_n_sampled": "{:.3e}", "tilted": "{:.3e}"}
            md += ["Tokens best-of-N raises most (exact one-position marginal):", "",
                   _md_table(w, fmt), ""]
            parts += [_html_table(w, fmt)]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
             "line-height:1.45;color:#222}img{max-width:100%;border:1px solid #ddd}"
             "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;"
             "padding:2px 8px;text-align:right}p.data{font-size:85%;color:#555}")
    doc = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
           f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
           + "\n".join(parts) + "</body></html>\n")
    (out / "report.html").write_text(doc, encoding="utf-8")
