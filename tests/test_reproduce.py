"""``tiltlab reproduce`` end to end, its numbers against the library API, and the CLI tables."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import re
import subprocess
import sys

import malformed_models
import numpy as np
import pytest

import tiltlab
from tiltlab.app import experiments as X
from tiltlab.app import models
from tiltlab.app.cli import main

HAVE_PLOT = importlib.util.find_spec("matplotlib") is not None
HAVE_DATA = all(importlib.util.find_spec(m) is not None for m in ("wordfreq", "vaderSentiment"))
needs_plot = pytest.mark.skipif(not HAVE_PLOT, reason='needs the plot extra: '
                                'pip install "tiltlab[plot]" (matplotlib)')
needs_data = pytest.mark.skipif(not HAVE_DATA, reason='needs the data extra: '
                                'pip install "tiltlab[data]" (wordfreq, vaderSentiment)')

FIGURES = ["fig1_frontier.png", "fig2_kl_to_tilt.png", "fig3_large_deviations.png",
           "fig4_cumulants.png", "fig5_samples.png", "fig6_win_rate.png",
           "fig7_policies.png", "fig8_markov.png"]
TABLES = ["frontier_tilted", "frontier_best_of_n", "kl_to_tilt", "large_deviations",
          "rate_function", "cumulants", "scaled_cgf_exact_law", "scaled_cgf_formula",
          "samples_histogram", "samples_tokens", "win_rate_token", "win_rate_sequence",
          "win_rate_bound", "policies", "markov"]
MARKOV_COLUMNS = ["model", "n", "delta", "lam", "log_n", "tilt_reward_per_token",
                  "best_of_n_reward_per_token", "reward_gap_per_token", "kl_to_p_per_token",
                  "kl_deficit_per_token", "kl_to_tilted", "kl_to_tilted_per_token",
                  "kl_minus_half_log_n", "reward_variance_per_token"]


def _run_cli(*args, env_extra=None, tmp_path=None, timeout=600):
    env = dict(os.environ)
    if tmp_path is not None:
        env["TILTLAB_CACHE_DIR"] = str(tmp_path / "cache")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "tiltlab", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def _check_png(path):
    from matplotlib import image

    img = image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05                                   # not blank
    assert np.unique(np.round(rgb * 255).astype(int), axis=0).shape[0] > 20   # not one colour


def _check_report(out, model: models.Model, sizes: X.Sizes):
    from tiltlab.app.report import read_csv

    for f in FIGURES:
        _check_png(out / f)
    for t in TABLES:
        assert (out / f"{t}.csv").stat().st_size > 0, t
    md = (out / "report.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert md.count("## Figure") == 8 and all(f in md for f in FIGURES)
    assert html.count("data:image/png;base64,") == 8
    assert md.count("**Claim**") == 8 and md.count("**Numbers**") == 8
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["name"] == model.name and run["seed"] == 0
    assert run["tiltlab"] == tiltlab.__version__ and set(run["timings_seconds"]) == set(
        X.EXPERIMENTS)
    delta, lam = run["delta"], run["lam"]
    lg, rw = model.logits, model.rewards
    assert lam == float(tiltlab.solve_lambda(lg, rw, delta))

    def seq(n):
        return tiltlab.Memoryless(lg, rw, n, step=model.step)

    # 1. frontier: every tilted point and a best-of-N row per length, through the API
    t = read_csv(out / "frontier_tilted.csv")
    st = tiltlab.tilt_stats(lg, rw, t["lam"])
    np.testing.assert_allclose(t["kl_per_token"], st.kl, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(t["reward_per_token"], st.mean, rtol=1e-12)
    b = read_csv(out / "frontier_best_of_n.csv")
    assert set(b["n"].astype(int)) == set(sizes.frontier_lengths)
    for n in sizes.frontier_lengths:
        i = int(np.flatnonzero(b["n"] == n)[-1])
        bon = seq(n).best_of_n(log_n=b["log_n"][i])
        assert b["kl_per_token"][i] == pytest.approx(bon.kl / n, rel=1e-12)
        assert b["reward_per_token"][i] == pytest.approx(bon.expected_reward / n, rel=1e-12)
        assert b["win_rate"][i] == pytest.approx(bon.win_rate, rel=1e-12)
    np.testing.assert_allclose(b["frontier_reward_per_token"],
                               tiltlab.frontier(lg, rw, b["kl_per_token"]), rtol=1e-12)
    # the lower panel: each best-of-N point below the frontier at its own KL (never above it)
    np.testing.assert_array_equal(b["reward_below_frontier_per_token"],
                                  b["frontier_reward_per_token"] - b["reward_per_token"])
    assert np.all(b["reward_below_frontier_per_token"] >= -1e-12)
    # 2. KL to the tilt
    k = read_csv(out / "kl_to_tilt.csv")
    i = int(np.argmax(k["n"]))
    bon = seq(int(k["n"][i])).best_of_n(log_n=k["n"][i] * k["delta"][i])
    assert k["kl_to_tilted"][i] == pytest.approx(float(bon.kl_to_tilted(k["lam"][i])), rel=1e-12)
    np.testing.assert_allclose(k["kl_minus_half_log_n"],
                               k["kl_to_tilted"] - 0.5 * np.log(k["n"]), rtol=1e-12, atol=1e-14)
    # 3. large deviations: tails from the exact law, rate function
    ld = read_csv(out / "large_deviations.csv")
    n = sizes.ld_lengths[1]
    law = seq(n).reward_log_pmf()
    sel = ld["n"] == n
    for x, tail, y in list(zip(ld["x"][sel], ld["tail"][sel], ld["minus_log_tail_over_n"][sel],
                               strict=True))[::37]:
        mask = law.values / n >= x - 1e-12 if tail == "upper" else law.values / n <= x + 1e-12
        ref = -float(tiltlab.logsumexp(law.log_pmf[mask])) / n
        assert y == pytest.approx(ref, rel=1e-11, abs=1e-14)
    np.testing.assert_allclose(ld["rate"], tiltlab.rate_function(lg, rw, ld["x"]), rtol=1e-12,
                               atol=1e-15)
    r = read_csv(out / "rate_function.csv")
    np.testing.assert_allclose(r["rate"], tiltlab.rate_function(lg, rw, r["x"]), rtol=1e-12,
                               atol=1e-15)
    # 4. cumulants: additivity (exact law vs token cumulants) and the CGF identity
    c = read_csv(out / "cumulants.csv")
    kap = tiltlab.cumulants(lg, rw, order=6)
    np.testing.assert_allclose(c["token_cumulant"], np.tile(kap, len(sizes.cumulant_lengths)),
                               rtol=1e-13)
    np.testing.assert_allclose(c["scaled_cumulant"], c["token_cumulant"], rtol=1e-5, atol=1e-9)
    f = read_csv(out / "scaled_cgf_formula.csv")
    np.testing.assert_allclose(f["scaled_cgf_compiled"], tiltlab.scaled_cgf(lg, rw, f["t"]),
                               rtol=1e-13)
    np.testing.assert_allclose(f["scaled_cgf_renyi"], f["scaled_cgf_compiled"], rtol=1e-10,
                               atol=1e-13)
    g = read_csv(out / "scaled_cgf_exact_law.csv")
    for n in sizes.cumulant_lengths:
        s = g["n"] == n
        np.testing.assert_allclose(g["scaled_cgf_exact_law"][s], f["scaled_cgf_renyi"],
                                   rtol=1e-9, atol=1e-12)
    # 5. samples: the exact law column is the API's law; counts add up to the size
    h = read_csv(out / "samples_histogram.csv")
    bon = seq(sizes.sample_length).best_of_n(log_n=sizes.sample_length * delta)
    idx = np.searchsorted(bon.values, h["reward"])
    np.testing.assert_allclose(h["reward"], bon.values[idx], rtol=1e-14, atol=1e-12)
    np.testing.assert_allclose(h["exact_prob"], np.exp(bon.log_probs[idx]), rtol=1e-12)
    assert h["sampled_count"].sum() == sizes.sample_size
    w = read_csv(out / "samples_tokens.csv")
    pos = {name: j for j, name in enumerate(model.names.tolist())}
    j = np.array([pos[str(tok)] for tok in w["token"]])
    np.testing.assert_allclose(w["p"], np.exp(lg[j]), rtol=1e-13)
    np.testing.assert_allclose(w["tilted"], np.exp(tiltlab.tilt(lg, rw, lam))[j], rtol=1e-12)
    raise_ = w["best_of_n_exact"] - w["p"]
    assert raise_[0] > 0 and np.all(np.diff(raise_) <= 0)     # sorted by the raise
    # 6. win rate: best-of-N rows against best_of_n, the bound curve by formula
    wt = read_csv(out / "win_rate_token.csv")
    s = wt["policy"] == "best_of_n"
    bon1 = tiltlab.best_of_n(lg, rw, n=wt["parameter"][s])
    np.testing.assert_allclose(wt["win_rate"][s], bon1.win_rate, rtol=1e-12)
    np.testing.assert_allclose(wt["kl"][s], bon1.kl, rtol=1e-10, atol=1e-14)
    bd = read_csv(out / "win_rate_bound.csv")
    np.testing.assert_allclose(bd["win_rate"], bd["n"] / (bd["n"] + 1), rtol=1e-15)
    # 7. policies: rows recomputed with the single-policy functions
    pol = read_csv(out / "policies.csv")
    assert set(pol["method"].tolist()) >= {"tilted", "calibrated_tilt", "best_of_n",
                                           "best_of_poisson", "rewind_and_repeat"}
    single = {"best_of_n": lambda x: tiltlab.best_of_n(lg, rw, n=x),
              "best_of_poisson": lambda x: tiltlab.best_of_poisson(lg, rw, x),
              "rewind_and_repeat": lambda x: tiltlab.rewind_and_repeat(lg, rw, x),
              "calibrated_tilt": lambda x: tiltlab.calibrated_tilt(lg, rw, x),
              "soft_best_of_n": lambda x: tiltlab.soft_best_of_n(lg, rw, 64, x)}
    for method, fn in single.items():
        i = int(np.flatnonzero(pol["method"] == method)[len(
            np.flatnonzero(pol["method"] == method)) // 2])
        law = fn(pol["parameter"][i])
        assert pol["kl"][i] == pytest.approx(float(law.kl), rel=1e-12, abs=1e-15), method
        assert pol["win_rate"][i] == pytest.approx(float(law.win_rate), rel=1e-12), method
    # the optimality claims, on the exact numbers: at each policy's KL, the tilt's reward
    # (tiltlab.frontier) and the calibrated tilt's win rate (c solved by bisection) bound it
    for method in single:
        s = np.flatnonzero(pol["method"] == method)[::7]
        ref = tiltlab.frontier(lg, rw, pol["kl"][s])
        assert np.all(pol["expected_reward"][s] <= ref + 1e-9), method
        np.testing.assert_allclose(pol["reward_below_tilt"][s], ref - pol["expected_reward"][s],
                                   rtol=1e-12, atol=1e-14)
        for i in s:
            best = _calibrated_win_at(lg, rw, pol["kl"][i])
            assert pol["win_rate"][i] <= best + 1e-9, method
            # the figure's lower panel: the distance below the optimum, exactly
            assert pol["win_rate_below_calibrated_tilt"][i] == pytest.approx(
                best - pol["win_rate"][i], abs=1e-12), method
    _check_markov(out, run, sizes, md)
    return run


def _check_markov(out, run, sizes: X.Sizes, md: str) -> None:
    """Figure 8: the CSV's columns, a sample of its rows through the public API (tiltlab.Markov
    and tiltlab.Memoryless), identities between its columns, and the caption's numbers."""
    from tiltlab.app.report import read_csv

    mk = read_csv(out / "markov.csv")
    assert list(mk) == MARKOV_COLUMNS
    mm = models.MARKOV_MODELS[run["markov"]["model"]]()
    want = "english-letters" if importlib.util.find_spec("wordfreq") else "sticky-ternary"
    assert mm.name == want                      # the real model whenever its data is there
    d = run["markov"]["delta"]
    assert d == X.MARKOV_DELTA and np.all(mk["delta"] == d)
    ns = list(sizes.markov_lengths)
    for kind in ("markov", "memoryless"):
        assert mk["n"][mk["model"] == kind].astype(int).tolist() == ns
    n = ns[len(ns) // 2]
    for kind, s in (("markov", mm.sequence(n)),
                    ("memoryless", tiltlab.Memoryless(mm.initial_logits, mm.rewards, n))):
        i = int(np.flatnonzero((mk["model"] == kind) & (mk["n"] == n))[0])
        lam = float(s.solve_lambda(d))
        assert mk["lam"][i] == pytest.approx(lam, rel=1e-12)
        b = s.best_of_n(log_n=n * d)
        assert mk["kl_to_tilted"][i] == pytest.approx(float(b.kl_to_tilted(lam)), rel=1e-12)
        assert mk["best_of_n_reward_per_token"][i] == pytest.approx(b.expected_reward / n,
                                                                    rel=1e-12)
        assert mk["kl_to_p_per_token"][i] == pytest.approx(b.kl / n, rel=1e-12)
        assert mk["tilt_reward_per_token"][i] == pytest.approx(
            float(s.tilt_stats(lam).mean) / n, rel=1e-12)
        assert mk["reward_variance_per_token"][i] == pytest.approx(
            float(s.tilt_stats(0.0).variance) / n, rel=1e-12)
    # the derived columns, and the closeness identity of SPEC 9 linking them:
    # n (tilt - best-of-N reward per token) = (KL(pi_N||phi) - KL(pi_N||p) + n delta) / lam
    np.testing.assert_allclose(mk["reward_gap_per_token"],
                               mk["tilt_reward_per_token"] - mk["best_of_n_reward_per_token"],
                               rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(mk["kl_deficit_per_token"], d - mk["kl_to_p_per_token"])
    np.testing.assert_allclose(mk["kl_to_tilted_per_token"], mk["kl_to_tilted"] / mk["n"],
                               rtol=1e-15)
    np.testing.assert_allclose(mk["kl_minus_half_log_n"],
                               mk["kl_to_tilted"] - 0.5 * np.log(mk["n"]), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(
        mk["reward_gap_per_token"] * mk["n"] * mk["lam"],
        mk["kl_to_tilted"] - mk["n"] * mk["kl_to_p_per_token"] + mk["n"] * d, rtol=1e-7)
    # the memoryless twin has one tilt for every length; the per-token KL falls with n
    tw = mk["model"] == "memoryless"
    assert np.all(mk["lam"][tw] == mk["lam"][tw][0])
    for kind in ("markov", "memoryless"):
        assert np.all(np.diff(mk["kl_to_tilted_per_token"][mk["model"] == kind][1:]) < 0)
    # the caption's numbers are the table's
    cap = md.split("## Figure 8.")[1]
    last = {k: {c: mk[c][(mk["model"] == k)][-1] for c in MARKOV_COLUMNS[3:]}
            for k in ("markov", "memoryless")}
    m = re.search(r"at n = ([\d,]+) the per-token KL to the tilt is (\S+) for the Markov model "
                  r"and (\S+) for its twin, so the Markov model converges (\w+)", cap)
    assert int(m[1].replace(",", "")) == ns[-1]
    assert float(m[2]) == pytest.approx(last["markov"]["kl_to_tilted_per_token"], rel=5e-3)
    assert float(m[3]) == pytest.approx(last["memoryless"]["kl_to_tilted_per_token"], rel=5e-3)
    ratio = last["markov"]["kl_to_tilted_per_token"] / last["memoryless"]["kl_to_tilted_per_token"]
    assert m[4] == ("as" if abs(ratio - 1) < 0.005 else "slower" if ratio > 1 else "faster")
    m = re.search(r"between n = ([\d,]+) and [\d,]+ is (\S+) \(Markov\) and (\S+) "
                  r"\(memoryless", cap)
    n0 = int(m[1].replace(",", ""))
    assert n0 == ns[int(np.searchsorted(ns, ns[-1] / 10))]
    for kind, got in (("markov", m[2]), ("memoryless", m[3])):
        s = mk["model"] == kind
        kl = mk["kl_to_tilted"][s]
        slope = (kl[-1] - kl[ns.index(n0)]) / math.log(ns[-1] / n0)
        assert float(got) == pytest.approx(slope, abs=6e-5)
        assert 0.4 < slope < 0.6                  # ½ log n, for both models
    m = re.search(r"Var_p R/n is (\S+) against (\S+) ", cap)
    assert float(m[1]) == pytest.approx(last["markov"]["reward_variance_per_token"], abs=6e-4)
    assert float(m[2]) == pytest.approx(last["memoryless"]["reward_variance_per_token"],
                                        abs=6e-4)


def _calibrated_win_at(lg, rw, kl):
    """Win rate of the calibrated tilt whose KL is ``kl`` (bisection on c >= 0)."""
    if kl <= 0:
        return 0.5
    lo, hi = 0.0, 1.0
    while tiltlab.calibrated_tilt(lg, rw, hi).kl < kl and hi < 1e6:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if tiltlab.calibrated_tilt(lg, rw, mid).kl < kl:
            lo = mid
        else:
            hi = mid
    return tiltlab.calibrated_tilt(lg, rw, hi).win_rate


@needs_plot
def test_reproduce_quick_ternary_end_to_end(tmp_path):
    out = tmp_path / "report"
    res = _run_cli("reproduce", "--model", "ternary", "--quick", "--out", str(out),
                   tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "report:" in res.stdout and str(out / "report.md") in res.stdout
    # output redirected (a pipe): no progress bars, one plain "[k/8] ... (x s)" line each
    assert "\r" not in res.stdout and "\r" not in res.stderr
    assert "it/s" not in res.stderr and "%|" not in res.stderr
    steps = re.findall(r"^  \[(\d)/8\] (\w+): .+  \((\d+\.\d) s\)$", res.stdout, re.M)
    assert [int(k) for k, _, _ in steps] == list(range(1, 9))
    assert [name for _, name, _ in steps] == [f[5:-4] for f in FIGURES]
    run = _check_report(out, models.load_model("ternary"), X.Sizes.quick())
    assert run["mode"] == "quick"


class _FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@needs_plot
@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bars_only_on_a_terminal(terminal, tmp_path, monkeypatch):
    pytest.importorskip("tqdm")
    from tiltlab.app.report import reproduce

    stream = _FakeTerminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    lines = []
    reproduce("bernoulli", tmp_path / "r", experiments=["cumulants"], echo=lines.append)
    bars = stream.getvalue()
    assert ("\r" in bars and "cumulants and CGF" in bars) == terminal
    if not terminal:
        assert bars == ""
    assert re.fullmatch(r"  \[1/1\] cumulants: .+  \(\d+\.\d s\)", lines[1])
    stream.seek(0)
    stream.truncate()
    reproduce("bernoulli", tmp_path / "r", experiments=["cumulants"], echo=lines.append,
              quiet=True)
    assert stream.getvalue() == ""                              # --quiet: no bars either


@needs_plot
@needs_data
def test_reproduce_quick_english_sentiment_end_to_end(tmp_path):
    out = tmp_path / "english"
    res = _run_cli("reproduce", "--model", "english-sentiment", "--out", str(out), "--quiet",
                   tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""                                  # --quiet
    monkey_cache = tmp_path / "cache"
    assert list(monkey_cache.glob("english-sentiment-*.npz"))
    old = os.environ.get("TILTLAB_CACHE_DIR")
    os.environ["TILTLAB_CACHE_DIR"] = str(monkey_cache)
    try:
        models._english_arrays.cache_clear()
        model = models.load_model("english-sentiment")
    finally:
        models._english_arrays.cache_clear()
        if old is None:
            del os.environ["TILTLAB_CACHE_DIR"]
        else:
            os.environ["TILTLAB_CACHE_DIR"] = old
    _check_report(out, model, X.Sizes.quick())
    from tiltlab.app.report import read_csv

    words = read_csv(out / "samples_tokens.csv")
    assert np.all(words["reward"] > 0)         # BoN raises positive words
    assert "good" in set(words["token"].tolist()) or "great" in set(words["token"].tolist())


@needs_plot
def test_reproduce_is_seeded(tmp_path):
    from tiltlab.app.report import read_csv, reproduce

    kw = dict(experiments=["samples"], quiet=True)
    reproduce("bernoulli", tmp_path / "a", seed=3, **kw)
    reproduce("bernoulli", tmp_path / "b", seed=3, jobs=1, **kw)
    reproduce("bernoulli", tmp_path / "c", seed=4, **kw)
    a, b, c = (read_csv(tmp_path / d / "samples_histogram.csv") for d in "abc")
    np.testing.assert_array_equal(a["sampled_count"], b["sampled_count"])
    assert not np.array_equal(a["sampled_count"], c["sampled_count"])


@needs_plot
def test_reproduce_user_npz_model(tmp_path):
    path = tmp_path / "coin.npz"
    np.savez(path, logits=np.log([0.6, 0.3, 0.1]), rewards=np.array([0.0, 0.5, 1.0]),
             names=np.array(["lo", "mid", "hi"]))
    out = tmp_path / "r"
    from tiltlab.app.report import read_csv, reproduce

    reproduce(str(path), out, quiet=True, experiments=["frontier", "samples"])
    assert (out / "fig1_frontier.png").exists() and (out / "fig2_samples.png").exists()
    w = read_csv(out / "samples_tokens.csv")
    assert list(w["token"]) == ["hi", "mid", "lo"]


# --------------------------------------------------------------------------------------
# error paths: exit status 2 and one line, no traceback
# --------------------------------------------------------------------------------------

def _one_line_error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_cli_unknown_model(tmp_path):
    res = _run_cli("reproduce", "--model", "gpt-7", "--out", str(tmp_path / "x"))
    _one_line_error(res, "unknown model 'gpt-7'", "ternary", "npz")


@pytest.mark.parametrize("argv, needle", [
    (["--model", "gpt-7"], "unknown model 'gpt-7'"),
    (["--model", "bernoulli", "--delta", "5"], "delta must be in (0, kl_max"),
])
def test_cli_argument_errors_before_the_missing_plot_extra(argv, needle, tmp_path, monkeypatch,
                                                           capsys):
    # a wrong argument is reported as such even without matplotlib: installing the plot
    # extra would not have helped, so its hint would mislead
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["reproduce", *argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "tiltlab[plot]" not in err
    assert not (tmp_path / "o").exists()


def test_reproduce_unknown_experiment_before_the_missing_plot_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from tiltlab.app.report import reproduce

    with pytest.raises(ValueError, match="unknown experiment"):
        reproduce("bernoulli", tmp_path / "o", quiet=True, experiments=["frontier", "nope"])
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not HAVE_PLOT, reason="found only when the report is written, after the "
                    "check for the plot extra (which a run needs in any case)")
def test_cli_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _run_cli("reproduce", "--out", str(blocker / "sub"))
    _one_line_error(res, "cannot write the report to --out")


@pytest.mark.parametrize("content, needle", [
    (b"not a zip", "not a readable .npz"),
    ({"logits": np.zeros(3)}, "lacks the array(s) rewards"),
    ({"logits": np.zeros(3), "rewards": np.zeros(2)}, "differ in shape"),
])
def test_cli_malformed_npz(tmp_path, content, needle):
    path = tmp_path / "m.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, **content)
    res = _run_cli("reproduce", "--model", str(path), "--out", str(tmp_path / "o"))
    _one_line_error(res, needle)
    res = _run_cli("bon", "--model", str(path))
    _one_line_error(res, needle)


# every subcommand that takes --model (reproduce, bon, frontier and its --method table)
MODEL_COMMANDS = {
    "reproduce": ["reproduce", "--quiet"],
    "bon": ["bon"],
    "frontier": ["frontier"],
    "frontier-method": ["frontier", "--method", "best_of_n"],
}


@pytest.mark.parametrize("kind", sorted(malformed_models.KINDS))
@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_cli_malformed_model_file_every_subcommand(tmp_path, monkeypatch, capsys, command,
                                                   kind):
    """Issue 15 item 12: each kind of broken model file is one line on stderr naming the
    file, exit status 2, for every subcommand that takes a model (it was a BadZipFile,
    EOFError or AttributeError traceback with status 1)."""
    path = malformed_models.make(tmp_path, kind, monkeypatch)
    out = tmp_path / "report"
    argv = [*MODEL_COMMANDS[command], "--model", path]
    if command == "reproduce":
        argv += ["--out", str(out)]
    assert main(argv) == 2
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in cap.err, cap.err
    cmd = MODEL_COMMANDS[command][0]
    assert lines[0].startswith(f"tiltlab {cmd}: error: model file {path!r}"), lines[0]
    assert malformed_models.KINDS[kind] in lines[0], lines[0]
    assert cap.out == "" and not out.exists()


def test_cli_malformed_model_file_exit_status_in_a_process(tmp_path):
    """The same through a real process: a PK header and junk for each subcommand, and a
    FIFO named like a model (it used to block for ever in open)."""
    junk = malformed_models.make(tmp_path, "pk-junk")
    for argv in (["reproduce", "--out", str(tmp_path / "o")], ["bon"], ["frontier"]):
        res = _run_cli(*argv, "--model", junk)
        _one_line_error(res, f"model file {junk!r} is not a readable .npz file")
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.npz"
        os.mkfifo(fifo)
        res = _run_cli("bon", "--model", str(fifo), timeout=60)
        _one_line_error(res, "is not a regular file")


def test_cli_non_lattice_npz_model(tmp_path):
    path = tmp_path / "irr.npz"
    np.savez(path, logits=np.zeros(3), rewards=np.array([0.0, 1.0, math.sqrt(2)]))
    res = _run_cli("bon", "--model", str(path), "--length", "5")
    _one_line_error(res, "step")


def test_missing_optional_dependency_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["reproduce", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "tiltlab[plot]"' in err


@pytest.mark.parametrize("argv, needle", [
    (["bon", "--n", "0.5"], "--n must be >= 1"),
    (["bon", "--n", "a,b"], "comma-separated"),
    (["bon", "--n", "2", "--log-n", "1"], "not both"),
    (["bon", "--log-n", "-1"], "--log-n must be >= 0"),
    (["frontier", "--kl", "-0.1"], "--kl budgets must be >= 0"),
    (["reproduce", "--delta", "5", "--model", "bernoulli"], "delta must be in (0, kl_max"),
])
def test_cli_bad_values(argv, needle, capsys, tmp_path):
    if argv[0] == "reproduce":
        argv = [*argv, "--out", str(tmp_path / "o"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_cli_argparse_errors_exit_2():
    _one_line_error(_run_cli("reproduce", "--seed", "-1"), "expected an integer >= 0")
    _one_line_error(_run_cli("bon", "--length", "0"), "positive integer", "--help")
    _one_line_error(_run_cli("bon", "--format", "xml"), "invalid choice")
    _one_line_error(_run_cli("nosuchcommand"), "invalid choice")


def test_cli_constant_reward_model(tmp_path):
    path = tmp_path / "flat.npz"
    np.savez(path, logits=np.zeros(3), rewards=np.ones(3))
    _one_line_error(_run_cli("reproduce", "--model", str(path), "--out", str(tmp_path / "o")),
                    "constant on the support")
    res = _run_cli("frontier", "--model", str(path), "--format", "csv")
    assert res.returncode == 0
    rows = res.stdout.strip().splitlines()[1:]
    assert all(float(r.split(",")[0]) == 0.0 and not r.startswith("-") for r in rows)


def test_cli_frontier_at_and_beyond_kl_max(capsys):
    # lam = inf: all tokens at the top reward; wins unless the reference ties
    assert main(["frontier", "--model", "ternary", "--kl", "5", "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["lam"] == "inf" and row["win_rate"] == pytest.approx(1 - 0.5 * 0.2, rel=1e-15)
    assert main(["frontier", "--model", "ternary", "--kl", "50", "--length", "3",
                 "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["win_rate"] == pytest.approx(1 - 0.5 * 0.2**3, rel=1e-15)
    assert row["expected_reward"] == pytest.approx(9.0, rel=1e-15)


# --------------------------------------------------------------------------------------
# tables: tiltlab bon / tiltlab frontier / tiltlab info
# --------------------------------------------------------------------------------------

def test_cli_bon_table_formats(capsys):
    lg, rw = np.log([0.5, 0.5]), np.array([0.0, 1.0])
    assert main(["bon", "--model", "bernoulli", "--n", "2,4,16", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    b = tiltlab.best_of_n(np.log([0.7, 0.3]), [0.0, 1.0], n=np.array([2.0, 4.0, 16.0]))
    assert [r["N"] for r in rows] == pytest.approx([2, 4, 16], rel=1e-15)
    np.testing.assert_allclose([r["kl"] for r in rows], b.kl, rtol=1e-14)
    np.testing.assert_allclose([r["win_rate"] for r in rows], b.win_rate, rtol=1e-14)
    np.testing.assert_allclose([r["kl_bound"] for r in rows], b.kl_bound, rtol=1e-14)
    del lg, rw
    assert main(["bon", "--model", "ternary", "--log-n", "0,30,3000", "--length", "1000",
                 "--format", "csv"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "N,log_n,kl,kl_bound,expected_reward,win_rate,win_rate_bound" or \
        out[0].startswith("log_n,")
    seq = tiltlab.Memoryless(np.log([0.5, 0.3, 0.2]), [0.0, 1.0, 3.0], 1000)
    last = dict(zip(out[0].split(","), map(float, out[-1].split(",")), strict=True))
    bon = seq.best_of_n(log_n=3000.0)
    assert last["kl"] == pytest.approx(bon.kl, rel=1e-13)
    assert last["expected_reward"] == pytest.approx(bon.expected_reward, rel=1e-13)
    assert main(["bon", "--model", "bernoulli"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# exact best-of-N of bernoulli") and "win_rate_bound" in text


def test_cli_frontier_matches_spec_oracle(capsys):
    assert main(["frontier", "--model", "bernoulli", "--kl", "0.1,0.5", "--format",
                 "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [dict(zip(lines[0].split(","), map(float, ln.split(",")), strict=True))
            for ln in lines[1:]]
    assert rows[0]["lam"] == pytest.approx(0.9058310508, abs=1e-10)      # SPEC section 8
    assert rows[0]["expected_reward"] == pytest.approx(0.5146291211, abs=1e-10)
    assert rows[1]["lam"] == pytest.approx(2.1387560656, abs=1e-10)
    # win rate of the tilt: P(Y_phi > Y_p) + P(tie)/2 for a Bernoulli pair
    q = rows[0]["expected_reward"]
    assert rows[0]["win_rate"] == pytest.approx(q * 0.7 + 0.5 * (q * 0.3 + (1 - q) * 0.7),
                                                rel=1e-13)
    assert main(["frontier", "--model", "ternary", "--length", "20"]) == 0
    text = capsys.readouterr().out
    assert "sequence length 20" in text and "kl_max = " in text


def test_cli_info_reports_variant_and_threads():
    res = _run_cli("info")
    assert res.returncode == 0
    assert "compiled variant:" in res.stdout and "threads:" in res.stdout
    assert tiltlab.__version__ in res.stdout


# --------------------------------------------------------------------------------------
# the experiments' own pieces against independent computations
# --------------------------------------------------------------------------------------

def test_law_cumulants_binomial():
    from scipy import stats

    n, p = 40, 0.3
    k = np.arange(n + 1, dtype=float)
    kap = X._law_cumulants(k, stats.binom.logpmf(k, n, p), 6)
    q = 1 - p
    ref = [n * p, n * p * q, n * p * q * (1 - 2 * p), n * p * q * (1 - 6 * p * q),
           n * p * q * (1 - 2 * p) * (1 - 12 * p * q),
           n * p * q * (1 - 30 * p * q * (1 - 4 * p * q))]
    # absolute error scale of kappa_k from central moments: (k-1)!! sigma^k * eps-ish
    scale = np.array([1.0] + [(n * p * q) ** (k / 2) for k in range(2, 7)])
    np.testing.assert_allclose(kap, ref, rtol=1e-12, atol=1e-12 * scale.max())
    assert abs(kap[5] - ref[5]) < 1e-12 * 15 * (n * p * q) ** 3


def test_log_tails_far_below_double_range():
    m = tiltlab.Memoryless(np.log([0.7, 0.3]), [0.0, 1.0], 5000)
    law = m.reward_log_pmf()
    up, down = X._log_tails(law.log_pmf)
    from scipy import stats

    k = np.arange(5001)
    np.testing.assert_allclose(up[-1], stats.binom.logpmf(5000, 5000, 0.3), rtol=1e-12)
    assert up[-1] < -6000                                   # P = 0.3^5000 ~ 1e-2614
    lp = stats.binom.logpmf(k, 5000, 0.3)
    np.testing.assert_allclose(up[4000], np.logaddexp.reduce(lp[4000:]), rtol=1e-11)
    assert up[4000] < -1400
    np.testing.assert_allclose(down[500], stats.binom.logcdf(500, 5000, 0.3), rtol=1e-9)
    assert up[0] == pytest.approx(0.0, abs=1e-12) and down[-1] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n_draws", [1, 2, 3])
def test_token_marginal_against_enumeration(n_draws):
    """The exact one-position marginal of best-of-N sequences against brute force."""
    import itertools

    lg = np.log([0.45, 0.35, 0.2])
    rw = np.array([0.0, 1.0, 2.0])
    n = 4
    model = models.Model("t", lg, rw, np.array(["a", "b", "c"]), "test")
    ctx = X.Context(model, X.Sizes.quick(), delta=0.2)
    b = ctx.seq(n).best_of_n(n=n_draws)
    got = X.token_marginal(ctx, n, b)
    # brute force: law of R over sequences, best-of-N weight w(s) = F(s)^N - F(s-)^N
    seqs = list(itertools.product(range(3), repeat=n))
    prob = np.array([np.prod(np.exp(lg)[list(s)]) for s in seqs])
    rew = np.array([rw[list(s)].sum() for s in seqs])
    levels = np.unique(rew)
    mass = np.array([prob[rew == v].sum() for v in levels])
    cdf = np.cumsum(mass)
    w = cdf ** n_draws - np.concatenate([[0.0], cdf[:-1]]) ** n_draws
    g = dict(zip(levels.tolist(), (w / mass).tolist(), strict=True))
    pi = prob * np.array([g[v] for v in rew])
    ref = np.array([pi[[s[0] == y for s in seqs]].sum() for y in range(3)])
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert got.sum() == pytest.approx(1.0, rel=1e-13)


@needs_plot
def test_reproduce_gapped_support_and_large_delta(tmp_path):
    """Best-of-N mass on a lattice with unreachable points; a budget near kl_max."""
    from tiltlab.app.report import read_csv, reproduce

    m = models.Model("gap", models._normalise(np.log([0.1, 0.1, 0.8])), np.array([0.0, 3, 5]),
                     np.array(list("abc")), "gapped")
    reproduce(m, tmp_path / "g", experiments=["samples"], quiet=True)
    h = read_csv(tmp_path / "g" / "samples_histogram.csv")
    assert h["sampled_count"].sum() == X.Sizes.quick().sample_size
    assert np.all(h["sampled_count"][h["exact_prob"] == 0] == 0)
    reproduce("ternary", tmp_path / "d", experiments=["frontier"], quiet=True, delta=1.5)
    b = read_csv(tmp_path / "d" / "frontier_best_of_n.csv")
    assert np.any(b["delta"] == 1.5)


def test_token_marginal_with_unresolved_law_points():
    """A sub-lattice of mass ~1e-12 per token: the FFT law has NaN points; the marginal
    is still finite and sums to 1 (its denominator comes from the n-1 law)."""
    import warnings

    m = models.Model("h", models._normalise(np.log([0.5, 0.5 - 1e-12, 1e-12])),
                     np.array([0.0, 5.0, 0.01]), np.array(list("abc")), "x")
    ctx = X.Context(m, X.Sizes.quick())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        b = ctx.seq(100).best_of_n(log_n=30.0)
        got = X.token_marginal(ctx, 100, b)
    assert np.all(np.isfinite(got)) and got.sum() == pytest.approx(1.0, rel=1e-13)
    assert got[1] > 0.5 > got[0]


def test_win_rate_on_levels_bernoulli():
    lp = np.log([0.7, 0.3])
    q = np.log([0.2, 0.8])
    want = 0.8 * 0.7 + 0.5 * (0.2 * 0.7 + 0.8 * 0.3)
    assert X.win_rate_on_levels(lp, q) == pytest.approx(want, rel=1e-15)
    assert X.win_rate_on_levels(lp, lp) == pytest.approx(0.5)


def test_default_delta_and_context_checks():
    assert X.default_delta(models.load_model("ternary")) == 0.3
    tiny = models.Model("tiny", np.log([0.5, 0.5]), np.array([0.0, 1.0]),
                        np.array(["0", "1"]), "x")
    assert X.default_delta(tiny) == pytest.approx(0.25 * math.log(2), rel=1e-14)
    with pytest.raises(ValueError, match="delta must be in"):
        X.Context(tiny, X.Sizes.quick(), delta=0.0)


@needs_plot
def test_report_docstring_example():
    import doctest

    import tiltlab.app.report

    result = doctest.testmod(tiltlab.app.report, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_csv_round_trip_is_exact(tmp_path):
    from tiltlab.app.report import read_csv, write_csv

    x = np.array([0.1, 1 / 3, 1e-300, -2.5e300, np.pi])
    write_csv(tmp_path / "t.csv", {"x": x, "k": np.arange(5), "s": np.array(list("abcde"))})
    back = read_csv(tmp_path / "t.csv")
    np.testing.assert_array_equal(back["x"], x)
    np.testing.assert_array_equal(back["k"], np.arange(5))
    assert back["s"].tolist() == list("abcde")
    with pytest.raises(ValueError, match="differ in length"):
        write_csv(tmp_path / "u.csv", {"a": np.zeros(2), "b": np.zeros(3)})


def test_cli_frontier_methods(capsys):
    lg, r = np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0])
    assert main(["frontier", "--model", "ternary", "--method", "soft_best_of_n", "--n", "8",
                 "--grid", "0.3,1,inf", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r_["temperature"] for r_ in rows] == [0.3, 1.0, "inf"]
    law = tiltlab.soft_best_of_n(lg, r, 8, 0.3)
    assert rows[0]["kl"] == pytest.approx(law.kl, rel=1e-13)
    assert rows[2]["kl"] == 0.0 and rows[2]["win_rate"] == pytest.approx(0.5)
    for method, grid, fn in [
            ("best_of_poisson", "2", lambda: tiltlab.best_of_poisson(lg, r, 2.0)),
            ("rewind_and_repeat", "0.3", lambda: tiltlab.rewind_and_repeat(lg, r, 0.3)),
            ("calibrated_tilt", "3", lambda: tiltlab.calibrated_tilt(lg, r, 3.0)),
            ("worst_of_n", "5", lambda: tiltlab.worst_of_n(lg, r, n=5.0)),
            ("best_of_n", "5", lambda: tiltlab.best_of_n(lg, r, n=5.0))]:
        assert main(["frontier", "--model", "ternary", "--method", method, "--grid", grid,
                     "--format", "csv"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        row = dict(zip(lines[0].split(","), map(float, lines[1].split(",")), strict=True))
        law = fn()
        assert row["kl"] == pytest.approx(float(law.kl), rel=1e-13, abs=1e-15), method
        assert row["win_rate"] == pytest.approx(float(law.win_rate), rel=1e-13), method
    assert main(["frontier", "--model", "ternary", "--method", "soft_best_of_n",
                 "--temperature", "0.5", "--grid", "1,4", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("n,kl,")
    assert float(lines[2].split(",")[1]) == pytest.approx(
        tiltlab.soft_best_of_n(lg, r, 4, 0.5).kl, rel=1e-13)


@pytest.mark.parametrize("argv, needle", [
    (["frontier", "--method", "best_of_n", "--length", "3"], "one token"),
    (["frontier", "--method", "best_of_n", "--kl", "0.1"], "--kl applies to --method tilted"),
    (["frontier", "--grid", "1,2"], "give budgets with --kl"),
    (["frontier", "--method", "rewind_and_repeat", "--grid", "2"], "eps must lie in (0, 1]"),
    (["frontier", "--method", "soft_best_of_n", "--grid", "nan"], "--grid"),
])
def test_cli_frontier_method_errors(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------
# figure 8: the Markov model, its fallback and its budget
# --------------------------------------------------------------------------------------

def test_markov_figure_falls_back_to_sticky_ternary(monkeypatch):
    """Without the data extra figure 8 uses the built-in sticky-ternary chain, whose
    memoryless twin is exactly the ternary model; the caption says what to install."""
    def missing(**kw):
        raise models.MissingDependency('the english-letters model needs wordfreq: '
                                       'pip install "tiltlab[data]"')

    monkeypatch.setattr(models, "english_letter_bigrams", missing)
    ctx = X.Context(models.load_model("ternary"), X.Sizes(markov_lengths=(10, 30, 100, 300)))
    e = X.markov(ctx)
    assert e.notes["model"] == "sticky-ternary" and "unavailable" in e.notes["why"]
    assert 'pip install "tiltlab[data]"' in e.caption and e.notes["delta"] == X.MARKOV_DELTA
    t = e.tables["markov"]
    tern = models.load_model("ternary")
    twin = t["model"] == "memoryless"
    for i in np.flatnonzero(twin)[[0, -1]]:
        n = int(t["n"][i])
        s = tiltlab.Memoryless(tern.logits, tern.rewards, n)
        lam = float(tiltlab.solve_lambda(tern.logits, tern.rewards, X.MARKOV_DELTA))
        assert t["lam"][i] == pytest.approx(lam, rel=1e-12)
        b = s.best_of_n(log_n=n * X.MARKOV_DELTA)
        assert t["kl_to_tilted"][i] == pytest.approx(float(b.kl_to_tilted(lam)), rel=1e-12)
    # positively correlated neighbours: Var R / n -> Var r (1 + stay) / (1 - stay) = 3 Var r
    var_r = float(tiltlab.tilt_stats(tern.logits, tern.rewards, 0.0).variance)
    mk = t["model"] == "markov"
    assert t["reward_variance_per_token"][twin][-1] == pytest.approx(var_r, rel=1e-12)
    assert t["reward_variance_per_token"][mk][-1] == pytest.approx(3 * var_r, rel=0.02)


def test_markov_figure_with_a_memoryless_chain_has_equal_columns():
    """stay = 0: the Markov chain is its memoryless twin (SPEC 9's identity), so both halves
    of the table agree and the caption says the two converge as fast."""
    ctx = X.Context(models.load_model("ternary"), X.Sizes(markov_lengths=(10, 100, 1000)),
                    markov_model=models.sticky_ternary(0.0))
    e = X.markov(ctx)
    t = e.tables["markov"]
    mk, tw = t["model"] == "markov", t["model"] == "memoryless"
    for c in ("lam", "tilt_reward_per_token", "best_of_n_reward_per_token", "kl_to_tilted",
              "kl_to_p_per_token", "reward_variance_per_token"):
        np.testing.assert_allclose(t[c][mk], t[c][tw], rtol=1e-9, err_msg=c)
    assert "converges as fast as its memoryless twin" in e.caption
    assert e.notes["ratio"] == pytest.approx(1.0, abs=1e-8)


def test_markov_figure_checks_its_budget_and_model(tmp_path):
    tern = models.load_model("ternary")
    sizes = X.Sizes(markov_lengths=(10, 100))
    # ternary's kl_max is log 5 = 1.61 per token, sticky-ternary's about 0.6 at n = 10
    ctx = X.Context(tern, sizes, delta=1.0, markov_model=models.sticky_ternary())
    with pytest.raises(ValueError, match=r"delta must be in \(0, 0\.6.*sticky-ternary"):
        ctx.markov()
    ctx = X.Context(tern, sizes, delta=0.05, markov_model=models.sticky_ternary())
    assert ctx.markov()[2] == 0.05                # a given budget applies to figure 8 too
    st = models.sticky_ternary()
    moved = models.MarkovModel("moved", st.names, np.log([0.2, 0.3, 0.5]),
                               st.transition_logits, st.rewards, "not stationary")
    with pytest.raises(ValueError, match="initial law of Markov model 'moved' is not"):
        X.Context(tern, sizes, markov_model=moved).markov()
    # through reproduce: refused before anything is written
    from tiltlab.app.report import reproduce

    # a budget the run's model allows (kl_max 13.8) but no Markov model of figure 8 does
    rare = models.Model("rare", np.log([1 - 1e-6, 1e-6]), np.array([0.0, 1.0]),
                        np.array(["a", "b"]), "rare")
    out = tmp_path / "r"
    with pytest.raises(ValueError, match="of figure 8"):
        reproduce(rare, out, delta=5.0, experiments=["markov"], quiet=True)
    assert not out.exists()


def test_sticky_ternary_model():
    m = models.sticky_ternary(0.25)
    p = np.array([0.5, 0.3, 0.2])
    trans = np.exp(m.transition_logits)
    np.testing.assert_allclose(trans, 0.25 * np.eye(3) + 0.75 * p, rtol=1e-15)
    np.testing.assert_allclose(p @ trans, p, rtol=1e-15)
    assert models.MARKOV_MODELS["sticky-ternary"] is models.sticky_ternary
    with pytest.raises(ValueError, match="stay must be in"):
        models.sticky_ternary(1.0)
    with pytest.raises(TypeError, match="stay must be a real number"):
        models.sticky_ternary("half")
