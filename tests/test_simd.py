"""Instruction-set variants (SPEC section 7): every variant this CPU runs agrees with the
NumPy reference, the variants agree with each other to a few ulp, and the choice is
visible (``tiltlab info``, ``build_info``) and can be forced with ``TILTLAB_SIMD``."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import tiltlab
from tiltlab import reference, simd

VARIANTS = simd.available()


def _env(**kw):
    env = dict(os.environ)
    env.pop(simd.ENV_VAR, None)
    env.update(kw)
    return env


@pytest.fixture(scope="module")
def battery():
    """Adversarial but valid inputs: long rows over several chunks, -inf holes, ties, huge
    logits, float32, odd lengths, a strided view."""
    rng = np.random.default_rng(2024)
    V = 40_001  # three chunks, not a multiple of any vector width
    logits = rng.normal(size=(4, V)) * 4
    logits[rng.random(logits.shape) < 0.1] = -np.inf
    logits[1, :50] = 700.0  # ties at the maximum, close to the exp overflow threshold
    logits[2] += 1e5
    rewards = np.round(rng.normal(size=(4, V)), 2)
    lam = np.array([1e-9, 0.8, -5.0, 400.0])
    big = rng.normal(size=(3, 2 * 333 + 1))
    return logits, rewards, lam, big


def test_variant_names_and_build_info():
    assert simd.VARIANTS == ("portable", "avx2", "avx512")
    assert "portable" in VARIANTS
    assert simd.active() in VARIANTS
    info = tiltlab.build_info()
    assert info["simd"] == simd.active()
    assert set(info["simd_supported"]) == set(VARIANTS)
    if platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32":
        # the x86-64 build with gcc/clang compiles every variant; the CPU decides which ones
        # run (MSVC, on Windows, builds the portable kernels only: CMakeLists.txt)
        assert simd.compiled() == simd.VARIANTS
    if os.environ.get(simd.ENV_VAR, "auto") in ("", "auto"):
        assert simd.active() == VARIANTS[-1]  # the best the CPU runs


def test_select_rejects_unknown_or_unsupported_variants():
    before = simd.active()
    with pytest.raises(ValueError, match="unknown variant 'sse9'"):
        simd.select("sse9")
    with pytest.raises(TypeError, match="name must be a str"):
        simd.select(2)
    for v in simd.VARIANTS:
        if v not in VARIANTS:
            with pytest.raises(ValueError, match="cannot run|not compiled"):
                simd.select(v)
    assert simd.active() == before
    with simd.use("portable"):
        assert simd.active() == "portable"
    assert simd.active() == before


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_matches_reference(battery, variant):
    logits, rewards, lam, big = battery
    with simd.use(variant):
        got = tiltlab.logsumexp(logits, axis=-1)
        assert_allclose(got, reference.logsumexp(logits), rtol=1e-13)
        f32 = logits.astype(np.float32)
        # float32 input: exponentials in float32 lanes, float64 sums (a few float32 ulp)
        assert_allclose(tiltlab.logsumexp(f32, axis=-1), reference.logsumexp(f32.astype(float)),
                        rtol=2.0**-21)
        st = tiltlab.tilt_stats(logits, rewards, lam)
        ref = reference.tilt_stats(logits, rewards, lam)
        for a, b in zip(st, ref, strict=True):
            assert_allclose(a, b, rtol=1e-11, atol=1e-15)
        lp = tiltlab.tilt(logits[:, ::2], rewards[:, ::2], lam)  # strided views
        assert_allclose(lp, reference.tilt(logits[:, ::2], rewards[:, ::2], lam),
                        rtol=1e-11, atol=1e-9)
        assert_allclose(tiltlab.cumulants(logits, rewards, 4, 0.3),
                        reference.cumulants(logits, rewards, 4, 0.3), rtol=1e-9, atol=1e-13)
        assert_allclose(tiltlab.kl_divergence(big, big[::-1]),
                        reference.kl_divergence(big, big[::-1]), rtol=1e-12)
        bon = tiltlab.best_of_n(big[0], np.round(big[1], 1), 50)
        rb = reference.best_of_n(big[0], np.round(big[1], 1), np.log(50))
        assert_allclose(bon.kl, rb["kl"], rtol=1e-12)
        assert_allclose(bon.log_probs, rb["log_probs"], rtol=1e-12, atol=1e-12)
        soft = tiltlab.soft_best_of_n(big[0, :200], big[1, :200], 8, 0.4)
        rs = reference.soft_best_of_n(big[0, :200], big[1, :200], 8, 0.4)
        assert_allclose(soft.log_probs, rs, rtol=1e-11, atol=1e-12)


def test_variants_agree_with_each_other(battery):
    """Same C source, same operation order: only the exp polynomial's fused multiply-adds
    differ, so the variants agree to a few ulp (not bitwise)."""
    logits, rewards, lam, _ = battery
    out = {}
    for v in VARIANTS:
        with simd.use(v):
            out[v] = (tiltlab.logsumexp(logits, axis=-1), *tiltlab.tilt_stats(logits, rewards, lam),
                      tiltlab.sample_best_of_n(logits[0], rewards[0], 16, size=10_000,
                                               rng=np.random.default_rng(1)))
    first = out[VARIANTS[0]]
    for v in VARIANTS[1:]:
        for a, b in zip(first[:-1], out[v][:-1], strict=True):
            assert_allclose(a, b, rtol=4e-15, atol=1e-300)
        # the CDFs differ by ulps: a draw could only change on a boundary (probability
        # ~1e-12 for these 10^4 draws)
        assert_array_equal(first[-1], out[v][-1])


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(**env), timeout=120)


def test_environment_variable_forces_a_variant():
    proc = _run("import tiltlab; print(tiltlab.simd.active())", TILTLAB_SIMD="portable")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "portable"
    assert proc.stderr == ""


def test_environment_variable_unknown_name_warns_and_falls_back():
    proc = _run("import tiltlab; print(tiltlab.simd.active())", TILTLAB_SIMD="sse9")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == VARIANTS[-1]
    assert "RuntimeWarning" in proc.stderr and "TILTLAB_SIMD='sse9' ignored" in proc.stderr


@pytest.mark.skipif("avx512" in VARIANTS, reason="this CPU runs AVX-512")
def test_environment_variable_unsupported_variant_never_runs():
    proc = _run("import tiltlab, numpy as np; print(tiltlab.simd.active(), "
                "tiltlab.logsumexp(np.zeros(4)))", TILTLAB_SIMD="avx512")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == VARIANTS[-1]
    assert "cannot run the 'avx512' variant" in proc.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_cli_info_reports_the_variant(variant):
    proc = subprocess.run([sys.executable, "-m", "tiltlab", "info"], capture_output=True,
                          text=True, env=_env(TILTLAB_SIMD=variant), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"compiled variant: {variant} (forced by TILTLAB_SIMD={variant})" in proc.stdout
    assert "variants: portable (compiled, CPU supports it)" in proc.stdout
