"""Fuzz suite: every compiled kernel against its NumPy twin in :mod:`tiltlab.reference`.

Each test draws adversarial inputs with hypothesis and one instruction-set variant of the
compiled kernels (``tiltlab.simd.available()``: portable, avx2, avx512 where the CPU runs
it), runs the public function inside ``with tiltlab.simd.use(variant):`` and compares it
with the reference (SPEC section 6: compiled == reference at rtol 1e-12 where the maths is
the same, with absolute floors scaled to the conditioning of the inputs; each tolerance
says why next to it).  Kernels: logsumexp, tilt_stats, tilt, cumulants (orders 1..6),
kl_divergence, best_of_n (law and metrics), solve_lambda (single and joint) and
soft_best_of_n (V <= 9, n = 1..8, temperature 0.05..20), and the ValueError of every
kernel on invalid input (test_fuzz_bad_input).

Input features (every kernel test draws from all that apply):

- row lengths V in 1..70, weighted towards 1 and lengths around the vector widths
  (1, 3, 5, 7, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65), sometimes 257 or 1000;
  one row (1-D) or a batch of up to 3 rows, rewards sometimes one row broadcast;
- logits: Gaussians of scale 0.1 .. 1e300 with offsets +-700, +-1e5, +-1e300, ties,
  denormals (5e-324, 1e-310), values at the edges of ``exp`` (709.78, -745.2), ``-inf``
  patterns (a few, most, all but one, all but two);
- rewards: Gaussians of scale 1e-310 .. 1e100 with offsets, integer and binary ties,
  constant rows, denormal rows;
- memory layouts: contiguous, unaligned (a view ``big[k:k+n]`` of a larger buffer whose
  data pointer is 8-byte but not 32-byte aligned), strided (``big[::2]``, ``big[:, ::3]``),
  reversed (negative strides), Fortran order, read-only; float32 inputs (compared with the
  reference run on the same values upcast to float64: all arithmetic is in double);
- parameters as Python floats, 0-d arrays or per-row arrays; ``lam`` in [-50, 50] plus 0,
  +-1e-12, 1e-300, +-50, +-700, +-1e5, 1e200, -1e306, +-1.8e308, +-inf; ``log_n`` from 0
  (and 5e-324) to 1e3; KL budgets from 0 (and 1e-300 kl_max) to kl_max and beyond;
- bad input (NaN or +inf logits, NaN / inf rewards, all ``-inf`` rows, reward spans that
  overflow): the compiled function must raise a ValueError naming the problem (the
  reference assumes valid input); for ``logsumexp`` NaN / +inf / all ``-inf`` rows are
  valid and must give NaN / +inf / -inf.

Huge logits: ``softmax`` is invariant under a shift of each row.  The reference forms
``l - logsumexp(l)``, which at ``|l| ~ 1e300`` loses ``log V`` entirely, so it is run on the
row-shifted logits ``l - max l`` (computed in float64 on the upcast values): the same
distribution, given to the oracle in its well-conditioned form.  Where a kernel works with
the raw logits it loses about eps |l| (offset_rounding): accepted up to |l| = 1e6, the
reference's own accuracy on raw logits; beyond, the kernels must be exact.

Known bugs found by this suite (minimal reproducers in the ``KNOWN_*`` comments and the
``test_known_bug_*`` regression tests, ``xfail(strict=True)``): huge tied logits
(KNOWN_HUGE_TIE_BUG), cumulants with a subnormal reward spread (KNOWN_SUBNORMAL_SPREAD_BUG),
solve_lambda stopping at its iteration limit (KNOWN_SOLVE_ITERATION_LIMIT_BUG) and tilts
whose ``lam * r`` overflows (KNOWN_LAMBDA_OVERFLOW_BUG).  While a flag is True the fuzz
tests leave that class out (or accept exactly its symptom); once the kernels are fixed,
the xfail tests fail (strict), and the flag and the xfail marker go.  Two kl_divergence
bugs found by the suite are fixed and kept as ``test_regression_*``.

Selection: the tests carry the ``fuzz`` marker and are skipped by the default run
(``python -m pytest tests``) unless ``-m`` mentions fuzz or ``TILTLAB_FUZZ`` is set
(see ``tests/conftest.py``); the regression tests at the end are ordinary tests.  Two
hypothesis profiles, chosen with the environment variable ``TILTLAB_FUZZ_PROFILE``:

``fuzz-ci`` (default)
    2000 examples per kernel test (500 for test_fuzz_bad_input), derandomized (the same
    examples every run), no deadline.  ``python -m pytest tests -m fuzz`` takes about
    two minutes on the 2-core development machine.
``fuzz-long``
    50000 examples per kernel test, random (new examples every run)::

        TILTLAB_FUZZ_PROFILE=fuzz-long python -m pytest tests -m fuzz

The other tests keep their own ``ci`` / ``long`` profiles (``tests/conftest.py``).
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tiltlab
from tiltlab import reference as ref

# ------------------------------------------------------------------ profiles and markers

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("fuzz-ci", max_examples=2000, derandomize=True, deadline=None,
                          suppress_health_check=_HEALTH, print_blob=True)
settings.register_profile("fuzz-long", max_examples=50_000, derandomize=False, deadline=None,
                          suppress_health_check=_HEALTH, print_blob=True)
FUZZ_PROFILE = os.environ.get("TILTLAB_FUZZ_PROFILE", "fuzz-ci")
if FUZZ_PROFILE not in ("fuzz-ci", "fuzz-long"):
    raise ValueError(f"TILTLAB_FUZZ_PROFILE={FUZZ_PROFILE!r}: use fuzz-ci or fuzz-long")
FUZZ = settings(parent=settings.get_profile(FUZZ_PROFILE))
#: for the bad-input test (five kernels, one kind of bad value each)
FUZZ_QUARTER = settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 4))

fuzz = pytest.mark.fuzz


def quiet(test):
    """Run the test body under np.errstate(all="ignore"): the reference and the tolerance
    arithmetic overflow and divide by zero on these inputs by design, and recording a
    warning per example would cost more than the kernels."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        with np.errstate(all="ignore"):
            return test(*args, **kwargs)

    return run


VARIANTS = st.sampled_from(tiltlab.simd.available())
F32_MAX = float(np.finfo(np.float32).max)

# ------------------------------------------------------------------ value strategies

#: lengths: 1, odd lengths and lengths around the vector widths (2, 4, 8 doubles), all of
#: 1..70, and rarely (2 in 91) a long row
LENGTHS = ([1, 1, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65]
           + list(range(1, 71)) + [257, 1000])
SPECIAL_LOGITS = np.array([5e-324, -5e-324, 1e-310, -1e-310, 0.0, -0.0, 1e300, -1e300, 700.0,
                           -700.0, 1e5, -1e5, 709.78, -745.2, 1.0, -1.0])
LOGIT_SCALES = [0.1, 1.0, 30.0, 700.0, 1e5, 1e300]
LOGIT_OFFSETS = [0.0, 0.0, 700.0, -700.0, 1e5, -1e5, 1e300, -1e300]
#: (scale, offset) of the Gaussian logits
LOGIT_SHAPES = [(sc, off) for off in LOGIT_OFFSETS for sc in LOGIT_SCALES]
DBL_MAX = float(np.finfo(np.float64).max)
LAM_SPECIALS = [0.0, -0.0, 1e-12, -1e-12, 50.0, -50.0, np.inf, -np.inf, 700.0, -700.0, 1e5,
                -1e5, 1e-300, 1e200, -1e306, DBL_MAX, -DBL_MAX]
REWARD_KINDS = ("normal", "normal", "normal", "huge", "tiny", "integer", "binary", "constant",
                "denormal")
#: (dtype, memory layout) of one array passed to a compiled kernel
LAYOUTS = st.sampled_from([(dt, kind) for dt in (np.float64, np.float64, np.float32)
                           for kind in ("contiguous", "unaligned", "strided", "reversed",
                                        "fortran", "readonly")])

# Hypothesis draws the features that matter most for a failure report and shrink well
# (sizes, scales, kinds, layouts); the secondary ones (ties, special values, -inf
# patterns, offsets) come from a NumPy generator seeded by a drawn integer, which keeps an
# example at about 8 draws (each costs ~0.25 ms, more than most kernel calls here).


def lengths(long_rows=True, max_v=70):
    """V: 1..max_v weighted towards the vector-width edges; rarely 257 or 1000."""
    return st.sampled_from([v for v in LENGTHS if v <= max_v or (long_rows and v > 70)])


def _neg_inf_mask(rng, shape):
    """Mask of -inf logits, leaving at least one finite logit in every row."""
    pattern = rng.choice(["none", "some", "most", "all_but_one", "all_but_two"],
                         p=[0.35, 0.15, 0.15, 0.2, 0.15])
    n_rows, v = shape
    if pattern == "none":
        return np.zeros(shape, dtype=bool)
    if pattern == "some":
        mask = rng.random(shape) < 0.2
    elif pattern == "most":
        mask = rng.random(shape) < 0.9
    else:
        keep = 1 if pattern == "all_but_one" else 2
        mask = np.ones(shape, dtype=bool)
        for i in range(n_rows):
            mask[i, rng.choice(v, size=min(keep, v), replace=False)] = False
    mask[np.arange(n_rows), rng.integers(0, v, n_rows)] = False
    return mask


def logit_values(rng, shape, scale, offset, *, neg_inf=True, spread_huge=True):
    """Adversarial float64 logits of shape (rows, V); every row has a finite logit.

    Gaussian of the given scale plus offset; sometimes (30 %) a few distinct values
    repeated (ties), sometimes (30 %) special values sprinkled in (denormals, +-1e300,
    +-700, +-1e5, the edges of exp); -inf patterns.  While KNOWN_HUGE_TIE_BUG is set, huge
    logits (|l| > HUGE) are made distinct, so that the kernels' known failure on huge ties
    does not waste examples (float32 can still tie them at +-3.4e38)."""
    x = rng.normal(size=shape) * scale + offset
    if rng.random() < 0.3:
        x = rng.choice(x.ravel()[:rng.integers(1, 4)], size=shape)
    if rng.random() < 0.3:
        where = rng.random(shape) < rng.choice([0.1, 0.5, 1.0])
        x[where] = rng.choice(SPECIAL_LOGITS, size=int(where.sum()))
    if neg_inf:
        x[_neg_inf_mask(rng, shape)] = -np.inf
    if KNOWN_HUGE_TIE_BUG and spread_huge:  # huge values apart: l (1 + k 2^-20), k-th one
        huge = np.isfinite(x) & (np.abs(x) > HUGE)
        x[huge] *= 1.0 + np.arange(1, int(huge.sum()) + 1) * 2.0**-20
    return x


def reward_values(rng, shape, kind):
    """Adversarial finite float64 rewards of shape (rows, V): Gaussian of scale 1e-3 ..
    1e5 ("normal"), 1e100 ("huge"), 1e-310 ("tiny"), integers in -3..3 or 0..1 (ties),
    constant, denormal; sometimes (40 %) plus an offset 0.5, +-1e3 or 1e5."""
    if kind in ("normal", "huge", "tiny"):
        scale = {"huge": 1e100, "tiny": 1e-310}.get(kind) or rng.choice([1e-3, 1, 1, 10, 1e5])
        r = rng.normal(size=shape) * scale
    elif kind == "integer":
        r = rng.integers(-3, 4, size=shape).astype(float)
    elif kind == "binary":
        r = rng.integers(0, 2, size=shape).astype(float)
    elif kind == "constant":
        r = np.full(shape, rng.choice([0.0, 1.0, -7.5, 1e5]))
    else:
        r = rng.choice([0.0, 5e-324, -5e-324, 1e-310, 2e-310], size=shape)
    if rng.random() < 0.4:
        r = r + rng.choice([0.5, -1e3, 1e3, 1e5])
    return r


def _cast(x, dtype, spread_huge=True):
    """x in dtype; float32 clips finite values to its range (so +-1e300 stay finite), while
    KNOWN_HUGE_TIE_BUG is set to distinct values +-F32_MAX (1 - k 2^-20)."""
    if dtype == np.float32:
        x = np.where(np.isfinite(x), np.clip(x, -F32_MAX, F32_MAX), x)
        big = np.abs(x) == F32_MAX
        if KNOWN_HUGE_TIE_BUG and spread_huge:
            x[big] *= 1.0 - np.arange(1, int(big.sum()) + 1) * 2.0**-20
    return x.astype(dtype)


def _unaligned(n, dtype):
    """A writable 1-D array of n elements whose data pointer is not 32-byte aligned."""
    item = np.dtype(dtype).itemsize
    buf = np.zeros(n + 8, dtype=dtype)
    start = next(k for k in range(1, 8) if (buf.ctypes.data + k * item) % 32)
    return buf[start:start + n]


def laid_out(values, layout, rng, spread_huge=True):
    """(array passed to the compiled function, float64 values the reference sees): the
    values cast to the layout's dtype, in its memory layout (contiguous, a view whose data
    pointer is 8- but not 32-byte aligned, every 2nd or 3rd element of a larger buffer,
    negative strides, Fortran order, read-only)."""
    dtype, kind = layout
    x = _cast(values, dtype, spread_huge)
    if kind == "unaligned":
        out = _unaligned(x.size, dtype).reshape(x.shape)
        out[...] = x
    elif kind == "strided":
        step = int(rng.choice([2, 3]))
        big = np.zeros(x.shape[:-1] + (x.shape[-1] * step,), dtype=dtype)
        out = big[..., ::step]
        out[...] = x
    elif kind == "reversed":
        out = x[..., ::-1].copy()[..., ::-1]
    elif kind == "fortran":
        out = np.asfortranarray(x)
    else:
        out = x.copy()
        if kind == "readonly":
            out.setflags(write=False)
    assert np.array_equal(out, x, equal_nan=True)
    return out, x.astype(np.float64)


class Problem:
    """One drawn input: what the compiled kernel gets and what the reference gets.

    ``logits``, ``rewards``: the arrays passed to the compiled function (dtype and memory
    layout as drawn); ``lg``, ``rw``: float64 ``(rows, V)`` values the reference sees (``lg``
    shifted by its row maximum, see the module docstring); ``raw``: the unshifted float64
    logits; ``batch``: the batch shape of the results."""

    def __init__(self, logits, rewards, lg64, rw64, batch, layout, rng):
        self.logits, self.rewards, self.batch, self.layout = logits, rewards, batch, layout
        self.rng = rng  # for further secondary choices of the test
        self.raw = _rows(lg64)
        self.lg = shifted(self.raw)
        self.rw = np.ascontiguousarray(np.broadcast_to(_rows(rw64), self.lg.shape))
        self.n_rows = self.lg.shape[0]
        self.huge_tie = huge_tie(self.raw)

    def __repr__(self):
        with np.printoptions(precision=17, threshold=40, edgeitems=4):
            return (f"Problem({self.layout}, batch={self.batch},\n"
                    f"  logits={self.logits!r},\n  rewards={self.rewards!r})")


@st.composite
def problems(draw, *, max_rows=3, long_rows=True, neg_inf=True, one_row=False, max_v=70,
             reward_kinds=REWARD_KINDS, spread_huge=True):
    """Adversarial (logits, rewards) for the tilting / best-of-N kernels, as a Problem."""
    n_rows = 1 if one_row else draw(st.integers(1, max_rows))
    v = draw(lengths(long_rows, max_v))
    scale, offset = draw(st.sampled_from(LOGIT_SHAPES))
    kind = draw(st.sampled_from(reward_kinds))
    layouts = draw(LAYOUTS), draw(LAYOUTS)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (n_rows, v)
    lg = logit_values(rng, shape, scale, offset, neg_inf=neg_inf, spread_huge=spread_huge)
    rw = reward_values(rng, shape, kind)
    one_d = n_rows == 1 and (one_row or rng.random() < 0.5)
    if one_d:
        lg, rw = lg[0], rw[0]
    elif n_rows > 1 and rng.random() < 0.3:
        rw = rw[0]  # one row of rewards broadcast against the batch
    logits, lg64 = laid_out(lg, layouts[0], rng, spread_huge)
    rewards, rw64 = laid_out(rw, layouts[1], rng)
    layout = f"{logits.dtype} {_layout_name(logits)} / {rewards.dtype} {_layout_name(rewards)}"
    return Problem(logits, rewards, lg64, rw64, () if one_d else (n_rows,), layout, rng)


def _layout_name(a):
    if not a.flags.writeable:
        return "read-only"
    if a.ndim and a.strides[-1] < 0:
        return "reversed"
    if a.ndim and a.strides[-1] != a.itemsize:
        return f"strided x{a.strides[-1] // a.itemsize}"
    if a.ndim == 2 and a.shape[0] > 1 and a.flags.f_contiguous and not a.flags.c_contiguous:
        return "fortran"
    if a.ctypes.data % 32:
        return f"offset {a.ctypes.data % 32} mod 32"
    return "contiguous"


#: rows whose maximum logit exceeds this in magnitude count as 'huge' (eps * HUGE ~ 2e-10)
HUGE = 1e6


def huge_tie(raw):
    """Rows where two finite logits of magnitude above HUGE lie within 40 nats of each
    other: the known-bug class of KNOWN_HUGE_TIE_BUG (at the row maximum it breaks the
    normaliser, inside the argmax / argmin reward set the lam = +-inf limits)."""
    raw = _rows(raw)
    out = np.zeros(raw.shape[0], dtype=bool)
    for i, row in enumerate(raw):
        huge = np.sort(row[np.isfinite(row) & (np.abs(row) > HUGE)])
        out[i] = huge.size > 1 and bool(np.any(np.diff(huge) <= 40.0))
    return out


def offset_rounding(raw):
    """Per row: 4 eps max |l| over the finite logits of magnitude at most HUGE.

    The ``lam = +-inf`` limits, the standard (large-tilt) mode of tilt_stats / tilt and the
    reward-level masses of best_of_n / soft_best_of_n form ``log p = l - A`` with
    ``A = max l + log sum exp(l - max l)`` (over the row or the extreme-reward set), so
    every log-weight carries an absolute error of about eps |l| (1e-11 at |l| = 1e5).  The
    reference run on the raw logits does the same (``l - logsumexp(l)``): this floor is the
    reference's own accuracy on such inputs, not a loosening.  Beyond HUGE it would swamp
    everything, and the kernels are exact there unless huge logits tie (huge_tie)."""
    raw = _rows(raw)
    with np.errstate(invalid="ignore"):
        mag = np.where(np.isfinite(raw) & (np.abs(raw) <= HUGE), np.abs(raw), 0.0)
    return 4 * np.finfo(float).eps * np.max(mag, axis=-1)


def shifted(logits):
    """Logits minus their row maximum (float64): the same softmax, exactly representable
    offsets for every outcome that carries mass (see the module docstring)."""
    x = np.asarray(logits, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        return x - np.where(np.isfinite(m), m, 0.0)


class Space:
    """A parameter's values: a hypothesis strategy (floats on the given ranges or special
    values), and for the other rows of a per-row array NumPy draws from the same."""

    def __init__(self, specials, *ranges):
        self.specials, self.ranges = list(specials), ranges
        self.strategy = st.one_of(*[st.floats(lo, hi, allow_nan=False) for lo, hi in ranges],
                                  st.sampled_from(self.specials))

    def more(self, rng, n):
        lo, hi = self.ranges[rng.integers(len(self.ranges))]
        return np.where(rng.random(n) < 0.5, rng.choice(self.specials, n),
                        rng.uniform(lo, hi, n))


@st.composite
def params(draw, space, prob, scalar=False):
    """A parameter: a Python float, a 0-d array or (unless ``scalar``) one value per row
    of ``prob``."""
    form = draw(st.sampled_from(["float", "0d"] if scalar else ["float", "0d", "rows"]))
    first = draw(space.strategy)
    if form == "float":
        return float(first)
    if form == "0d":
        return np.array(first)
    values = np.concatenate([[first], space.more(prob.rng, prob.n_rows - 1)])
    return values.reshape(prob.batch if prob.batch else (1,))


LAM_SPACE = Space(LAM_SPECIALS, (-50.0, 50.0))
#: cumulants: moderate tilts (their accuracy bar is for well-scaled inputs)
CUMULANT_LAM_SPACE = Space([0.0, 1e-12, -1e-12, np.inf, -np.inf], (-5.0, 5.0))
LOG_N_SPACE = Space([0.0, 5e-324, 1e-12, 1e-3, 0.5, float(np.log(2.0)), 1.0, 10.0, 40.0,
                     100.0, 700.0, 1e3], (0.0, 1e3), (0.0, 40.0))
#: budgets as fractions of kl_max (1 and above: lam = inf)
BUDGET_SPACE = Space([0.0, 1e-300, 1e-12, 1e-6, 0.1, 0.5, 0.9, 0.999, 1.0, 1.5, np.inf],
                     (0.0, 1.0))


def _rows(x):
    """x as a 2-D (rows, V) array."""
    return np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])


def _per_row(x, n_rows):
    """A parameter (float, 0-d or per-row array) as one float64 value per row."""
    return np.broadcast_to(np.asarray(x, dtype=np.float64).reshape(-1), (n_rows,))


def _unchanged(before, after):
    assert np.array_equal(before, after, equal_nan=True), "an input was modified"


def _relevant_parts(lg, rw, lam):
    """(max |l - max l| over the outcomes that carry mass under p or under the tilt, i.e.
    within e^-800 of the largest term, and |lam| max |r| over the support), per row."""
    lg = _rows(lg)
    rw = np.broadcast_to(_rows(rw), lg.shape)
    lam = _per_row(lam, lg.shape[0])
    with np.errstate(invalid="ignore", over="ignore"):
        lamf = np.where(np.isfinite(lam), lam, 0.0)
        x = np.where(lg > -np.inf, lg + lamf[:, None] * rw, -np.inf)
        rel = (lg > -800.0) | (x >= np.max(x, axis=-1, keepdims=True) - 800.0)
        rmax = np.max(np.where(lg > -np.inf, np.abs(rw), 0.0), axis=-1)
        lmag = np.max(np.where(rel & (lg > -np.inf), np.abs(lg), 0.0), axis=-1)
    return lmag, np.abs(lamf) * rmax


def relevant_scale(lg, rw, lam):
    """Per-row magnitude of the terms entering ``log sum exp(l + lam r)``, for absolute
    tolerances: ``1 + max |l - max l|`` over the outcomes that carry mass under p or under
    the tilt (the others move nothing), plus ``|lam| max |r|`` over the support.  Rounding
    the inputs to double perturbs those terms by eps times this, so no algorithm can do
    better than a small multiple of eps times it."""
    lmag, mag = _relevant_parts(lg, rw, lam)
    return 1.0 + lmag + mag


def _flat(x):
    return np.atleast_1d(np.asarray(x, dtype=np.float64)).reshape(-1)


def assert_close(got, want, atol, rtol=1e-12, what=""):
    """|got - want| <= rtol |want| + atol elementwise; infinities and NaN must match."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    atol = np.broadcast_to(atol, want.shape)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), (what, got, want)
    inf = np.isinf(want)
    assert np.array_equal(got[inf], want[inf]), (what, got, want)
    ok = ~nan & ~inf
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got - want)
        bad = ok & ~(err <= rtol * np.abs(want) + atol)
    assert not bad.any(), (what, got[bad], want[bad], err[bad], atol[bad])


# ------------------------------------------------------------------ known bugs, reference limits

#: Known bug (found by this suite): rows whose largest logit is huge (|l| >~ 1e16, e.g.
#: 1e300) and shared with another outcome.  kl_max, the lam = +-inf limits, the standard
#: (large |lam| * reward range) mode of tilt_stats / tilt / cumulants and the reward-level
#: masses (best_of_n, soft_best_of_n) compute
#: log p = l - (max l + log sum exp(l - max l)) or l + lam r on the raw logits, where
#: log sum exp(...) and lam r are absorbed: kl_max and
#: KL(phi_inf || p) come out 0, tilt(lam=inf) is not normalised, tilt(lam=1) returns
#: positive log-probabilities, tilt_stats at lam = 700 gives the untilted mean and
#: KL = 350 for two outcomes, cumulants gives the wrong mean or NaN, solve_lambda returns
#: inf for an achievable budget and best_of_n returns NaN log-probabilities.  The
#: regression test test_known_bug_huge_tied_logits (xfail strict) pins it; the affected
#: fuzz tests leave the class out while this flag is True.  Set it to False once the
#: kernels are fixed.
KNOWN_HUGE_TIE_BUG = True


#: Known bug (found by this suite): cumulants returns NaN for every order (the mean too)
#: when the reward spread of a row is subnormal and non-zero, e.g.
#: ``cumulants([0, 0], [5e-324, 0], 1) -> [nan]`` (reference: [0.]) or rewards
#: (1e-300, 1.0000000001e-300); the moments are standardised by a spread whose reciprocal
#: overflows.  Pinned by test_known_bug_subnormal_reward_spread_cumulants (xfail strict).
KNOWN_SUBNORMAL_SPREAD_BUG = True


#: Known bug (found by this suite): solve_lambda stops at its iteration limit (200 passes,
#: with a RuntimeWarning) and returns a lam far from the root, whose KL is kl_max instead
#: of the budget, in two families of inputs:
#: - a rare best outcome: logits (-300, 0), rewards (1, 0), budget 150 = kl_max / 2 gives
#:   lam = 1.5e6 (kl_max -540 and -700 give 2.6e58 and 1.7e93); the root is 300.0092419
#:   (reference); -100 converges in 77 passes, -1000 in 12;
#: - a reward spread below ~1e-153 (the variance underflows): rewards (1e-200, 0), logits
#:   (0, 1), budget kl_max / 2 gives 2.58e120, rewards (1e-155, 0) inf; the root is
#:   2.50227e200 (the problem is scale-invariant: r -> r / s, lam -> lam s).
#: While this flag is True, the fuzz test accepts the warning (any other warning fails
#: it) and checks only the rows whose lam does solve kl(lam) = budget (joint solves with
#: the warning are left out); test_known_bug_solve_lambda_iteration_limit pins both.
#: On the fuzz inputs the warning comes up in about one example in five.
KNOWN_SOLVE_ITERATION_LIMIT_BUG = True


def tiny_reward_spread(prob, below=1e-150):
    """Rows whose reward spread over the support is positive and below ``below``."""
    support = prob.lg > -np.inf
    spread = (np.max(np.where(support, prob.rw, -np.inf), axis=-1)
              - np.min(np.where(support, prob.rw, np.inf), axis=-1))
    return (spread > 0) & (spread < below)


#: Known bug (found by this suite): tilt_stats and tilt at a finite lam so large that
#: lam * r overflows double: tilt_stats([0, 0], [998, 1003], 1e306) and
#: tilt_stats([0, 0], [1.5, 2], DBL_MAX) give kl = 0 instead of log 2 (the lam -> inf
#: limit, which rewards (0, 1) at 1.7e308 do give), and tilt(...) probabilities summing to
#: 1/2; tilt([0, -inf], [0, 1e5], 1e306) gives [0, nan] instead of [0, -inf] (an
#: impossible outcome whose lam (r - c) overflows to +inf).  solve_lambda then trusts
#: kl = 0 up there and returns lam = DBL_MAX / 5 = 3.6e307 without a warning:
#: solve_lambda([709.78, 0], [99998, 100003], 354.89) (half of kl_max) gives 3.6e307
#: instead of 141.95678 (what it gives for rewards (0, 5)).  While this flag is True, the
#: fuzz tests leave out tilts in that range, and the rows where solve_lambda returns one;
#: test_known_bug_lambda_times_reward_overflow pins it.
KNOWN_LAMBDA_OVERFLOW_BUG = True


def lambda_overflow(prob, lam_rows):
    """Rows where lam is finite and lam * max |r| (over all outcomes) overflows double (the
    class of KNOWN_LAMBDA_OVERFLOW_BUG)."""
    rmax = np.max(np.abs(prob.rw), axis=-1)
    lam_rows = np.abs(np.asarray(lam_rows, dtype=np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        return np.isfinite(lam_rows) & np.isinf(lam_rows * rmax)


def reference_tilts(prob, lam_rows):
    """The tilts to give the reference, per row, and whether they are the limit.

    Where lam is finite but lam * (reward range) overflows, the reference (lam (r - c) =
    +-inf) gives NaN.  If moreover lam times the gap between the extreme reward level and
    the next exceeds 1500, phi_lam is the lam = +-inf limit to double precision: the
    reference is run at +-inf there (and Lambda(lam) = lam r* - kl_inf).  Examples with an
    overflowing range but a smaller gap are left out (assume)."""
    support = prob.lg > -np.inf
    lam_rows = np.asarray(lam_rows, dtype=np.float64)
    span = (np.max(np.where(support, prob.rw, -np.inf), axis=-1)
            - np.min(np.where(support, prob.rw, np.inf), axis=-1))
    gap = np.full(prob.n_rows, np.inf)
    for i in range(prob.n_rows):
        levels = np.unique(prob.rw[i][support[i]])
        if levels.size > 1:
            gap[i] = levels[-1] - levels[-2] if lam_rows[i] > 0 else levels[1] - levels[0]
    with np.errstate(over="ignore", invalid="ignore"):
        overflow = np.isfinite(lam_rows) & np.isinf(np.abs(lam_rows) * span)
        limit = overflow & (np.abs(lam_rows) * gap > 1500.0)
    assume(not np.any(overflow & ~limit))
    return np.where(limit, np.copysign(np.inf, lam_rows), lam_rows), limit


def skip_known_bug(prob):
    """Leave out examples of the known-bug class (see KNOWN_HUGE_TIE_BUG)."""
    if KNOWN_HUGE_TIE_BUG:
        assume(not prob.huge_tie.any())


def subnormal_spread(prob):
    """Rows whose reward spread over the support is subnormal and non-zero."""
    return tiny_reward_spread(prob, np.finfo(float).tiny)


# ------------------------------------------------------------------ bad input


@st.composite
def bad_problems(draw, reward_span=True):
    """A problem with one kind of invalid value, and the message the ValueError must give.

    ``reward_span``: include rewards whose span overflows double (an error wherever the
    rewards are multiplied by lam; best-of-N uses their order only and accepts them)."""
    prob = draw(problems(max_rows=2, long_rows=False))
    kind = draw(st.sampled_from(["nan_logit", "inf_logit", "nan_reward", "inf_reward",
                                 "empty_row"] + (["reward_span"] if reward_span else [])))
    lg = np.array(prob.logits, dtype=np.float64)
    rw = np.array(prob.rewards, dtype=np.float64)
    at = tuple(int(draw(st.integers(0, s - 1))) for s in lg.shape)
    if kind == "nan_logit":
        lg[at] = np.nan
        match = "logits contains NaN"
    elif kind == "inf_logit":
        lg[at] = np.inf
        match = "logits contains [+]inf"
    elif kind == "nan_reward":
        rw[at[-rw.ndim:]] = np.nan
        match = "rewards contains NaN"
    elif kind == "inf_reward":
        rw[at[-rw.ndim:]] = draw(st.sampled_from([np.inf, -np.inf]))
        match = "rewards contains [+-]inf"
    elif kind == "empty_row":
        lg[at[:-1]] = -np.inf
        match = "all -inf"
    else:  # rewards spanning more than the double range (float64 only)
        shape = lg.shape[:-1] + (max(lg.shape[-1], 2),)
        lg = np.zeros(shape)
        rw = np.zeros(shape)
        rw[..., 0], rw[..., -1] = -1.5e308, 1.5e308
        match = "span more than the float64 range"
    if kind != "reward_span" and draw(st.booleans()):
        lg, rw = _cast(lg, np.float32), _cast(rw, np.float32)
    return lg, rw, match


BAD_CALLS = {
    "tilt_stats": lambda lg, rw: tiltlab.tilt_stats(lg, rw, 0.7),
    "tilt": lambda lg, rw: tiltlab.tilt(lg, rw, -1.3),
    "cumulants": lambda lg, rw: tiltlab.cumulants(lg, rw, 3, 0.4),
    "best_of_n": lambda lg, rw: tiltlab.best_of_n(lg, rw, log_n=2.0).log_probs,
    "solve_lambda": lambda lg, rw: tiltlab.solve_lambda(lg, rw, 0.05),
}


@fuzz
@FUZZ_QUARTER
@given(data=st.data(), variant=VARIANTS, kernel=st.sampled_from(sorted(BAD_CALLS)))
@quiet
def test_fuzz_bad_input(data, variant, kernel):
    """Invalid input must raise a clear ValueError naming the problem (the reference
    assumes valid input): every kernel of BAD_CALLS, a quarter of the profile's examples."""
    lg, rw, match = data.draw(bad_problems(kernel != "best_of_n"), label="bad input")
    with tiltlab.simd.use(variant), pytest.raises(ValueError, match=match):
        BAD_CALLS[kernel](lg, rw)


def _result_shape(prob, *params_):
    return np.broadcast_shapes(prob.batch, *[np.shape(p) for p in params_])


def _reward_scale(prob):
    """1 + max |r| over the support, per row."""
    return 1.0 + np.max(np.where(prob.lg > -np.inf, np.abs(prob.rw), 0.0), axis=-1)


# ------------------------------------------------------------------ logsumexp


@st.composite
def lse_inputs(draw):
    """(array, float64 values, axis): a problem's logits, in half the examples with rows
    holding NaN, +inf, NaN and +inf, or only -inf (SciPy semantics: NaN, +inf, NaN, -inf)."""
    prob = draw(problems(max_rows=3, spread_huge=False))
    x = np.array(prob.logits, dtype=np.float64)
    rng = prob.rng
    if draw(st.booleans()):
        rows2 = x.reshape(-1, x.shape[-1])
        for i in range(rows2.shape[0]):
            kind = rng.choice(["keep", "keep", "nan", "pinf", "all_ninf", "pinf_nan"])
            j = rng.integers(0, rows2.shape[1])
            if kind == "nan":
                rows2[i, j] = np.nan
            elif kind == "pinf":
                rows2[i, j] = np.inf
            elif kind == "all_ninf":
                rows2[i] = -np.inf
            elif kind == "pinf_nan":
                rows2[i, j] = np.inf
                rows2[i, (j + 1) % rows2.shape[1]] = np.nan
        x = rows2.reshape(x.shape)
    arr, x64 = laid_out(x, draw(LAYOUTS), rng, spread_huge=False)
    axis = draw(st.sampled_from([-1, -1, None] + ([0, (0, 1)] if arr.ndim == 2 else [0])))
    return arr, x64, axis


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS)
@quiet
def test_fuzz_logsumexp(data, variant):
    arr, x64, axis = data.draw(lse_inputs(), label="a, axis")
    before = arr.copy()
    with tiltlab.simd.use(variant):
        got = tiltlab.logsumexp(arr, axis=axis)
    _unchanged(before, arr)
    with np.errstate(all="ignore"):
        want = ref.logsumexp(x64, axis=axis)
        # absolute floor: eps times the largest |a| among the terms that carry mass
        m = np.max(np.where(np.isnan(x64), -np.inf, x64), axis=axis, keepdims=True)
        rel = (x64 >= m - 800.0) & np.isfinite(x64)
        mag = np.max(np.where(rel, np.abs(x64), 0.0), axis=axis)
    assert_close(got, want, rtol=1e-14, atol=1e-15 * (1.0 + mag), what="logsumexp")


# ------------------------------------------------------------------ tilt_stats


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS)
@quiet
def test_fuzz_tilt_stats(data, variant):
    prob = data.draw(problems(), label="problem")
    skip_known_bug(prob)
    lam = data.draw(params(LAM_SPACE, prob), label="lam")
    if KNOWN_LAMBDA_OVERFLOW_BUG:
        assume(not lambda_overflow(prob, _per_row(lam, prob.n_rows)).any())
    before = (prob.logits.copy(), prob.rewards.copy())
    with tiltlab.simd.use(variant):
        got = tiltlab.tilt_stats(prob.logits, prob.rewards, lam)
    _unchanged(before[0], prob.logits)
    _unchanged(before[1], prob.rewards)
    for g in got:
        assert np.shape(g) == _result_shape(prob, lam)
    lam_r = _per_row(lam, prob.n_rows)
    lam_ref, limit = reference_tilts(prob, lam_r)
    want = ref.tilt_stats(prob.lg, prob.rw, lam_ref)
    scale = relevant_scale(prob.lg, prob.rw, lam_ref)
    rscale = _reward_scale(prob)
    # delta: absolute error of every log-weight from the logits' offset; it moves Lambda by
    # delta, the tilted moments by delta times the reward range (< 2 rscale)
    delta = offset_rounding(prob.raw)
    lam_f = np.where(np.isfinite(lam_ref), np.abs(lam_ref), 0.0)
    lp, mean, var, kl = (_flat(g) for g in got)
    w_lp, w_mean, w_var, w_kl = (_flat(w) for w in want)
    with np.errstate(over="ignore", invalid="ignore"):
        w_lp = np.where(limit, lam_r * w_mean - w_kl, w_lp)
    # the log-weights of outcomes whose logit is far from the maximum but which carry mass
    # under the tilt (a float32 logit -3.4e38 at reward -3.4e38, lam = -0.5) are only known
    # to eps |l - max l|: their share of phi, hence the moments, to that much (at most 1);
    # the reference, which forms l - logsumexp(l), loses log 2 there
    lmag = _relevant_parts(prob.lg, prob.rw, lam_ref)[0]
    share = np.minimum(1.0, 4 * np.finfo(float).eps * lmag)
    assert_close(lp, w_lp, atol=1e-12 * scale + delta, what="log_partition")
    assert_close(mean, w_mean, atol=(1e-12 + 2 * delta + 2 * share) * rscale, what="mean")
    assert_close(var, w_var, atol=(1e-11 + 4 * delta + 4 * share) * rscale**2,
                 what="variance")
    # KL near 0 needs an absolute floor: it is lam * mean - Lambda to the conditioning of
    # the terms (1e-13 * scale); elsewhere 1e-12 relative (floor 1e-3, test_tilting's rule)
    with np.errstate(over="ignore", invalid="ignore"):
        d_kl = np.where(delta > 0, delta * (1.0 + 2 * lam_f * rscale), 0.0)
    assert_close(kl, w_kl, rtol=0.0, atol=1e-12 * np.maximum(w_kl, 1e-3) + 1e-13 * scale
                 + d_kl, what="kl")
    assert np.all(kl >= 0) and np.all(var >= 0)


# ------------------------------------------------------------------ tilt


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS)
@quiet
def test_fuzz_tilt(data, variant):
    prob = data.draw(problems(), label="problem")
    skip_known_bug(prob)
    lam = data.draw(params(LAM_SPACE, prob), label="lam")
    if KNOWN_LAMBDA_OVERFLOW_BUG:
        assume(not lambda_overflow(prob, _per_row(lam, prob.n_rows)).any())
    with tiltlab.simd.use(variant):
        got = tiltlab.tilt(prob.logits, prob.rewards, lam)
    assert got.shape == _result_shape(prob, lam) + (prob.lg.shape[-1],)
    lam_r = _per_row(lam, prob.n_rows)
    lam_ref, limit = reference_tilts(prob, lam_r)
    want = ref.tilt(prob.lg, prob.rw, lam_ref)
    g = _rows(got)
    # (at a finite lam of the limit rows, the outcomes off the extreme set have a finite
    # log phi below -1500, the limit -inf; and below -DBL_MAX / 2, where lam r is of the
    # size of DBL_MAX, either side may overflow to -inf: probability 0 both ways)
    huge_neg = -DBL_MAX / 2
    gone = np.isneginf(want) & (g < np.where(limit[:, None], -1500.0, huge_neg))
    g = np.where(gone, -np.inf, g)
    want = np.where(np.isneginf(g) & (want < huge_neg), -np.inf, want)
    assert np.array_equal(np.isneginf(g), np.isneginf(want)), (g, want)
    # per outcome: its own log-weight |l - max l| + |lam r| enters, plus the row's normaliser
    lam_f = np.where(np.isfinite(lam_ref), np.abs(lam_ref), 0.0)
    with np.errstate(invalid="ignore"):
        own = np.where(prob.lg > -np.inf, np.abs(prob.lg) + lam_f[:, None] * np.abs(prob.rw),
                       0.0)
    row = relevant_scale(prob.lg, prob.rw, lam_ref)
    delta = offset_rounding(prob.raw)
    assert_close(g, want, rtol=0.0, atol=1e-12 * (row[:, None] + own) + 2 * delta[:, None],
                 what="log phi")
    with tiltlab.simd.use(variant):
        norm = tiltlab.logsumexp(g)
    assert np.all(np.abs(norm) <= 1e-13 * row + 2 * delta), norm


# ------------------------------------------------------------------ cumulants


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS, order=st.integers(1, 6))
@quiet
def test_fuzz_cumulants(data, variant, order):
    # well-scaled rewards; no subnormal spreads while KNOWN_SUBNORMAL_SPREAD_BUG is set
    kinds = tuple(k for k in REWARD_KINDS if k != "huge" and not (
        KNOWN_SUBNORMAL_SPREAD_BUG and k in ("tiny", "denormal")))
    prob = data.draw(problems(reward_kinds=kinds), label="problem")
    skip_known_bug(prob)
    if KNOWN_SUBNORMAL_SPREAD_BUG:
        assume(not subnormal_spread(prob).any())
    # well-scaled inputs (SPEC section 2): |r|^order stays in range; beyond, kappa_k
    # overflows and the reference's recursion gives inf - inf = NaN
    assume(np.all(np.log10(_reward_scale(prob)) * order < 300))
    lam = data.draw(params(CUMULANT_LAM_SPACE, prob), label="lam")
    with tiltlab.simd.use(variant):
        got = tiltlab.cumulants(prob.logits, prob.rewards, order, lam)
    assert got.shape == _result_shape(prob, lam) + (order,)
    lam_r = _per_row(lam, prob.n_rows)
    want = ref.cumulants(prob.lg, prob.rw, order, lam_r)
    g = got.reshape(-1, order)
    # test_tilting's convention: 1e-9 of max(|kappa_k|, sd^k), and the mean (the centre of
    # the moments) known to e = 1e-13 of |r| only: a centre off by e moves the k-th central
    # moment by about (sd + e)^k - sd^k (e^2 for the variance of constant rewards at |r| = 1e3,
    # where the reference's mean, sum phi r with sum phi = 1 +- eps, is off by ~eps |r|)
    e = 1e-13 * (_reward_scale(prob) - 1.0)
    sd = np.sqrt(_flat(ref.tilt_stats(prob.lg, prob.rw, lam_r)[2]))[:, None]
    k = np.arange(1, order + 1)
    floor = np.where(k == 1, e[:, None], 2.0**k * ((sd + e[:, None]) ** k - sd**k))
    atol = 1e-9 * np.maximum(np.abs(want), np.where(k == 1, 0.0, sd**k)) + floor + 1e-300
    assert_close(g, want, rtol=0.0, atol=atol, what="cumulants")


# ------------------------------------------------------------------ kl_divergence


class Shown(tuple):
    """A tuple of arrays whose repr (in hypothesis' failure report) shows the first two
    with full precision and a bounded length."""

    def __new__(cls, *items):
        return super().__new__(cls, items)

    def __repr__(self):
        with np.printoptions(precision=17, threshold=40, edgeitems=4):
            return "\n".join(repr(x) for x in self[:2])


@st.composite
def kl_inputs(draw):
    """(p as passed, q as passed, p values, q values) with q zero where p is not, nearby
    distributions (KL ~ 1e-24), equal ones and shifted copies; huge ties included."""
    prob = draw(problems(max_rows=3, spread_huge=False))
    lp = np.array(prob.logits, dtype=np.float64)
    rng = prob.rng
    kind = draw(st.sampled_from(["independent", "same_support", "nearby", "equal", "shifted"]))
    shape = _rows(lp).shape
    if kind == "independent":
        lq = logit_values(rng, shape, rng.choice(LOGIT_SCALES), rng.choice(LOGIT_OFFSETS),
                          spread_huge=False)
    elif kind == "same_support":
        lq = logit_values(rng, shape, rng.choice(LOGIT_SCALES), rng.choice(LOGIT_OFFSETS),
                          neg_inf=False, spread_huge=False)
        lq[np.isneginf(_rows(lp))] = -np.inf
    elif kind == "nearby":  # KL ~ eps^2: needs relative accuracy near 0
        lq = lp + rng.choice([1e-3, 1e-8, 1e-12]) * rng.normal(size=lp.shape)
    elif kind == "equal":
        lq = lp.copy()
    else:
        lq = lp + rng.choice([1.0, -1e5, 1e300])
    lq = lq.reshape(lp.shape)
    if lq.ndim == 2 and rng.random() < 0.5:
        lq = lq[:1]  # one q row broadcast against the batch of p
    q, q64 = laid_out(lq, draw(LAYOUTS), rng, spread_huge=False)
    return Shown(prob.logits, q, prob.raw, _rows(q64))


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS)
@quiet
def test_fuzz_kl_divergence(data, variant):
    p, q, p64, q64 = data.draw(kl_inputs(), label="p, q")
    with tiltlab.simd.use(variant):
        got = tiltlab.kl_divergence(p, q)
    assert np.shape(got) == np.broadcast_shapes(np.shape(p)[:-1], np.shape(q)[:-1])
    lp = shifted(p64)
    lq = np.broadcast_to(shifted(q64), lp.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        want = ref.kl_divergence(lp, lq)
    # q = 0 on an outcome p can produce gives +inf; the reference makes that 0 * inf = NaN
    # when p's probability there underflows (logit e.g. -745.2 below the maximum)
    want = np.where(np.any((lp > -np.inf) & (lq == -np.inf), axis=-1), np.inf, want)
    g = np.broadcast_to(_flat(got), want.shape)
    assert np.all(g >= 0), g
    assert np.array_equal(np.isinf(g), np.isinf(want)), (g, want)  # q = 0 where p > 0
    # the terms: |log p| + |log q| over outcomes where p or q carries mass
    with np.errstate(invalid="ignore"):
        rel = (lp > -800.0) | (lq > -800.0)
        fin = (lp > -np.inf) & (lq > -np.inf)
        mag = np.max(np.where(rel & fin, np.abs(lp) + np.abs(lq), 0.0), axis=-1)
    delta = offset_rounding(p64) + np.broadcast_to(offset_rounding(q64), want.shape)
    assert_close(g, want, rtol=1e-12, atol=1e-13 * (1.0 + mag) * np.maximum(want, 1.0)
                 + 2 * delta, what="kl_divergence")


# ------------------------------------------------------------------ best_of_n

def bon_log_tolerance(prob, log_n, delta):
    """Per outcome: the conditioning of ``log w_j = a_j + log1mexp(a_j - a_{j-1})``
    (SPEC section 3, ``a_j = N log F_j``), which both implementations evaluate.

    ``a_j = -exp(log N + log(-log F_j))`` carries eps |a_j| (1 + |log N + log(-log F_j)|)
    (and N delta from the logits' offset, see offset_rounding); the difference
    ``x_j = a_j - a_{j-1}`` carries the sum of both, and
    ``log1mexp`` divides that by ``expm1(x_j)``: a level whose mass is tiny next to the CDF
    below it (``x_j ~ N m_j / F_{j-1}``) loses about eps F_{j-1} / m_j relatively, also
    for N = 1 (e.g. a level of mass e^-43 above F = e^-20 is known to ~1e-5 in log space,
    its probability to 1e-24 absolutely)."""
    eps = np.finfo(float).eps
    out = np.zeros(prob.lg.shape)
    for i in range(prob.n_rows):
        values, log_mass = ref.reward_levels(prob.lg[i], prob.rw[i])
        log_f = np.logaddexp.accumulate(log_mass)
        log_f[-1] = 0.0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            y = log_n[i] + np.log(-log_f)
            a = -np.exp(y)  # exp(y) itself carries eps |y| relatively
            err_a = np.abs(a) * (1.0 + np.abs(np.where(np.isfinite(y), y, 0.0)))
            a_prev = np.append(-np.inf, a[:-1])
            x = a - a_prev
            spread = err_a + np.append(0.0, err_a[:-1])
            shift = np.exp(log_n[i]) * delta[i] if delta[i] > 0 else 0.0
            tol = (16 * eps * (1.0 + err_a + spread / np.expm1(x))
                   + 8 * shift * (1.0 + 1.0 / np.expm1(x)))
        tol = np.where(np.isnan(tol), np.inf, tol)
        level = np.clip(np.searchsorted(values, prob.rw[i] + 0.0), 0, values.size - 1)
        out[i] = tol[level] + 1e-12 * (1.0 + np.abs(prob.lg[i]))
    return out


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS)
@quiet
def test_fuzz_best_of_n(data, variant):
    prob = data.draw(problems(), label="problem")
    skip_known_bug(prob)
    log_n = data.draw(params(LOG_N_SPACE, prob), label="log_n")
    use_n = data.draw(st.booleans(), label="pass n") and np.all(np.asarray(log_n) < 700)
    with tiltlab.simd.use(variant):
        if use_n:
            n = np.exp(log_n) if isinstance(log_n, np.ndarray) else float(np.exp(log_n))
            got = tiltlab.best_of_n(prob.logits, prob.rewards, n=n)
        else:
            got = tiltlab.best_of_n(prob.logits, prob.rewards, log_n=log_n)
        log_probs = got.log_probs
    shape = _result_shape(prob, log_n)
    assert np.shape(got.kl) == shape and log_probs.shape == shape + (prob.lg.shape[-1],)
    want = ref.best_of_n(prob.lg, prob.rw, _per_row(got.log_n, prob.n_rows))
    delta = offset_rounding(prob.raw)
    rscale = _reward_scale(prob)
    assert_close(want["total_mass"], np.ones(prob.n_rows), rtol=0.0, atol=1e-13,
                 what="reference total mass")
    assert_close(_flat(got.kl), want["kl"], atol=1e-13 + delta, what="kl")
    assert_close(_flat(got.expected_reward), want["expected_reward"],
                 atol=(1e-13 + delta) * rscale, what="expected_reward")
    assert_close(_flat(got.win_rate), want["win_rate"], atol=1e-13 + delta, what="win_rate")
    g, w = _rows(log_probs), want["log_probs"]
    assert_close(np.exp(g), np.exp(w), rtol=1e-12, atol=1e-13 + delta[:, None], what="pi_N")
    assert np.all(np.isneginf(g)[np.isneginf(prob.lg)]), "pi_N lives on the support of p"
    # log pi_N where both resolve it: the reference gives -inf for level weights it cannot
    # resolve, so only those may differ in finiteness (their probabilities agree above)
    both = np.isfinite(g) & np.isfinite(w)
    atol = bon_log_tolerance(prob, _per_row(got.log_n, prob.n_rows), delta)
    assert_close(g[both], w[both], rtol=0.0, atol=atol[both], what="log pi_N")
    assert np.all(np.abs(tiltlab.logsumexp(g)) <= 1e-12 + 2 * delta), "pi_N is normalised"


# ------------------------------------------------------------------ solve_lambda

#: The reference's Newton iteration starts at lam = 1 and falls back to bisection from
#: wherever a wild Newton step landed (lam ~ 1e300 when the variance at lam = 1 is e^-700):
#: on these inputs a quarter of its solves need more than 100 iterations, 5 % more than
#: 1000.  Capped at 40 (about 30 % of the solves then stop early; uncapped, the reference
#: would take 12 times longer than the rest of the test): where its lam does not solve
#: kl(lam) = budget, the compiled lam is checked against the reference's kl(lam) only.
REF_MAX_ITER = 40
#: Even so it costs 3 times the rest of the test: every example checks the compiled lam
#: against the reference's kl(lam) = budget (the defining equation), one in three also
#: against reference.solve_lambda
REF_SOLVE_SHARE = 1 / 3


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS)
@quiet
def test_fuzz_solve_lambda(data, variant):
    prob = data.draw(problems(), label="problem")
    skip_known_bug(prob)
    top = np.maximum(_flat(ref.kl_max(prob.lg, prob.rw)), 0.0)  # -2e-16 happens
    joint = data.draw(st.booleans(), label="joint")
    frac = data.draw(params(BUDGET_SPACE, prob, scalar=joint), label="fraction")
    with np.errstate(invalid="ignore"):
        if joint:
            f = float(np.asarray(frac).reshape(-1)[0])
            budget = np.inf if f == np.inf else f * float(np.sum(top))
        else:
            fr = np.asarray(frac, dtype=np.float64)
            budget = np.where(fr == np.inf, np.inf, fr * top.reshape(prob.batch))
            budget = float(budget) if np.ndim(budget) == 0 else budget
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tiltlab.simd.use(variant):
            got = tiltlab.solve_lambda(prob.logits, prob.rewards, budget, joint=joint)
    messages = [str(w.message) for w in caught]
    if messages:  # the known non-convergence, never silent (KNOWN_SOLVE_ITERATION_LIMIT_BUG)
        assert KNOWN_SOLVE_ITERATION_LIMIT_BUG, messages
        assert all("stopped at the iteration limit" in m for m in messages), messages
        assume(not joint)  # (rows that did converge are checked below)
    if joint:
        assert isinstance(got, float)
        b, top_b = np.array([budget]), np.array([np.sum(top)])
    else:
        assert np.shape(got) == _result_shape(prob, budget)
        b, top_b = _per_row(budget, prob.n_rows), top
    want = np.full(b.shape, np.nan)  # (no comparison of lam)
    if prob.rng.random() < REF_SOLVE_SHARE:
        with np.errstate(all="ignore"):  # the reference's wild Newton steps overflow
            want = _flat(ref.solve_lambda(prob.lg, prob.rw, budget if joint else b,
                                          joint=joint, max_iter=REF_MAX_ITER))
    g = _flat(got)
    assert np.all(g >= 0), g

    # kl(lam) = budget (reference statistics at the compiled lam).  kl increases with lam
    # and lam is a double, so the budget must lie between kl at the doubles around lam,
    # lam (1 -+ 8 eps) (where kl is steep, kl(lam) itself can miss the budget by far more
    # than 1e-12: a float32 logit 3.4e38 at reward -6.7e-4 against one at 1.3e-3 puts the
    # whole rise of kl at lam ~ 1.8e41 within one ulp), to 1e-12 relative, plus: kl
    # saturated within rounding of kl_max (test_solve's convention), the accuracy of the
    # reference's kl = sum phi log(phi / p), eps times the largest |log(phi / p)| on the
    # support of phi, and the offset rounding delta of the logits (offset_rounding) times
    # the same, and a floor 1e-300 (a subnormal budget is a double only to ~1e-308)
    eps = np.finfo(float).eps
    delta = offset_rounding(prob.raw)
    support = prob.lg > -np.inf
    span = (np.max(np.where(support, prob.rw, -np.inf), axis=-1)
            - np.min(np.where(support, prob.rw, np.inf), axis=-1))
    log_p = prob.lg - ref.logsumexp(prob.lg)[:, None]

    @functools.cache
    def kappa():
        """Cumulants of r / span under p (no overflow for r ~ 1e100)."""
        unit = np.where(span > 0, span, 1.0)
        return ref.cumulants(prob.lg, prob.rw / unit[:, None], 4, np.zeros(prob.n_rows))

    def kl_at(lam):
        """(kl, variance, absolute error of kl) at lam, summed over the rows if joint.

        For lam * span <= 1e-6 kl is the series kappa_2 lam^2 / 2 + kappa_3 lam^3 / 3 +
        kappa_4 lam^4 / 8 (cumulants of r under p; relative error (lam span)^3): the
        reference's kl has an absolute error of eps lam span there, and budgets down to
        1e-308 must be checkable."""
        lam_rows = np.full(prob.n_rows, lam[0]) if joint else lam
        with np.errstate(all="ignore"):
            _, _, var, kl = (_flat(x) for x in ref.tilt_stats(prob.lg, prob.rw, lam_rows))
            log_phi = ref.tilt(prob.lg, prob.rw, lam_rows)
            mag = np.max(np.where(log_phi > -800.0, np.abs(log_phi - log_p), 0.0), axis=-1)
            err = (4 * eps + delta) * (1.0 + mag)
            t = lam_rows * span
            small = t <= 1e-6
            if small.any():
                k = kappa()
                series = t**2 * (k[:, 1] / 2 + t * (k[:, 2] / 3 + t * k[:, 3] / 8))
                series = np.where(t > 0, series, 0.0)  # one reward level: kl = 0 always
                kl = np.where(small, series, kl)
                err = np.where(small, delta * (1.0 + mag), err)
        if joint:
            return np.array([np.sum(kl)]), np.array([np.sum(var)]), np.array([np.sum(err)])
        return kl, var, err

    # Rows with two huge logits (|l| > HUGE, e.g. float32 3.4028202e38 and 3.4028170e38):
    # a tilt lam ~ (l_i - l_j) / (r_j - r_i) makes them compete, and the kernel, working
    # with the raw logits, places that crossing only to eps |l| / (lam |r_j - r_i|)
    # relatively (the offset rounding of offset_rounding, beyond HUGE): widen the bracket
    # of lam to that, with the smallest reward gap of the support
    with np.errstate(invalid="ignore", over="ignore"):
        big = support & (np.abs(prob.raw) > HUGE)
        two_huge = np.sum(big, axis=-1) >= 2
        raw_mag = np.max(np.where(big, np.abs(prob.raw), 0.0), axis=-1)
        gap = np.full(prob.n_rows, np.inf)
        for i in np.flatnonzero(two_huge):
            levels = np.unique(prob.rw[i][support[i]])
            gap[i] = np.min(np.diff(levels)) if levels.size > 1 else np.inf
    if joint:
        two_huge, raw_mag, gap = two_huge.any(), np.max(raw_mag), np.min(gap)

    def hits_budget(lam):
        """Per result: (is lam a root of kl(lam) = b to double precision?, is that check
        informative, i.e. its tolerance below 1e-6 b?, the variance and the absolute error
        of kl there)."""
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            kappa_lam = np.where(two_huge, np.minimum(0.5, 4 * eps * raw_mag / (lam * gap)),
                                 0.0)
            width = np.maximum(8 * eps, np.nan_to_num(kappa_lam, nan=0.5))
            lo, v_lo, e_lo = kl_at(lam * (1 - width))
            hi, v_hi, e_hi = kl_at(lam * (1 + width))
            err = np.maximum(e_lo, e_hi)
            tol = 1e-12 * b + 4e-16 * top_b * (lam > 30) + err + 1e-300
            root = (lo - tol <= b) & (b <= hi + tol)
            # lam = inf exactly for budgets >= kl_max (SPEC section 2); a budget equal to
            # kl_max may give inf or the lam where kl reaches kl_max to rounding: kl_max is
            # known to a few ulps (absolute ones near 0: -log p(argmax) with p(argmax) ~ 1,
            # e.g. 4.4e-16 instead of 0 for constant rewards)
            edge = np.abs(b - top_b) <= 1e-14 * top_b + 4 * eps
            root = np.where(np.isinf(lam), (b >= top_b) | edge, root & ((b < top_b) | edge))
            return root, tol <= 1e-6 * b, np.minimum(v_lo, v_hi), tol

    root, _, var, tol = hits_budget(g)
    # with the iteration-limit warning, the rows that missed the root are the known bug;
    # so are lams in the range of KNOWN_LAMBDA_OVERFLOW_BUG
    check = root if messages else np.ones(g.shape, dtype=bool)
    if KNOWN_LAMBDA_OVERFLOW_BUG:
        over = lambda_overflow(prob, np.full(prob.n_rows, g[0]) if joint else g)
        assume(not (joint and over.any()))
        check = check if joint else check & ~over
    assert np.all(root[check]), (kl_at(g), b, g, top_b)
    # lam itself, where the reference's lam demonstrably solves kl(lam) = b too (its
    # iteration can stop early, e.g. at 2^-50 for float32 rewards of +-3.4e38 whose root
    # is 2.7e-39, or at 2^-100 in a kl that rises from 0 to 4e-20 near lam = 7e-100, and
    # its Newton steps can run to inf below kl_max, e.g. logits (709.78, 0.04), rewards
    # (-1003, -999), budget kl_max / 2, where the root is 177.435):
    # both solve it to the tolerances tol: they may differ by the conditioning of kl(lam),
    # d lam = d kl / (lam var), with the smaller variance of the two brackets (kl can be
    # flat to 1e-12 over many decades of lam once it saturates at kl_max)
    if not np.isfinite(want).any():
        return
    ref_root, ref_informative, ref_var, ref_tol = hits_budget(want)
    fin = check & np.isfinite(g) & np.isfinite(want) & ref_root & ref_informative
    with np.errstate(all="ignore"):
        v = np.minimum(var, ref_var)
        cond = np.where(g * v > 0, (tol + ref_tol) / (g * v), np.inf)
    assert_close(g[fin], want[fin], rtol=1e-10, atol=cond[fin], what="lam")


# ------------------------------------------------------------------ soft_best_of_n


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS, n=st.integers(1, 8),
       temperature=st.one_of(st.floats(0.05, 20.0), st.sampled_from([0.05, 1.0, 20.0])))
@quiet
def test_fuzz_soft_best_of_n(data, variant, n, temperature):
    prob = data.draw(problems(one_row=True, long_rows=False, max_v=9), label="problem")
    skip_known_bug(prob)
    lg, rw = prob.lg[0], prob.rw[0]
    spread = float(np.ptp(rw[lg > -np.inf]))
    if spread / temperature > 1e5 and n > 1:  # (n = 1 is p itself, exactly)
        with tiltlab.simd.use(variant), pytest.raises(ValueError, match="too small"):
            tiltlab.soft_best_of_n(prob.logits, prob.rewards, n, temperature)
        return
    with tiltlab.simd.use(variant):
        got = tiltlab.soft_best_of_n(prob.logits, prob.rewards, n, temperature).log_probs
    if n == 1:  # one candidate is p itself; the reference's quadrature is for n > 1
        want = np.where(lg > -np.inf, lg - ref.logsumexp(lg), -np.inf)
    else:
        want = ref.soft_best_of_n(lg, rw, n, temperature)
    assert got.shape == want.shape
    assert np.array_equal(np.isneginf(got), np.isneginf(want)), (got, want)
    with np.errstate(invalid="ignore"):
        mag = 1.0 + np.where(np.isfinite(lg), np.abs(lg), 0.0)
    # test_policies' convention (rtol 1e-12, atol 1e-12); log p itself carries eps |l|
    delta = offset_rounding(prob.raw)[0]
    assert_close(got, want, rtol=1e-12, atol=1e-12 * mag + 4 * delta, what="soft log pi")


# ------------------------------------------------------------------ regression tests

#: the minimal known-bug input: two outcomes with equal huge logits, p = (1/2, 1/2)
HUGE_TIE = (np.array([1e300, 1e300]), np.array([0.0, 1.0]))
HUGE_TIE_REASON = ("known bug (KNOWN_HUGE_TIE_BUG): a huge tied maximum logit is not "
                   "shift-invariant in kl_max, the lam=+-inf and large-tilt paths and the "
                   "reward levels")


def _huge_tie_cases():
    lg, rw = HUGE_TIE
    log2 = np.log(2.0)
    lg3, rw3 = np.full(3, 1e300), np.array([0.0, 0.0, 1.0])
    w_top = 1.0 - (2.0 / 3.0) ** 4  # best-of-4 of p = (1/3, 1/3, 1/3), top level {2}
    return {
        "kl_max": (lambda: tiltlab.kl_max(lg, rw), log2),
        "tilt_stats_inf": (lambda: tiltlab.tilt_stats(lg, rw, np.inf).kl, log2),
        "tilt_stats_700": (lambda: tuple(tiltlab.tilt_stats(lg, rw, 700.0)[i] for i in (0, 1, 3)),
                           (700.0 - log2, 1.0, log2)),
        "tilt_inf": (lambda: tiltlab.tilt(np.full(3, 1e300), [0.0, 1.0, 1.0], np.inf),
                     [-np.inf, -log2, -log2]),
        "tilt_1": (lambda: tiltlab.tilt(lg, [0.0, 1000.0], 1.0), [-1000.0, 0.0]),
        "cumulants": (lambda: tiltlab.cumulants(lg3, [-1e5, 1e5, 0.0], 1, 1.0), [1e5]),
        "solve_lambda": (lambda: tiltlab.solve_lambda(lg, rw, 0.3),
                         float(ref.solve_lambda(lg - lg.max(), rw, 0.3))),
        "best_of_n": (lambda: tiltlab.best_of_n(lg3, rw3, n=4).log_probs,
                      np.log([(1 - w_top) / 2, (1 - w_top) / 2, w_top])),
        "soft_best_of_n": (lambda: tiltlab.soft_best_of_n(lg, rw, 2, 1.0).log_probs,
                           ref.soft_best_of_n(lg - lg.max(), rw, 2, 1.0)),
    }


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=HUGE_TIE_REASON)
@pytest.mark.parametrize("variant", tiltlab.simd.available())
@pytest.mark.parametrize("case", sorted(_huge_tie_cases()))
def test_known_bug_huge_tied_logits(case, variant):
    """Logits (1e300, 1e300) are p = (1/2, 1/2), exactly as (0, 0) (SPEC section 1)."""
    call, want = _huge_tie_cases()[case]
    with tiltlab.simd.use(variant):
        got = call()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="known bug (KNOWN_SUBNORMAL_SPREAD_BUG): cumulants gives NaN when "
                   "the reward spread is subnormal")
@pytest.mark.parametrize("variant", tiltlab.simd.available())
@pytest.mark.parametrize("rewards", [[5e-324, 0.0], [1e-300, 1.0000000001e-300]])
def test_known_bug_subnormal_reward_spread_cumulants(rewards, variant):
    want = ref.cumulants(np.zeros(2), np.array(rewards), 3, 0.0)
    with tiltlab.simd.use(variant):
        got = tiltlab.cumulants(np.zeros(2), rewards, 3, 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


KL_SHIFT_CASES = {  # (p, q, KL(p || q))
    "one_hot_p_1e20": ([1e20, 0.0], [0.0, 1.0], np.log1p(np.e)),
    "one_hot_p_1e300_q_outside": ([1e300, -np.inf], [0.0, np.log(3.0)], np.log(4.0)),
    "first_outcome_shift": ([-100.0, 0.0, 0.0], [-1e16, 1.0, 0.0], 0.12011450695827755),
    "tied_p_1e300": ([1e300, 1e300], [0.0, np.log(3.0)], 0.5 * np.log(4.0 / 3.0)),
    "tied_q_1e300": ([0.0, np.log(3.0)], [1e300, 1e300],
                     0.25 * np.log(0.5) + 0.75 * np.log(1.5)),
}


@pytest.mark.parametrize("variant", tiltlab.simd.available())
@pytest.mark.parametrize("case", sorted(KL_SHIFT_CASES))
def test_regression_kl_divergence_shift_invariant(case, variant):
    """Found by this suite (fixed): kl_divergence shifted d = log q - log p by its value at
    the first outcome where both logits were finite and combined the raw log normalisers,
    losing eps (|max log p| + |max log q| + |shift|): kl_divergence([1e20, 0], [0, 1]) was
    0.0, kl_divergence([1e300, -inf], [0, log 3]) log 2, kl_divergence([-100, 0, 0],
    [-1e16, 1, 0]) 0.0."""
    p, q, want = KL_SHIFT_CASES[case]
    p, q = np.array(p), np.array(q)
    with tiltlab.simd.use(variant):
        # the same distributions with shifted logits are fine
        assert tiltlab.kl_divergence(p - p.max(), q - q.max()) == pytest.approx(want, 1e-13)
        got = tiltlab.kl_divergence(p, q)
    assert got == pytest.approx(want, rel=1e-12)


TL_BLOCK = 256  # csrc/tl_config.h: the kernels' block of outcomes


@pytest.mark.parametrize("variant", tiltlab.simd.available())
def test_regression_kl_divergence_empty_first_block(variant):
    """Found by this suite (fixed): NaN when p had no support in the first block of
    TL_BLOCK outcomes and the standard mode ran (log q - log p spread over 600)."""
    pad = np.full(TL_BLOCK, -np.inf)
    p, q = np.array([0.0, 0.0]), np.array([-800.0, 0.0])
    want = ref.kl_divergence(p, q)  # 399.3068528194401 = 0.5 * 800 - log 2
    with tiltlab.simd.use(variant):
        assert tiltlab.kl_divergence(p, q) == pytest.approx(want, rel=1e-14)
        got = tiltlab.kl_divergence(np.concatenate([pad, p]), np.concatenate([pad, q]))
    assert got == pytest.approx(want, rel=1e-14)


@pytest.mark.xfail(strict=True, raises=(AssertionError, RuntimeWarning),
                   reason="known bug (KNOWN_SOLVE_ITERATION_LIMIT_BUG): solve_lambda stops at "
                   "its iteration limit far from the root")
@pytest.mark.parametrize("variant", tiltlab.simd.available())
@pytest.mark.parametrize("case", ["rare_best_outcome", "tiny_reward_spread"])
def test_known_bug_solve_lambda_iteration_limit(case, variant):
    if case == "rare_best_outcome":
        logits, rewards, budget = np.array([-300.0, 0.0]), np.array([1.0, 0.0]), 150.0
        with np.errstate(all="ignore"):  # (the reference needs ~300 iterations here)
            want = ref.solve_lambda(logits, rewards, budget, max_iter=1000)  # 300.00924
            assert ref.tilt_stats(logits, rewards, want)[3] == pytest.approx(budget, 1e-12)
    else:  # r -> r s, lam -> lam / s: the root for rewards (1e-200, 0) is 2.50227e200
        logits, scale = np.array([0.0, 1.0]), 1e-200
        budget = 0.5 * tiltlab.kl_max(logits, [1.0, 0.0])
        want = tiltlab.solve_lambda(logits, [1.0, 0.0], budget) / scale
        rewards = np.array([scale, 0.0])
    with tiltlab.simd.use(variant), warnings.catch_warnings():
        warnings.simplefilter("error")
        got = tiltlab.solve_lambda(logits, rewards, budget)
    assert got == pytest.approx(want, rel=1e-10)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="known bug (KNOWN_LAMBDA_OVERFLOW_BUG): tilt_stats / tilt wrong when "
                   "lam * r overflows")
@pytest.mark.parametrize("variant", tiltlab.simd.available())
@pytest.mark.parametrize("case", ["tilt_stats", "tilt_stats_max", "tilt", "tilt_nan",
                                  "solve_lambda"])
def test_known_bug_lambda_times_reward_overflow(case, variant):
    with tiltlab.simd.use(variant):
        if case == "tilt_stats":  # the lam -> inf limit: p on the top outcome
            got = tiltlab.tilt_stats([0.0, 0.0], [998.0, 1003.0], 1e306).kl
            want = np.log(2.0)
        elif case == "tilt_stats_max":
            got = tiltlab.tilt_stats([0.0, 0.0], [1.5, 2.0], DBL_MAX).kl
            want = np.log(2.0)
        elif case == "tilt":
            got = tiltlab.tilt([0.0, 0.0], [998.0, 1003.0], 1e306)[1]
            want = 0.0
        elif case == "tilt_nan":
            got = tiltlab.tilt([0.0, -np.inf], [0.0, 1e5], 1e306)[1]
            want = -np.inf
        else:  # the tilt is invariant under r -> r - c
            logits, rewards = np.array([709.78, 0.0]), np.array([99998.0, 100003.0])
            budget = 354.89
            want = tiltlab.solve_lambda(logits, rewards - 99998.0, budget)  # 141.95678
            got = tiltlab.solve_lambda(logits, rewards, budget)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-300)
