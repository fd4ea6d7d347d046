"""The lattice-law machinery that the sequence models share (SPEC section 4), private.

The law of a lattice sum under one tilt is a :class:`SegmentLaw` (values relative to their
peak, a log scale, tilted moments); segment laws are convolved (direct or FFT, trimmed to
where they are resolved); :class:`LatticeModel` untilts a model's root law on its window,
stitches several tilts over a range, and runs exact best-of-N on the result.  A sequence
model subclasses :class:`LatticeModel` and provides the law of its sum under one tilt.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tiltlab import _lattice
from tiltlab.sequences.lattice import LatticeLaw, SequenceBestOfN

# Values of an FFT-computed window below this fraction of its peak are rounding noise
# and are dropped; values below _RESOLVED are kept for the arithmetic but not trusted
# (SPEC section 4).  Direct convolutions of positive numbers are exact to rounding, so
# their values are trusted down to underflow.
_TRIM = 1e-14
_RESOLVED = 1e-11
# ... and a full-range law reports only points within 1e-6 of the peak of some tilt
# (rounding error relative to the value < ~1e-10), unless computed exactly.
_RESOLVED_LAW = 1e-6
# Exact (direct) windows are trusted down to 1e-280 of the peak: below that, terms lost
# to underflow and subnormal rounding could matter
_LOG_EXACT_FLOOR = math.log(1e-280)
# Full-range laws stitch tilts so that every point is within e^-_CENTRAL of the peak of
# the tilt it is taken from (rounding error relative to the value then stays < 1e-12).
_CENTRAL = 8.0
# Best-of-N levels with log weight above this are the ones that matter (e^-50 ~ 2e-22).
_LIVE = -50.0
# Direct convolution when it is cheap; FFT otherwise.
DIRECT_MIN = 64
_DIRECT_WORK = 1 << 15
MAX_LATTICE = 1 << 31  # lattice points of the law of R
_MAX_FULL_LAW = 1 << 27  # reward_log_pmf allocates a few arrays of this many points


def fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (FFT-friendly size)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


@dataclass
class SegmentLaw:
    """Law of a segment sum (lattice units) under one tilt, on a window of sums.

    ``P_theta(sum = lo + j) = vals[j] * exp(log_scale)``; ``vals`` peaks at 1.  ``exact``:
    every value is accurate to rounding relative to itself (only direct convolutions of
    positive numbers were used).  ``mean``/``var``: tilted moments of the sum.  ``zfac``:
    ``vals * zfac`` is the convolution of the children in their own units.  With an
    integer ``centre`` the window is instead untilted without the moments:
    ``log P(sum = lo + j) = log vals[j] + log_scale - theta (lo + j - centre)``.
    """

    lo: int
    vals: np.ndarray
    log_scale: float
    exact: bool
    mean: float
    var: float
    zfac: float = 1.0
    centre: int | None = None


def fft_convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Linear convolution of two real arrays by FFT (absolute error ~1e-16 of the peak)."""
    m = a.size + b.size - 1
    size = fast_len(m)
    return np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:m]


def convolve(a: SegmentLaw, b: SegmentLaw, exact: bool = False) -> SegmentLaw:
    na, nb = a.vals.size, b.vals.size
    direct = exact or min(na, nb) <= DIRECT_MIN or na * nb <= _DIRECT_WORK
    c = np.convolve(a.vals, b.vals) if direct else fft_convolve(a.vals, b.vals)
    exact = direct and a.exact and b.exact
    peak = float(c.max())
    c /= peak
    if exact:
        c[c < 0.0] = 0.0
    else:
        c[c < _TRIM] = 0.0
    nz = np.flatnonzero(c)
    c = c[nz[0]:nz[-1] + 1]
    return SegmentLaw(lo=a.lo + b.lo + int(nz[0]), vals=c, log_scale=a.log_scale + b.log_scale +
                math.log(peak), exact=exact, mean=a.mean + b.mean, var=a.var + b.var,
                zfac=peak)



class _Window(NamedTuple):
    """A tilt's root window: log P(K = lo + j) = logp[j] = q[j] + untilt[j], with q the
    tilted value relative to the window's peak (its "quality")."""

    lo: int
    logp: np.ndarray
    q: np.ndarray
    exact: bool
    law: SegmentLaw
    untilt: np.ndarray


class _Levels(NamedTuple):
    """The best-of-N level law on a window's resolved points (lattice units); with
    ``virtual`` the first level stands for the mass below the window."""

    values: np.ndarray
    log_w: np.ndarray
    a: np.ndarray
    metrics: tuple
    virtual: bool
    idx: np.ndarray  # window positions of the real levels

    @property
    def real_log_w(self) -> np.ndarray:
        return self.log_w[1:] if self.virtual else self.log_w



def detect_step(d: np.ndarray, scale: float) -> float:
    """Approximate gcd of the non-negative differences d (tolerant Euclid), refined by
    least squares; 0.0 when the rewards are not on a lattice."""
    vals = np.unique(d[d > 0])
    if vals.size == 0:
        return 1.0
    tol = 1e-9 * scale
    g = 0.0
    for x in vals[::-1]:
        a, b = (g, float(x)) if g > x else (float(x), g)
        while b > tol:
            r = abs(a - b * round(a / b))
            a, b = b, r
        g = a
        if g <= 1e-6 * scale:
            return 0.0
    k = np.rint(vals / g)
    h = float(np.dot(vals, k) / np.dot(k, k))
    if np.max(np.abs(vals - k * h)) > 1e-8 * scale:
        return 0.0
    return h



class _Stitch:
    """Per lattice point in [klo, khi], the value from the tilt under which it is most
    central (SPEC section 4: several tilts cover a wide range)."""

    def __init__(self, model: LatticeModel, klo: int, khi: int, resolved: float = _RESOLVED):
        self.model, self.klo, self.khi = model, klo, khi
        self.log_res = math.log(resolved)
        n = khi - klo + 1
        self.q = np.full(n, -np.inf)
        self.ok = np.zeros(n, dtype=bool)
        self.logp = np.full(n, np.nan)
        self.last = None

    def take(self, theta: float) -> SegmentLaw:
        lo, logp, q, exact, law, _ = self.model._window(theta)
        a, b = max(lo, self.klo), min(lo + q.size, self.khi + 1)
        if a < b:
            src = slice(a - lo, b - lo)
            dst = slice(a - self.klo, b - self.klo)
            better = q[src] > self.q[dst]
            self.q[dst] = np.where(better, q[src], self.q[dst])
            self.logp[dst] = np.where(better, logp[src], self.logp[dst])
            ok = (q[src] >= self.log_res) | (exact & (q[src] >= _LOG_EXACT_FLOOR))
            self.ok[dst] = np.where(better, ok, self.ok[dst])
        self.last = (theta, law)
        return law

    def sweep(self, theta: float, directions=(1, -1)) -> None:
        """From the window at theta, add tilts outwards until both ends of the range are
        within e^-_CENTRAL of the peak of some tilt (or exactly resolved)."""
        model = self.model
        K = model.n_lattice
        theta0, law0 = self.last
        for direction in directions:
            law, theta = law0, theta0
            last_target = None
            edge = self.khi - self.klo if direction > 0 else 0
            for _ in range(100000):
                if self.q[edge] >= -_CENTRAL or (law.exact and self.ok[edge]):
                    break
                # exact (direct) windows are trusted down to underflow: step past all of
                # it; FFT windows only near their peak
                good = np.flatnonzero(self.ok if law.exact else self.q >= -0.5 * _CENTRAL)
                if good.size:
                    front = self.klo + (good.max() if direction > 0 else good.min())
                else:
                    front = law.mean
                sd = math.sqrt(max(law.var, 0.25))
                target = front + direction * (6.0 if law.exact else 2.5) * sd
                lim = K - 1.5 if direction > 0 else 0.5
                if direction * (target - lim) > 0:
                    target = lim
                if last_target is not None and direction * (target - last_target) <= 1e-9:
                    # at the end of the lattice: halve the remaining distance to the edge
                    target = last_target + 0.5 * (self.klo + edge - last_target)
                last_target = target
                theta = model._theta_for_mean(target, theta)
                law = self.take(theta)
        self._fill_gaps()
        self._centre_runs()

    def _centre_runs(self) -> None:
        """Tilts centred on runs of resolved points that no tilt brought within
        e^-_CENTRAL of its peak (steps of 2.5 standard deviations overshoot where the law
        narrows towards an end of the lattice), until every such run is central or a
        centred tilt no longer helps."""
        # points of a sparse sub-lattice (every second value far below its neighbours)
        # make runs with gaps of one: one tilt per run, not per point
        self._retilt_runs(lambda: self.ok & (self.q < -_CENTRAL),
                          lambda run: float(np.min(self.q[run])), rounds=8, gap=2)

    def _fill_gaps(self) -> None:
        """Tilts centred on runs of points that no window resolved yet (between two
        windows whose trusted ranges did not meet); runs that a centred tilt cannot
        resolve either (impossible values, or a sub-lattice far below its neighbours)
        are left alone."""
        self._retilt_runs(lambda: ~self.ok, lambda run: int(np.count_nonzero(self.ok)),
                          rounds=20)

    def _retilt_runs(self, select, score, rounds: int, gap: int = 1) -> None:
        """Take tilts centred on the runs of points ``select()`` flags (points at most
        ``gap`` apart in one run), round after round, while a centred tilt still improves
        ``score(run)``."""
        tried: set = set()
        for _ in range(rounds):
            flagged = np.flatnonzero(select())
            if flagged.size == 0:
                return
            runs = np.split(flagged, np.flatnonzero(np.diff(flagged) > gap) + 1)
            progress = False
            for run in runs:
                mid = self.klo + int(run[(run.size - 1) // 2])
                if mid in tried or not 0 < mid < self.model.n_lattice - 1:
                    continue
                tried.add(mid)
                before = score(run)
                self.take(self.model._theta_for_mean(float(mid), self.last[0]))
                progress |= score(run) > before
            if not progress:
                return


def newton_for_mean(moments, target: float, theta: float, rtol: float) -> float | None:
    """A tilt whose mean ``moments(theta)[0]`` is within rtol standard deviations of
    target: Newton (the derivative of the mean is the variance) inside the bracket of the
    tilts seen so far, bisection or doubling steps when Newton leaves it; None when
    ``moments`` gives a non-finite value."""
    lo, hi = -np.inf, np.inf
    for _ in range(200):
        mean, var = moments(theta)
        if not (math.isfinite(mean) and math.isfinite(var)):
            return None
        f = mean - target
        sd = math.sqrt(max(var, 0.0))
        if abs(f) <= rtol * max(sd, 1e-300) or (sd == 0.0 and abs(f) < 1e-9):
            return theta
        if f < 0:
            lo = theta
        else:
            hi = theta
        with np.errstate(over="ignore", divide="ignore"):
            nxt = theta - f / var if var > 0 else np.nan
        if not (lo < nxt < hi):
            if np.isfinite(lo) and np.isfinite(hi):
                nxt = 0.5 * (lo + hi)
            elif np.isfinite(lo):
                nxt = lo + max(1.0, abs(lo))
            else:
                nxt = hi - max(1.0, abs(hi))
        theta = nxt
    return theta


class LatticeModel:
    """The lattice-law machinery of a sequence model (SPEC section 4), shared by the
    sequence models: the law of the lattice sum ``K = (R - offset) / step`` under one tilt
    (untilted on its window), tilts stitched over a range, the full law of ``R``, and exact
    best-of-N over whole sequences.  Tilts ``theta`` are in lattice units.

    A subclass provides ``length``, ``offset``, ``step``, ``n_lattice``, ``values``,
    ``r_min``, ``r_max`` and

    * ``_kstats(theta)``: the tilted statistics of ``K`` (:class:`tiltlab.TiltStats`);
    * ``_solve_k(delta)``: the tilt whose per-token KL is ``delta``;
    * ``_root(theta)``: the law of ``K`` under the tilt (a :class:`SegmentLaw`);
    * ``_reachable()``: which lattice points have positive probability;
    * ``_conditional_sequences(theta, cdf, guide, level_sums, size, draws, rng, n_threads)``:
      sequences drawn conditionally on their sums (:meth:`SequenceBestOfN.sample`);

    its public methods (with their own docstrings and examples) call ``_full_law`` and
    ``_best_of_n`` here.
    """

    def _window(self, theta: float) -> _Window:
        """The law of K at tilt theta on the root window, untilted (SPEC section 4)."""
        law = self._root(theta)
        if law.centre is not None:   # integers: exact differences, one rounding of theta
            j = np.arange(law.lo - law.centre, law.lo - law.centre + law.vals.size)
            untilt = law.log_scale - theta * j.astype(np.float64)
        else:
            st = self._kstats(theta)
            j = np.arange(law.vals.size, dtype=np.float64)
            untilt = law.log_scale - theta * (law.lo + j - float(st.mean)) - float(st.kl)
        with np.errstate(divide="ignore"):
            q = np.log(law.vals)
        return _Window(law.lo, q + untilt, q, law.exact, law, untilt)

    def _theta_for_mean(self, target: float, theta: float = 0.0, rtol: float = 0.05) -> float:
        """A tilt (lattice units) whose tilted mean of the level sum K is within rtol
        standard deviations of target."""
        def moments(th):
            st = self._kstats(th)
            return float(st.mean), float(st.variance)

        found = newton_for_mean(moments, target, theta, rtol)
        return theta if found is None else found

    def _retilt(self, logp: np.ndarray, lam: float) -> np.ndarray:
        """log P_lam(R = s) = log P(R = s) + lam (s - E_lam R) + KL_lam (SPEC section 4)."""
        if np.isinf(lam):
            out = np.full_like(logp, -np.inf)
            out[-1 if lam > 0 else 0] = 0.0
            return out
        th = lam * self.step
        if np.isinf(th):
            return self._retilt(logp, th)
        st = self._kstats(th)
        k = np.arange(self.n_lattice, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return logp + th * (k - float(st.mean)) + float(st.kl)

    def _full_law(self, lam: float) -> LatticeLaw:
        """The law of ``R`` on its whole lattice, tilts stitched (``reward_log_pmf``)."""
        lam_f = lam
        K = self.n_lattice
        if K > _MAX_FULL_LAW:
            raise ValueError(
                f"the full law of R has {K} lattice points (about {K * 40 / 2**30:.0f} GiB of "
                f"work arrays); best_of_n needs only a window of it, or pass a coarser step=")
        sw = _Stitch(self, 0, K - 1, _RESOLVED_LAW)
        sw.take(0.0)
        sw.sweep(0.0)
        best_ok, out = sw.ok, sw.logp
        unresolved = ~best_ok
        if np.any(unresolved):
            reach = self._reachable()
            out[unresolved & ~reach] = -np.inf
            out[unresolved & reach] = np.nan
            resolved = ~(unresolved & reach)
        else:
            resolved = np.ones(K, dtype=bool)
        if lam_f != 0.0:
            out = self._retilt(out, lam_f)
        return LatticeLaw(self.values, out, resolved)

    def _best_of_n(self, ln: float) -> SequenceBestOfN:
        """Exact best-of-N over whole sequences for one ``log N`` (``best_of_n``): the level
        law on the window of the tilt centred where the maximum of N draws lives."""
        if self.n_lattice == 1:
            return self._bon_point_mass(ln)
        per_tok = float(self._kstats(np.inf).kl) / self.length
        delta = ln / self.length
        theta = self._solve_k(min(delta, 0.999 * per_tok)) if delta > 0 else 0.0
        result = None
        for _ in range(8):
            result, better = self._bon_at(theta, ln)
            if better is None or abs(better - theta) <= 1e-12 * max(1.0, abs(theta)):
                break
            theta = better
        if result.unresolved_weight > 1e-10:
            warnings.warn(
                f"best_of_n: up to {result.unresolved_weight:.2g} of the best-of-N weight may "
                f"sit on lattice points that the FFT cannot resolve (a sub-lattice carrying "
                f"much less mass than its neighbours); the metrics may be off by about that "
                f"much.  A coarser step= (quantisation) or a shorter length avoids it.",
                RuntimeWarning, stacklevel=3)  # the caller of the public method
        return result

    def _bon_point_mass(self, ln: float) -> SequenceBestOfN:
        """R takes one value: every policy is the reference."""
        zero = np.zeros(1)
        return SequenceBestOfN(
            kl=0.0, expected_reward=self.offset, win_rate=0.5, log_n=ln,
            kl_bound=ln + math.expm1(-ln), win_rate_bound=1.0 / (1.0 + math.exp(-ln)),
            values=np.array([self.offset]), log_probs=zero.copy(), total_mass=1.0, theta=0.0,
            unresolved_weight=0.0, _model=self, _a=zero.copy(), _virtual=False, _lo=0,
            _idx=np.zeros(1, dtype=np.int64), _er0=0.0)

    def _bon_at(self, theta: float, ln: float):
        """Best-of-N from the window at theta (lattice units): (result, None) when the
        window holds the law, else (result, a better-centred tilt)."""
        win = self._window(theta)
        lo, logp, q, exact, law = win.lo, win.logp, win.q, win.exact, win.law
        lv = self._bon_levels(lo, logp, q, exact, ln)
        # Levels that carry weight but sit in a tail of this tilt are recomputed under
        # tilts centred on them (stitching), so that log_probs keeps its relative
        # accuracy there too; the metrics barely move.
        heavy = lv.idx[lv.real_log_w > _LIVE]
        if not exact and heavy.size and np.min(q[heavy]) < -_CENTRAL:
            ka, kb = lo + int(heavy.min()), lo + int(heavy.max())
            st = _Stitch(self, ka, kb)
            st.take(theta)
            st.sweep(theta)
            sl = slice(ka - lo, kb - lo + 1)
            logp[sl], q[sl] = st.logp, st.q
            lv = self._bon_levels(lo, logp, q, exact, ln)
            heavy = lv.idx[lv.real_log_w > _LIVE]
        kl, er_k, wr, tm = lv.metrics
        # Weight that may hide on unresolved points of the window above the lowest level
        # that matters: w_s <= N P(R = s), and P(R = s) is below the resolution there.
        hidden = 0.0
        if not exact and heavy.size:
            j = np.arange(int(heavy.min()), q.size)
            un = j[~(q[j] >= math.log(_RESOLVED))]
            if un.size:
                bound = ln + math.log(_RESOLVED) + win.untilt[un]
                hidden = float(np.exp(min(np.logaddexp.reduce(bound), 0.0)))
        h = self.step
        values = lv.values[1:] if lv.virtual else lv.values
        result = SequenceBestOfN(
            kl=max(kl, 0.0), expected_reward=self.offset + h * er_k,
            win_rate=min(max(wr, 0.0), 1.0), log_n=ln,
            kl_bound=ln + math.expm1(-ln), win_rate_bound=1.0 / (1.0 + math.exp(-ln)),
            values=self.offset + h * values, log_probs=lv.real_log_w,
            total_mass=tm, theta=theta / h, unresolved_weight=hidden,
            _model=self, _a=lv.a, _virtual=lv.virtual, _lo=lo, _idx=lv.idx, _er0=er_k,
            _theta_k=theta)
        # the maximum must sit well inside the window: re-centre on its mean otherwise
        w = np.exp(lv.real_log_w)
        cen = float(np.sum(w * values) / max(w.sum(), 1e-300))
        sd = math.sqrt(max(law.var, 1e-300))
        below = math.exp(lv.log_w[0]) if lv.virtual else 0.0
        if below > 1e-14 or (abs(cen - law.mean) > 3.0 * sd and not exact):
            cen = min(cen, self.n_lattice - 1.5)
            return result, self._theta_for_mean(cen, theta)
        return result, None

    def _bon_levels(self, lo, logp, q, exact, ln) -> _Levels:
        """The level law on the resolved points of a window (values in lattice units)."""
        ok = (q >= math.log(_RESOLVED)) | (exact & (q >= _LOG_EXACT_FLOOR))
        idx = np.flatnonzero(ok)
        values = (lo + idx).astype(np.float64)
        log_mass = logp[idx]
        total = float(np.sum(np.exp(log_mass)))
        # A window that holds (nearly) all the mass is renormalised; otherwise the mass
        # outside it lies below it (theta >= 0 puts the upper tail inside) and becomes
        # one virtual level under the window, whose best-of-N weight F^N must vanish.
        virtual = total < 1.0 - 1e-9
        if virtual:
            values = np.concatenate(([values[0] - 1.0], values))
            log_mass = np.concatenate(([math.log1p(-total)], log_mass))
        else:
            log_mass = log_mass - math.log(total)
        log_w = np.empty(values.size)
        a = np.empty(values.size)
        metrics = _lattice.level_law(values, log_mass, ln, False, log_w, a)
        return _Levels(values, log_w, a, metrics, virtual, idx)
