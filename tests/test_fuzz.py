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
distribution, given to the oracle in its well-conditioned form.  The kernels get the raw
logits and must be exact at any offset (SPEC section 1): no tolerance here grows with the
size of the logits themselves, only with the differences ``l - max l`` that carry mass.

The classes of inputs that were known bugs (huge tied logits, subnormal and huge reward
spreads, solve_lambda at its iteration limit, ``lam * r`` overflowing) are all in the
strategies; the fixed reproducers are ordinary regression tests in tests/test_exactness.py.
The exactness properties (shift invariance at offsets up to +-1e300, power-of-two scale
invariance, no NaN from any public function on valid input) are fuzzed in
tests/test_fuzz_properties.py on every variant as well.

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


class _Float64Results:
    """tiltlab's public functions without the float32 result cast (tiltlab._interop): the
    fuzz compares the float64 computation of float32 inputs with the reference; the cast
    itself (the float64 result rounded once) is tests/test_interop.py's."""

    def __getattr__(self, name):
        fn = getattr(tiltlab, name)
        return getattr(fn, "__wrapped__", fn)


F64 = _Float64Results()


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


def logit_values(rng, shape, scale, offset, *, neg_inf=True):
    """Adversarial float64 logits of shape (rows, V); every row has a finite logit.

    Gaussian of the given scale plus offset; sometimes (30 %) a few distinct values
    repeated (ties, huge ones included), sometimes (30 %) special values sprinkled in
    (denormals, +-1e300, +-700, +-1e5, the edges of exp); -inf patterns."""
    x = rng.normal(size=shape) * scale + offset
    if rng.random() < 0.3:
        x = rng.choice(x.ravel()[:rng.integers(1, 4)], size=shape)
    if rng.random() < 0.3:
        where = rng.random(shape) < rng.choice([0.1, 0.5, 1.0])
        x[where] = rng.choice(SPECIAL_LOGITS, size=int(where.sum()))
    if neg_inf:
        x[_neg_inf_mask(rng, shape)] = -np.inf
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


def _cast(x, dtype):
    """x in dtype; float32 clips finite values to its range (so +-1e300 stay finite, and
    tie at +-F32_MAX)."""
    if dtype == np.float32:
        x = np.where(np.isfinite(x), np.clip(x, -F32_MAX, F32_MAX), x)
    return x.astype(dtype)


def _unaligned(n, dtype):
    """A writable 1-D array of n elements whose data pointer is not 32-byte aligned."""
    item = np.dtype(dtype).itemsize
    buf = np.zeros(n + 8, dtype=dtype)
    start = next(k for k in range(1, 8) if (buf.ctypes.data + k * item) % 32)
    return buf[start:start + n]


def laid_out(values, layout, rng):
    """(array passed to the compiled function, float64 values the reference sees): the
    values cast to the layout's dtype, in its memory layout (contiguous, a view whose data
    pointer is 8- but not 32-byte aligned, every 2nd or 3rd element of a larger buffer,
    negative strides, Fortran order, read-only)."""
    dtype, kind = layout
    x = _cast(values, dtype)
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

    def __repr__(self):
        with np.printoptions(precision=17, threshold=40, edgeitems=4):
            return (f"Problem({self.layout}, batch={self.batch},\n"
                    f"  logits={self.logits!r},\n  rewards={self.rewards!r})")


@st.composite
def problems(draw, *, max_rows=3, long_rows=True, neg_inf=True, one_row=False, max_v=70,
             reward_kinds=REWARD_KINDS):
    """Adversarial (logits, rewards) for the tilting / best-of-N kernels, as a Problem."""
    n_rows = 1 if one_row else draw(st.integers(1, max_rows))
    v = draw(lengths(long_rows, max_v))
    scale, offset = draw(st.sampled_from(LOGIT_SHAPES))
    kind = draw(st.sampled_from(reward_kinds))
    layouts = draw(LAYOUTS), draw(LAYOUTS)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (n_rows, v)
    lg = logit_values(rng, shape, scale, offset, neg_inf=neg_inf)
    rw = reward_values(rng, shape, kind)
    one_d = n_rows == 1 and (one_row or rng.random() < 0.5)
    if one_d:
        lg, rw = lg[0], rw[0]
    elif n_rows > 1 and rng.random() < 0.3:
        rw = rw[0]  # one row of rewards broadcast against the batch
    logits, lg64 = laid_out(lg, layouts[0], rng)
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


# ------------------------------------------------------------------ reference limits


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
    "tilt_stats": lambda lg, rw: F64.tilt_stats(lg, rw, 0.7),
    "tilt": lambda lg, rw: F64.tilt(lg, rw, -1.3),
    "cumulants": lambda lg, rw: F64.cumulants(lg, rw, 3, 0.4),
    "best_of_n": lambda lg, rw: F64.best_of_n(lg, rw, log_n=2.0).log_probs,
    "solve_lambda": lambda lg, rw: F64.solve_lambda(lg, rw, 0.05),
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
    prob = draw(problems(max_rows=3))
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
    arr, x64 = laid_out(x, draw(LAYOUTS), rng)
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
        # float32 input: exponentials in float32 lanes, each within about a float32 ulp of
        # e^(x - max) with x - max rounded to float32: an error of 2^-24 |x - max| in the
        # exponent (SPEC section 1); sums in float64
        spread = np.max(np.where(rel, m - x64, 0.0), axis=axis)
    if arr.dtype == np.float32:
        assert_close(got, want, rtol=2.0**-22, atol=2.0**-21 * (1.0 + spread),
                     what="logsumexp float32")
    else:
        assert_close(got, want, rtol=1e-14, atol=1e-15 * (1.0 + mag), what="logsumexp")


# ------------------------------------------------------------------ tilt_stats


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS)
@quiet
def test_fuzz_tilt_stats(data, variant):
    prob = data.draw(problems(), label="problem")
    lam = data.draw(params(LAM_SPACE, prob), label="lam")
    before = (prob.logits.copy(), prob.rewards.copy())
    with tiltlab.simd.use(variant):
        got = F64.tilt_stats(prob.logits, prob.rewards, lam)
    _unchanged(before[0], prob.logits)
    _unchanged(before[1], prob.rewards)
    for g in got:
        assert np.shape(g) == _result_shape(prob, lam)
    lam_r = _per_row(lam, prob.n_rows)
    lam_ref, limit = reference_tilts(prob, lam_r)
    want = ref.tilt_stats(prob.lg, prob.rw, lam_ref)
    scale = relevant_scale(prob.lg, prob.rw, lam_ref)
    rscale = _reward_scale(prob)
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
    assert_close(lp, w_lp, atol=1e-12 * scale, what="log_partition")
    assert_close(mean, w_mean, atol=(1e-12 + 2 * share) * rscale, what="mean")
    assert_close(var, w_var, atol=(1e-11 + 4 * share) * rscale**2, what="variance")
    # KL near 0 needs an absolute floor: it is lam * mean - Lambda to the conditioning of
    # the terms (1e-13 * scale); elsewhere 1e-12 relative (floor 1e-3, test_tilting's rule)
    assert_close(kl, w_kl, rtol=0.0, atol=1e-12 * np.maximum(w_kl, 1e-3) + 1e-13 * scale,
                 what="kl")
    assert np.all(kl >= 0) and np.all(var >= 0)


# ------------------------------------------------------------------ tilt


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS)
@quiet
def test_fuzz_tilt(data, variant):
    prob = data.draw(problems(), label="problem")
    lam = data.draw(params(LAM_SPACE, prob), label="lam")
    with tiltlab.simd.use(variant):
        got = F64.tilt(prob.logits, prob.rewards, lam)
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
    assert_close(g, want, rtol=0.0, atol=1e-12 * (row[:, None] + own), what="log phi")
    with tiltlab.simd.use(variant):
        norm = tiltlab.logsumexp(g, axis=-1)
    assert np.all(np.abs(norm) <= 1e-13 * row), norm


# ------------------------------------------------------------------ cumulants


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS, order=st.integers(1, 6))
@quiet
def test_fuzz_cumulants(data, variant, order):
    # well-scaled magnitudes (|r|^order in range; beyond, kappa_k overflows and the
    # reference's recursion gives inf - inf = NaN); any spread, subnormal ones included
    kinds = tuple(k for k in REWARD_KINDS if k != "huge")
    prob = data.draw(problems(reward_kinds=kinds), label="problem")
    assume(np.all(np.log10(_reward_scale(prob)) * order < 300))
    lam = data.draw(params(CUMULANT_LAM_SPACE, prob), label="lam")
    with tiltlab.simd.use(variant):
        got = F64.cumulants(prob.logits, prob.rewards, order, lam)
    assert got.shape == _result_shape(prob, lam) + (order,)
    lam_r = _per_row(lam, prob.n_rows)
    # the reference in units of each row's reward spread (exact: r - c scaled by 2^-e, lam
    # by 2^e, kappa_k by 2^(k e)), which it has no way to take itself: its moments of a
    # subnormal spread underflow
    support = prob.lg > -np.inf
    c = np.array([row[s][0] for row, s in zip(prob.rw, support, strict=True)])
    span = (np.max(np.where(support, prob.rw, -np.inf), axis=-1)
            - np.min(np.where(support, prob.rw, np.inf), axis=-1))
    ex = np.where(span > 0, np.frexp(np.where(span > 0, span, 1.0))[1] - 1, 0)
    rw_s = np.where(support, np.ldexp(prob.rw - c[:, None], -ex[:, None]), 0.0)
    lam_s = np.where(np.isfinite(lam_r), np.ldexp(lam_r, ex), lam_r)
    want_s = ref.cumulants(prob.lg, rw_s, order, lam_s)
    k = np.arange(1, order + 1)
    want = np.ldexp(want_s, k * ex[:, None])
    want[:, 0] = c + np.ldexp(want_s[:, 0], ex)
    g = got.reshape(-1, order)
    # test_tilting's convention, in the scaled units: 1e-9 of max(|kappa_k|, sd^k), and the
    # mean (the centre of the moments) known to e = 1e-13 of |r - c| only: a centre off by e
    # moves the k-th central moment by about (sd + e)^k - sd^k; the mean itself also carries
    # eps |c|; a few subnormal ulps where the result is below the normal range
    e = 1e-13 * np.max(np.where(support, np.abs(rw_s), 0.0), axis=-1)
    sd = np.sqrt(_flat(ref.tilt_stats(prob.lg, rw_s, lam_s)[2]))[:, None]
    floor = np.where(k == 1, e[:, None], 2.0**k * ((sd + e[:, None]) ** k - sd**k))
    atol_s = 1e-9 * np.maximum(np.abs(want_s), np.where(k == 1, 0.0, sd**k)) + floor + 1e-300
    atol = np.ldexp(atol_s, k * ex[:, None]) + 2e-323
    atol[:, 0] += 1e-13 * np.abs(c)
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
    prob = draw(problems(max_rows=3))
    lp = np.array(prob.logits, dtype=np.float64)
    rng = prob.rng
    kind = draw(st.sampled_from(["independent", "same_support", "nearby", "equal", "shifted"]))
    shape = _rows(lp).shape
    if kind == "independent":
        lq = logit_values(rng, shape, rng.choice(LOGIT_SCALES), rng.choice(LOGIT_OFFSETS))
    elif kind == "same_support":
        lq = logit_values(rng, shape, rng.choice(LOGIT_SCALES), rng.choice(LOGIT_OFFSETS),
                          neg_inf=False)
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
    q, q64 = laid_out(lq, draw(LAYOUTS), rng)
    return Shown(prob.logits, q, prob.raw, _rows(q64))


@fuzz
@FUZZ
@given(data=st.data(), variant=VARIANTS)
@quiet
def test_fuzz_kl_divergence(data, variant):
    p, q, p64, q64 = data.draw(kl_inputs(), label="p, q")
    with tiltlab.simd.use(variant):
        got = F64.kl_divergence(p, q)
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
    assert_close(g, want, rtol=1e-12, atol=1e-13 * (1.0 + mag) * np.maximum(want, 1.0),
                 what="kl_divergence")


# ------------------------------------------------------------------ best_of_n

def bon_log_tolerance(prob, log_n):
    """Per outcome: the conditioning of ``log w_j = a_j + log1mexp(d_j)`` (SPEC section 3,
    ``a_j = N log F_j``, ``d_j = a_j - a_{j-1} = -N log1p(-m_j / F_j)``), which both
    implementations evaluate without cancellation.

    ``a_j = -exp(log N + log(-log F_j))`` carries eps |a_j| (1 + |log N + log(-log F_j)|);
    ``log d_j = log N + log(-log1p(-m_j / F_j))`` carries eps times its own size, which
    ``log1mexp`` passes on at most unchanged; and log p of the outcome itself (the
    level's share of it) eps |l - max l|."""
    eps = np.finfo(float).eps
    out = np.zeros(prob.lg.shape)
    for i in range(prob.n_rows):
        values, log_mass = ref.reward_levels(prob.lg[i], prob.rw[i])
        log_f = np.logaddexp.accumulate(log_mass)
        log_f[-1] = 0.0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            a = ref._bon_level_law(log_mass, log_n[i])[2]  # F near 1 from the survival
            y = np.log(-a)  # a = -exp(y), and exp(y) carries eps |y| relatively
            err_a = np.abs(a) * (1.0 + np.abs(np.where(np.isfinite(y), y, 0.0)))
            log_d = np.abs(log_n[i]) + np.abs(log_mass - log_f)
            tol = 16 * eps * (1.0 + err_a + np.where(np.isfinite(log_d), log_d, 0.0))
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
    log_n = data.draw(params(LOG_N_SPACE, prob), label="log_n")
    use_n = data.draw(st.booleans(), label="pass n") and np.all(np.asarray(log_n) < 700)
    with tiltlab.simd.use(variant):
        if use_n:
            n = np.exp(log_n) if isinstance(log_n, np.ndarray) else float(np.exp(log_n))
            got = F64.best_of_n(prob.logits, prob.rewards, n=n)
        else:
            got = F64.best_of_n(prob.logits, prob.rewards, log_n=log_n)
        log_probs = got.log_probs
    shape = _result_shape(prob, log_n)
    assert np.shape(got.kl) == shape and log_probs.shape == shape + (prob.lg.shape[-1],)
    want = ref.best_of_n(prob.lg, prob.rw, _per_row(got.log_n, prob.n_rows))
    rscale = _reward_scale(prob)
    assert_close(want["total_mass"], np.ones(prob.n_rows), rtol=0.0, atol=1e-13,
                 what="reference total mass")
    assert_close(_flat(got.kl), want["kl"], atol=1e-13, what="kl")
    assert_close(_flat(got.expected_reward), want["expected_reward"], atol=1e-13 * rscale,
                 what="expected_reward")
    assert_close(_flat(got.win_rate), want["win_rate"], atol=1e-13, what="win_rate")
    g, w = _rows(log_probs), want["log_probs"]
    assert_close(np.exp(g), np.exp(w), rtol=1e-12, atol=1e-13, what="pi_N")
    assert np.all(np.isneginf(g)[np.isneginf(prob.lg)]), "pi_N lives on the support of p"
    # log pi_N where both resolve it (a weight below the double range may be -inf on one
    # side and e.g. -1e308 on the other; the probabilities agree above)
    both = np.isfinite(g) & np.isfinite(w)
    atol = bon_log_tolerance(prob, _per_row(got.log_n, prob.n_rows))
    assert_close(g[both], w[both], rtol=0.0, atol=atol[both], what="log pi_N")
    assert np.all(np.abs(tiltlab.logsumexp(g, axis=-1)) <= 1e-12), "pi_N is normalised"


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
    error = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no iteration limit, no silent approximation
        with tiltlab.simd.use(variant):
            try:
                got = F64.solve_lambda(prob.logits, prob.rewards, budget, joint=joint)
            except ValueError as exc:
                error = str(exc)
    if joint:
        b, top_b = np.array([budget]), np.array([np.sum(top)])
    else:
        b, top_b = _per_row(budget, prob.n_rows), top
    if error is not None:
        # refused only where the root has no float64 value: kl(DBL_MAX) is still below
        # the budget (the root is above DBL_MAX), or kl at the smallest normal double is
        # already above it
        assert "has no float64 value" in error, error
        above = " is above " in error
        edge = np.full(b.shape, DBL_MAX if above else np.finfo(float).tiny)
        lam_rows = np.full(prob.n_rows, edge[0]) if joint else edge
        with np.errstate(all="ignore"):
            kl_edge = _flat(ref.tilt_stats(prob.lg, prob.rw, lam_rows)[3])
        kl_edge = np.array([np.sum(kl_edge)]) if joint else kl_edge
        assert np.any(kl_edge < b if above else kl_edge > b), (error, kl_edge, b)
        return
    if joint:
        assert isinstance(got, float)
    else:
        assert np.shape(got) == _result_shape(prob, budget)
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
    # support of phi, and a floor 1e-300 (a subnormal budget is a double only to ~1e-308)
    eps = np.finfo(float).eps
    support = prob.lg > -np.inf
    span = (np.max(np.where(support, prob.rw, -np.inf), axis=-1)
            - np.min(np.where(support, prob.rw, np.inf), axis=-1))
    log_p = prob.lg - ref.logsumexp(prob.lg)[:, None]

    @functools.cache
    def kappa():
        """Cumulants of (r - c) / span under p, c a reward of the support (no overflow for
        r ~ 1e100, and no loss of the variance next to a large mean: rewards 1e5 +- 2
        give kappa_2 of r / span to only ~1e-6)."""
        unit = np.where(span > 0, span, 1.0)
        c = np.array([row[s][0] for row, s in zip(prob.rw, support, strict=True)])
        return ref.cumulants(prob.lg, (prob.rw - c[:, None]) / unit[:, None], 4,
                             np.zeros(prob.n_rows))

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
            err = 4 * eps * (1.0 + mag)
            t = lam_rows * span
            small = t <= 1e-6
            if small.any():
                k = kappa()
                series = t**2 * (k[:, 1] / 2 + t * (k[:, 2] / 3 + t * k[:, 3] / 8))
                series = np.where(t > 0, series, 0.0)  # one reward level: kl = 0 always
                kl = np.where(small, series, kl)
                err = np.where(small, 0.0, err)
        if joint:
            return np.array([np.sum(kl)]), np.array([np.sum(var)]), np.array([np.sum(err)])
        return kl, var, err

    def hits_budget(lam):
        """Per result: (is lam a root of kl(lam) = b to double precision?, is that check
        informative, i.e. its tolerance below 1e-6 b?, the variance and the absolute error
        of kl there)."""
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            width = 8 * eps
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
    check = np.ones(g.shape, dtype=bool)
    assert np.all(root), (kl_at(g), b, g, top_b)
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
    lg, rw = prob.lg[0], prob.rw[0]
    spread = float(np.ptp(rw[lg > -np.inf]))
    if spread / temperature > 1e5 and n > 1:  # (n = 1 is p itself, exactly)
        with tiltlab.simd.use(variant), pytest.raises(ValueError, match="too small"):
            F64.soft_best_of_n(prob.logits, prob.rewards, n, temperature)
        return
    with tiltlab.simd.use(variant):
        got = F64.soft_best_of_n(prob.logits, prob.rewards, n, temperature).log_probs
    if n == 1:  # one candidate is p itself; the reference's quadrature is for n > 1
        want = np.where(lg > -np.inf, lg - ref.logsumexp(lg), -np.inf)
    else:
        want = ref.soft_best_of_n(lg, rw, n, temperature)
    assert got.shape == want.shape
    assert np.array_equal(np.isneginf(got), np.isneginf(want)), (got, want)
    with np.errstate(invalid="ignore"):
        mag = 1.0 + np.where(np.isfinite(lg), np.abs(lg), 0.0)
    # test_policies' convention (rtol 1e-12, atol 1e-12); log p itself carries eps |l|, and
    # the compiled quadrature's log-weights (up to spread / temperature = 1e5) the rounding
    # its docstring states, about 1e-16 spread / temperature (the reference, an independent
    # trapezoid rule kept in local frames, is exact to rounding there: a factor 4 margin)
    assert_close(got, want, rtol=1e-12,
                 atol=1e-12 * mag + 4e-16 * max(1.0, spread / temperature), what="soft log pi")


# ------------------------------------------------------------------ regression tests

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
        assert F64.kl_divergence(p - p.max(), q - q.max()) == pytest.approx(want, 1e-13)
        got = F64.kl_divergence(p, q)
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
        assert F64.kl_divergence(p, q) == pytest.approx(want, rel=1e-14)
        got = F64.kl_divergence(np.concatenate([pad, p]), np.concatenate([pad, q]))
    assert got == pytest.approx(want, rel=1e-14)
