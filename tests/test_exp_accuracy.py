"""Accuracy of the compiled exponential family (csrc/tl_exp.h) against mpmath, for every
SIMD variant this CPU runs, over the whole argument range the kernels use.

Arguments: a grid over [-745.2, 709], random points, a dense logarithmic sweep of both
signs down to 1e-320 (subnormal arguments included), the neighbourhoods of the formula
switches at |x| = 0.34, of the subnormal-result boundary (x = -708, where e^x leaves the
normal range) and of the underflow boundary (x = -745.13, where e^x rounds to 0), and
+-0 and -inf.  The functions run through the private hook ``tiltlab._core._mathcheck``
(csrc/tl_mathcheck.c: the same header compiled once per variant, in loops shaped like the
kernels', so the vectorised code is what is measured).

Errors are in units in the last place of the correctly rounded result (the spacing of
doubles at the result; 2^-1074 for subnormal and zero results, so below 2^-1022 the error
is absolute, in subnormal ulps).  The bounds (``FUNCTIONS``, ``SUBNORMAL_BOUND``) are the
contract of tl_exp.h, set slightly above what was measured when this test was written
(gcc 12, x86-64; maximum over the portable, avx2 and avx512 variants, on this test's
5,300 arguments and, in brackets, on 45,000 random arguments):

    exp (tl_exp; e of tl_exp_expm1_emx)              0.98 (0.97) ulp  -> bound 1
    expm1 (tl_expm1; em of tl_exp_expm1_emx)         1.66 (1.92) ulp  -> bound 2
    e^x - 1 - x (tl_expm1_minus_x; emx)              9.01 (9.39) ulp  -> bound 10
    v e^v - e^v + 1 (tl_kl_term)                    11.84 (14.7) ulp  -> bound 16
    subnormal results, every function                0.72 (0.75)      -> bound 1 (x 2^-1074)

The two cancelling forms are worst just above |x| = 0.34, where tl_exp.h switches from
x^2 q(x) to expm1(x) - x.  mpmath works at 40 significant digits, plus the digits that
cancel in e^x - 1 - x and v e^v - e^v + 1 near 0, so every reference is exact to far below
0.01 ulp.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest

from tiltlab import _core, simd

VARIANTS = simd.available()

# name of the hook's function -> (reference, bound on normal results in ulp)
FUNCTIONS = {
    "exp": ("exp", 1.0),
    "emx_e": ("exp", 1.0),
    "expm1": ("expm1", 2.0),
    "emx_em": ("expm1", 2.0),
    "emx_emx": ("h", 10.0),
    "expm1_minus_x": ("h", 10.0),
    "kl_term": ("g", 16.0),
    # the vector functions of csrc/tl_simd.h that the hot loops run (same contract; the
    # fused multiply-add in e^x - 1 makes expm1 slightly better)
    "vexp": ("exp", 1.0),
    "vexp3_em": ("expm1", 2.0),
    "vexp3_emx": ("h", 10.0),
    "vkl_term": ("g", 16.0),
}
# vector functions that flush results below 2^-1021 to 0 (weights whose sum only enters a
# log; x below the threshold -> exactly 0): name -> (reference, bound, threshold)
FLUSHING = {
    "vexp_w": ("exp", 1.0, -708.0),
    "vexp3_e": ("exp", 1.0, -708.0),
    # the samplers' variant-invariant exponential (csrc/tl_det.h: no fused multiply-add)
    "vexp_det": ("exp", 2.0, -708.0),
    "exp_det": ("exp", 2.0, -708.0),
}
SUBNORMAL_BOUND = 1.0  # absolute error of subnormal (and zero) results, in 2^-1074
DBL_MIN = np.finfo(np.float64).tiny  # 2^-1022


def _arguments() -> np.ndarray:
    rng = np.random.default_rng(16)
    tiny = np.logspace(-320, 0, 400)
    around = []
    for centre, half, count in ((0.34, 0.02, 81), (-0.34, 0.02, 81), (-708.0, 1.0, 201),
                                (-745.1332191019412, 0.07, 121)):
        around.append(np.linspace(centre - half, centre + half, count))
    # the last doubles on either side of the boundaries themselves
    edges = []
    for b in (-708.0, -745.1332191019412, 0.34, -0.34, 709.0, -745.2):
        lo = hi = b
        for _ in range(3):
            lo, hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
            edges += [lo, hi]
        edges.append(b)
    x = np.concatenate([
        np.linspace(-745.2, 709.0, 1501),
        rng.uniform(-745.2, 709.0, 700),
        rng.uniform(-3.0, 3.0, 300),
        rng.uniform(-1.2, 1.2, 1500),  # where expm1 and the KL terms are hardest
        tiny, -tiny,
        *around,
        np.array(edges),
        np.array([0.0, -0.0, 5e-324, -5e-324, -np.inf]),
    ])
    return x[((x >= -745.2) & (x <= 709.0)) | (x == -np.inf)]


def _reference(kind: str, x: float):
    """The exact function value as an mpmath number (enough digits for 0.01 ulp)."""
    if x == -math.inf:
        return {"exp": mp.mpf(0), "expm1": mp.mpf(-1), "h": mp.inf, "g": mp.mpf(1)}[kind]
    v = mp.mpf(x)
    if kind == "exp":
        return mp.exp(v)
    if kind == "expm1":
        return mp.expm1(v)
    # h = e^x - 1 - x and g = x e^x - e^x + 1 are ~x^2/2 near 0, where the terms are ~x:
    # work with the digits that cancel on top
    lost = 0 if x == 0 or abs(x) >= 1 else int(-math.log10(abs(x))) + 2
    with mp.workdps(mp.mp.dps + lost):
        em = mp.expm1(v)
        return em - v if kind == "h" else v * em - (em - v)


def _to_double_and_offset(ref):
    """(the double nearest to ref, ref minus that double in its ulps, the ulp's exponent)"""
    if ref in (mp.inf, -mp.inf):
        return (math.inf if ref > 0 else -math.inf), 0.0, 0
    hi = float(ref)  # round to nearest (inf beyond the double range)
    if math.isinf(hi):
        return hi, 0.0, 0
    e = max(math.frexp(hi)[1] - 53, -1074) if hi != 0 else -1074
    return hi, float((ref - mp.mpf(hi)) * mp.mpf(2) ** (-e)), e


@pytest.fixture(scope="module")
def references():
    x = _arguments()
    out = {}
    with mp.workdps(40):
        for kind in ("exp", "expm1", "h", "g"):
            table = [_to_double_and_offset(_reference(kind, float(v))) for v in x]
            hi, off, e = (np.array(c) for c in zip(*table, strict=True))
            out[kind] = (hi, off, e.astype(np.int64))
    return x, out


def _ulp_errors(got, hi, off, e):
    """|got - exact| in ulps of the rounded exact value (inf where the result is wrong in
    kind: NaN, or finite against an overflowed reference and vice versa)."""
    err = np.full(got.shape, np.inf)
    both_inf = np.isinf(hi) & (got == hi)
    err[both_inf] = 0.0
    fin = np.isfinite(hi) & np.isfinite(got)
    with np.errstate(over="ignore", invalid="ignore"):
        # got - hi is exact for got within a factor 2 of hi (Sterbenz); ldexp is exact
        err[fin] = np.abs(np.ldexp(got[fin] - hi[fin], -e[fin]) - off[fin])
    return err


def test_reference_is_exact_enough(references):
    """The references themselves: a few values known in closed form."""
    x, ref = references
    hi, off, _ = ref["exp"]
    i = np.flatnonzero(x == 0.0)
    assert np.all(hi[i] == 1.0) and np.all(off[i] == 0.0)
    h_hi = ref["h"][0]
    j = np.flatnonzero((np.abs(x) > 1e-150) & (np.abs(x) < 1e-100))  # h = x^2/2 (1 + x/3)
    assert j.size > 10
    np.testing.assert_allclose(h_hi[j], x[j] ** 2 / 2, rtol=1e-15, atol=0)
    k = np.flatnonzero(x == -np.inf)
    assert np.all(ref["g"][0][k] == 1.0) and np.all(ref["h"][0][k] == np.inf)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_exp_family_accuracy(references, variant, function):
    x, ref = references
    kind, bound = FUNCTIONS[function]
    if function in ("kl_term", "vkl_term"):
        # callers pass finite v only (v = lam (r - c) - lc); at v = -inf the integrand's
        # limit 1 would need a special case that the kernels never reach
        keep = np.isfinite(x)
    else:
        keep = np.ones(x.shape, bool)
    xs = np.ascontiguousarray(x[keep])
    hi, off, e = (a[keep] for a in ref[kind])
    got = np.empty_like(xs)
    _core._mathcheck(variant, function, xs, got)
    err = _ulp_errors(got, hi, off, e)
    normal = np.abs(hi) >= DBL_MIN
    worst = int(np.argmax(np.where(normal, err, -1.0)))
    assert err[normal].max() <= bound, (
        f"{function} [{variant}]: {err[normal].max():.3g} ulp at x = {xs[worst]!r} "
        f"(got {got[worst]!r}, exact {hi[worst]!r} + {off[worst]:.3g} ulp); bound {bound}")
    sub = ~normal
    if sub.any():
        ws = int(np.argmax(np.where(sub, err, -1.0)))
        assert err[sub].max() <= SUBNORMAL_BOUND, (
            f"{function} [{variant}] subnormal result: {err[sub].max():.3g} x 2^-1074 at "
            f"x = {xs[ws]!r} (got {got[ws]!r}, exact {hi[ws]!r})")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("function", list(FLUSHING))
def test_flushing_vector_exp_accuracy(references, variant, function):
    """tl_vexp_w and the e^x of tl_vexp3: about 1 ulp where e^x >= e^-708, exactly 0 below
    (x <= 709: the callers' arguments)."""
    x, ref = references
    kind, bound, lo = FLUSHING[function]
    keep = x <= 709.0
    xs = np.ascontiguousarray(x[keep])
    hi, off, e = (a[keep] for a in ref[kind])
    got = np.empty_like(xs)
    _core._mathcheck(variant, function, xs, got)
    above = xs >= lo
    err = _ulp_errors(got[above], hi[above], off[above], e[above])
    assert err.max() <= bound, f"{function} [{variant}]: {err.max():.3g} ulp"
    assert np.all(got[xs < lo] == 0.0), f"{function} [{variant}]: not flushed below {lo}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_lane_exp_accuracy(variant):
    """tl_vexpf_w (float32 lanes of float32 log-sum-exp): within 2 float32 ulp of e^x for
    the float32 argument x in [-87, 1] (against float64 exp), exactly 0 below -87, 1 at 0,
    NaN for NaN."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-87.0, 1.0, 200_000), np.linspace(-1.0, 1.0, 2001),
                        [0.0, -87.0, 1.0]]).astype(np.float32).astype(np.float64)
    got = np.empty_like(x)
    _core._mathcheck(variant, "vexpf_w", x, got)
    want = np.exp(x)
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    err = np.abs(got - want) / ulp
    assert err.max() <= 2.0, f"vexpf_w [{variant}]: {err.max():.3g} float32 ulp"
    assert got[-3] == 1.0
    special = np.array([-87.5, -100.0, -np.inf, np.nan])
    out = np.empty_like(special)
    _core._mathcheck(variant, "vexpf_w", special, out)
    assert np.array_equal(out[:3], [0.0, 0.0, 0.0]) and np.isnan(out[3])


@pytest.mark.parametrize("variant", VARIANTS)
def test_exp_family_special_values(variant):
    """Exact values where the contract names them: e^+-0 = 1, expm1(+-0) = 0, e^x = 0 and
    expm1(x) = -1 below x = -745.2 and at -inf, and the three outputs of tl_exp_expm1_emx
    equal to the single-output functions over the whole range."""
    x = np.array([0.0, -0.0, -745.21, -800.0, -1e300, -np.inf])
    out = {}
    for f in ("exp", "expm1", "emx_e", "emx_em", "emx_emx", "expm1_minus_x"):
        out[f] = np.empty_like(x)
        _core._mathcheck(variant, f, x, out[f])
    np.testing.assert_array_equal(out["exp"], [1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(out["expm1"], [0.0, 0.0, -1.0, -1.0, -1.0, -1.0])
    np.testing.assert_array_equal(out["emx_emx"][[0, 1, 5]], [0.0, 0.0, np.inf])
    wide = np.linspace(-745.2, 709, 4001)
    for single, part in (("exp", "emx_e"), ("expm1", "emx_em"), ("expm1_minus_x", "emx_emx")):
        a, b = np.empty_like(wide), np.empty_like(wide)
        _core._mathcheck(variant, single, wide, a)
        _core._mathcheck(variant, part, wide, b)
        np.testing.assert_array_equal(a, b, err_msg=f"{single} vs {part} [{variant}]")


def test_deterministic_exp_is_bitwise_the_same_on_every_variant(references):
    """tl_vexp_det and tl_exp_det (csrc/tl_det.h) give the same bits on every variant and
    for any lane count: the samplers' draws rest on it."""
    x, _ = references
    xs = np.ascontiguousarray(np.concatenate([x[x <= 709.0], [-np.inf, np.nan, 0.0, -0.0]]))
    results = []
    for variant in VARIANTS:
        for function in ("vexp_det", "exp_det"):
            got = np.empty_like(xs)
            _core._mathcheck(variant, function, xs, got)
            results.append((variant, function, got))
    first = results[0][2]
    for variant, function, got in results[1:]:
        np.testing.assert_array_equal(got, first, err_msg=f"{function} [{variant}]")
    assert first[-4] == 0.0 and np.isnan(first[-3]) and first[-2] == first[-1] == 1.0


def test_mathcheck_hook_rejects_bad_names():
    x = np.zeros(3)
    with pytest.raises(ValueError, match="variant"):
        _core._mathcheck("sse9", "exp", x, np.empty(3))
    with pytest.raises(ValueError, match="function"):
        _core._mathcheck("portable", "sin", x, np.empty(3))
    with pytest.raises(ValueError, match="length"):
        _core._mathcheck("portable", "exp", x, np.empty(2))
