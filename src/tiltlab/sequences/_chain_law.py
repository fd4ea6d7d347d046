"""The law of the lattice sum of a Markov chain under one tilt (SPEC section 9), private.

A chain's integer levels ``K = k0(y_1) + sum_t k(y_t, y_{t+1})`` are summed either by the
direct dynamic program over (position, state, level) in linear space, rescaled at every
step (exact to rounding relative to every value above underflow), or by the doubling of the
polynomial matrix ``A_m(s, s', j) = P_theta(m transitions from s end in s' with level sum
j)`` (FFT convolutions along the levels, one V x V complex product per frequency), kept on
windows around the tilted mean: at tilt ``theta`` the sum concentrates within a few
standard deviations, so each power holds O(sqrt(m)) levels.  Both return the law of K under
the tilt relative to its peak, and can keep what the exact conditional sampler needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tiltlab.sequences._tilted import fast_len

# Values below this fraction of their own entry's peak are dropped as FFT rounding noise
# (1e-14, as for the memoryless laws, loses ~1e-13 of the peak over the doubling levels).
_TRIM = 3e-16
# Direct convolutions (shifted matrix products) when the shorter operand has at most this
# many levels; FFT otherwise.
_DIRECT_TAPS = 24


@dataclass
class Poly:
    """``value(..., lo + j) = arr[..., j] * exp(log_scale)``: a (V, V) matrix or a (V,)
    vector of level sequences on one common window of levels."""

    lo: int
    arr: np.ndarray
    log_scale: float


def _normalise(arr: np.ndarray, lo: int, log_scale: float, trim: bool) -> Poly:
    """Scale to peak 1, drop rounding noise (per entry, relative to its own peak) and cut
    the window to the levels where some entry is non-zero."""
    if trim:
        arr[arr < 0.0] = 0.0
        peaks = arr.max(axis=-1, keepdims=True)
        arr[arr < _TRIM * peaks] = 0.0
    peak = float(arr.max())
    if not peak > 0.0:
        raise FloatingPointError("the tilted law vanished (internal error)")
    arr /= peak
    nz = np.flatnonzero(arr.reshape(-1, arr.shape[-1]).max(axis=0) > 0.0)
    a, b = int(nz[0]), int(nz[-1]) + 1
    return Poly(lo + a, np.ascontiguousarray(arr[..., a:b]), log_scale + math.log(peak))


def _product(x: Poly, m: Poly) -> Poly:
    """``x * m`` with a matrix product over the states and a convolution over the levels:
    ``out(.., s'', j) = sum_{s', a} x(.., s', a) m(s', s'', j - a)``; ``x`` a vector or a
    matrix."""
    wa, wb = x.arr.shape[-1], m.arr.shape[-1]
    width = wa + wb - 1
    lead = x.arr.shape[:-1]
    if min(wa, wb) <= _DIRECT_TAPS:
        out = np.zeros(lead[:-1] + (m.arr.shape[1], width))
        if wb <= wa:
            xs = np.moveaxis(x.arr, -1, 0)                       # (wa, .., V)
            for j in range(wb):
                out[..., j:j + wa] += np.moveaxis(xs @ m.arr[:, :, j], 0, -1)
        else:
            ms = np.moveaxis(m.arr, -1, 0)                       # (wb, V, V)
            for i in range(wa):
                out[..., i:i + wb] += np.moveaxis(x.arr[..., i] @ ms, 0, -1)
        trim = False
    else:
        size = fast_len(width)
        fx = np.moveaxis(np.fft.rfft(x.arr, size, axis=-1), -1, 0)  # (F, .., V)
        fm = np.moveaxis(np.fft.rfft(m.arr, size, axis=-1), -1, 0)  # (F, V, V)
        if x.arr.ndim == 2:    # a vector of level sequences
            fo = np.einsum("fa,fab->fb", fx, fm)
        else:
            fo = fx @ fm
        out = np.fft.irfft(np.moveaxis(fo, 0, -1), size, axis=-1)[..., :width]
        trim = True
    return _normalise(out, x.lo + m.lo, x.log_scale + m.log_scale, trim)


@dataclass
class ChainLaw:
    """The law of K under one tilt, centred: ``P(K = lo + j) e^{theta (lo + j - centre)} =
    vals[j] exp(log_scale)`` (``vals`` peaks at 1; ``centre`` = length * c, an integer, so
    undoing the tilt costs one rounding of ``theta`` times a small integer); with the pieces
    the conditional sampler needs."""

    lo: int
    vals: np.ndarray
    log_scale: float
    exact: bool
    centre: int
    # direct path: the forward tables, one Poly (V,) per position
    tables: list = field(default_factory=list)
    # doubling path: the powers A_{2^j}, the blocks applied in order and the vectors
    # before each block (``vectors[i]`` is the forward vector before block i)
    powers: list = field(default_factory=list)
    blocks: list = field(default_factory=list)
    vectors: list = field(default_factory=list)
    final: Poly | None = None


def _scaled_tilt(log_w, levels, theta, c=0):
    """``e^{log_w + theta (levels - c)}`` in linear space, scaled by its largest entry
    (0 where ``log_w`` is -inf): (values, log scale)."""
    with np.errstate(invalid="ignore"):
        lw = np.where(np.isfinite(log_w), log_w + theta * (levels - c), -np.inf)
    top = float(lw.max())
    return np.exp(lw - top), top


def _tilted(log_p0, log_tr, k0, k, theta, c=0):
    """Linear-space initial vector and transition matrix at tilt theta on the levels
    centred on the integer c per token (``e^{theta (k - c)}``: the log scales stay of the
    size of the log probabilities, not of ``theta k``), each scaled by its largest entry
    (the log scales returned)."""
    u, cu = _scaled_tilt(log_p0, k0, theta, c)
    mt, cm = _scaled_tilt(log_tr, k, theta, c)
    return u, cu, mt, cm


def direct_law(log_p0, log_tr, k0, k, length, theta, c, keep=False) -> ChainLaw:
    """The DP of SPEC 9 in linear space at tilt theta, rescaled per step: only sums of
    non-negative products, so every value is exact to rounding relative to itself (until
    it underflows below ~1e-300 of the step's peak)."""
    u, cu, mt, cm = _tilted(log_p0, log_tr, k0, k, theta, c)
    v = u.shape[0]
    kmax = int(k.max())
    table = np.zeros((v, int(k0.max()) + 1))
    table[np.arange(v), k0] = u
    x = _normalise(table, 0, 0.0, False)
    # the log scales of the steps, summed exactly rounded at the end (a running sum of
    # n terms would lose ~n/2 ulps of a total of the size of log P)
    terms = [cu, (length - 1) * cm, x.log_scale]
    tables = [x] if keep else []
    # one (s, s') pair per shift: group the transitions by their level
    levels = [(int(j), np.where(k == j, mt, 0.0)) for j in np.unique(k[mt > 0])]
    for _ in range(length - 1):
        w = x.arr.shape[1]
        out = np.zeros((v, w + kmax))
        for j, mj in levels:
            out[:, j:j + w] += mj.T @ x.arr
        x = _normalise(out, x.lo, 0.0, False)
        terms.append(x.log_scale)
        if keep:
            tables.append(x)
    tot = x.arr.sum(axis=0)
    peak = float(tot.max())
    terms.append(math.log(peak))
    return ChainLaw(x.lo, tot / peak, math.fsum(terms), True, c * length,
                    tables=tables, final=x)


def doubling_law(log_p0, log_tr, k0, k, length, theta, c) -> ChainLaw:
    """The law of K at tilt theta by doubling the polynomial transition matrix."""
    u, cu, mt, cm = _tilted(log_p0, log_tr, k0, k, theta, c)
    v = u.shape[0]
    kmax = int(k.max())
    a1 = np.zeros((v, v, kmax + 1))
    s, s2 = np.nonzero(mt > 0)
    a1[s, s2, k[s, s2]] = mt[s, s2]
    vec = np.zeros((v, int(k0.max()) + 1))
    vec[np.arange(v), k0] = u
    x = _normalise(vec, 0, cu, False)
    steps = length - 1
    # powers A_{2^j} up to the largest below the top bit; the top power is applied as
    # two halves (a vector product costs V^2 per level, a square V^3)
    powers = [_normalise(a1, 0, cm, False)]
    top = steps.bit_length() - 1 if steps else 0
    while len(powers) < max(top, 1):
        powers.append(_product(powers[-1], powers[-1]))
    blocks = []
    for j in range(top + 1):
        if steps >> j & 1:
            if j < len(powers):
                blocks.append(j)
            else:
                blocks += [j - 1, j - 1]
    vectors = []
    for j in blocks:
        vectors.append(x)
        x = _product(x, powers[j])
    tot = x.arr.sum(axis=0)
    peak = float(tot.max())
    return ChainLaw(x.lo, tot / peak, x.log_scale + math.log(peak), False, c * length,
                    powers=powers,
                    blocks=blocks, vectors=vectors, final=x)


# The frequency path: frequencies whose |G| is below this fraction of G(0) are dropped,
# after a check of this many frequencies spread over the whole circle.
_LOBE_CUT = 1e-20
_CHECKS = 48
_LOBE_TRIM = 1e-15
# ... and when a check fails, windows of up to twice this many levels take every
# frequency (nearly periodic sums at extreme tilts have narrow windows)
_ALL_FREQUENCIES = 512


def _transform(u, mt, k0, k, length, js, size, lo):
    """``sum_k T(k) e^{-i w (k - lo)}`` at ``w = 2 pi j / size`` for the integers ``js``,
    with ``T(k) = sum_y u(y_1) prod_t mt(y_t, y_{t+1}) [K(y) = k]`` (u, mt the tilted,
    scaled initial vector and transition matrix): binary powering of the V x V complex
    matrix per frequency, all frequencies scaled by the largest entry at frequency 0
    (which bounds every other frequency entrywise).  Phases from integers mod ``size``
    (exact).  Returns (values (F,), log scale)."""
    js = np.concatenate(([0], np.asarray(js, dtype=np.int64)))
    two_pi = 2.0 * math.pi / size
    ph = (js[:, None, None] * k[None, :, :]) % size
    mat = mt[None, :, :] * np.exp(-1j * two_pi * ph)
    vec = u[None, :] * np.exp(-1j * two_pi * ((js[:, None] * k0[None, :]) % size))
    log_v, log_m = [], 0.0
    steps = length - 1
    while steps:
        if steps & 1:
            vec = np.einsum("fa,fab->fb", vec, mat)
            sc = float(np.max(vec[0].real))
            vec /= sc
            log_v.append(math.log(sc) + log_m)
        steps >>= 1
        if steps:
            mat = mat @ mat
            sc = float(np.max(mat[0].real))
            mat /= sc
            log_m = 2.0 * log_m + math.log(sc)
    g = vec.sum(axis=1) * np.exp(1j * two_pi * ((js * lo) % size))
    return g[1:], g[0].real, math.fsum(log_v)


def lobe_law(log_p0, log_tr, k0, k, length, theta, c, mean, sd) -> ChainLaw:
    """The law of K at tilt theta from its transform on a window of ``size`` levels
    around the tilted mean (SPEC 9, fast path for long chains): ``G`` at the frequencies of
    the main lobe (where ``|G| >= 1e-20 G(0)``, found outwards from 0) and at 48 check
    frequencies over the whole circle.  When a check frequency is not negligible (a nearly
    periodic level sum) every frequency of a narrow window is taken, and in a wide one the
    secondary lobe around each such check is grown outwards like the main one.  (A lobe
    narrower than the spacing of the checks would be missed: the doubling, used by the
    sampler, has no such assumption.)"""
    u, cu, mt, cm = _tilted(log_p0, log_tr, k0, k, theta, c)
    full = int(k0.max()) + (length - 1) * int(k.max()) + 1
    size = fast_len(max(64, int(math.ceil(24.0 * sd)) + 16))
    if size >= full:
        size, lo = fast_len(full), 0
    else:
        lo = int(round(mean)) - size // 2
    half = size // 2
    # main lobe: the characteristic function decays like exp(-w^2 sd^2 / 2)
    j_hi = min(half, int(math.ceil(12.0 * size / (2.0 * math.pi * max(sd, 1e-3)))) + 2)
    g_lo, g0, log_s = _transform(u, mt, k0, k, length, np.arange(1, j_hi + 1), size, lo)
    while j_hi < half and np.max(np.abs(g_lo[-4:])) > _LOBE_CUT * g0:
        nxt = min(half, 2 * j_hi)
        more, _, _ = _transform(u, mt, k0, k, length, np.arange(j_hi + 1, nxt + 1), size, lo)
        g_lo, j_hi = np.concatenate((g_lo, more)), nxt
    spec = np.zeros(half + 1, dtype=np.complex128)
    spec[0] = g0
    spec[1:j_hi + 1] = g_lo
    if j_hi < half:
        checks = np.unique(np.linspace(j_hi + 1, half, _CHECKS).astype(np.int64))
        g_chk, _, _ = _transform(u, mt, k0, k, length, checks, size, lo)
        spec[checks] = g_chk
        big = checks[np.abs(g_chk) > _LOBE_CUT * g0]
        if big.size and half <= _ALL_FREQUENCIES:
            rest, _, _ = _transform(u, mt, k0, k, length, np.arange(j_hi + 1, half + 1),
                                    size, lo)
            spec[j_hi + 1:] = rest
        elif big.size:
            # secondary lobes (a nearly periodic level sum): grow each one outwards from
            # its check frequency until |G| falls below the cut on both sides
            done = np.zeros(half + 1, dtype=bool)
            done[:j_hi + 1] = True
            done[checks] = True
            for j in big:
                for side in (1, -1):
                    edge = int(j)
                    for _ in range(half):
                        nxt = np.arange(edge + side, edge + 17 * side, side)
                        nxt = nxt[(nxt >= 0) & (nxt <= half)]
                        nxt = nxt[~done[nxt]]
                        if nxt.size == 0:
                            break
                        g, _, _ = _transform(u, mt, k0, k, length, nxt, size, lo)
                        spec[nxt], done[nxt] = g, True
                        edge = int(nxt[-1])
                        if np.max(np.abs(g[-4:])) <= _LOBE_CUT * g0:
                            break
    vals = np.fft.irfft(spec, size)
    peak = float(vals.max())
    vals[vals < _LOBE_TRIM * peak] = 0.0
    nz = np.flatnonzero(vals)
    vals = vals[nz[0]:nz[-1] + 1] / peak
    log_scale = math.fsum([log_s, (length - 1) * cm, cu, math.log(peak)])
    return ChainLaw(lo + int(nz[0]), vals, log_scale, False, c * length)


def level_range(log_p0, log_tr, k0, k, length):
    """(smallest, largest) reachable level sum, by the min- and max-plus recursions."""
    big = np.iinfo(np.int64).max // 4
    ok0, ok = np.isfinite(log_p0), np.isfinite(log_tr)
    lo_s = np.zeros(log_p0.shape[0], dtype=np.int64)
    hi_s = np.zeros(log_p0.shape[0], dtype=np.int64)
    for _ in range(length - 1):   # best level still to come from each state
        lo_s = np.min(np.where(ok, k + lo_s[None, :], big), axis=1)
        hi_s = np.max(np.where(ok, k + hi_s[None, :], -big), axis=1)
    return (int(np.min(np.where(ok0, k0 + lo_s, big))),
            int(np.max(np.where(ok0, k0 + hi_s, -big))))


def reachable_levels(log_p0, log_tr, k0, k, length, kmin, kmax, budget=30_000_000):
    """Boolean of the reachable level sums in [kmin, kmax] (exact, by bit sets), or None
    when that would cost more than ``budget`` word operations."""
    v = log_p0.shape[0]
    words = (kmax + 64) // 64
    if (length - 1) * v * v * words > budget:
        return None
    ok = np.isfinite(log_tr)
    pairs = [(int(s), int(s2), int(k[s, s2])) for s, s2 in zip(*np.nonzero(ok), strict=True)]
    sets = [(1 << int(k0[s])) if np.isfinite(log_p0[s]) else 0 for s in range(v)]
    for _ in range(length - 1):
        nxt = [0] * v
        for s, s2, j in pairs:
            if sets[s]:
                nxt[s2] |= sets[s] << j
        sets = nxt
    total = 0
    for x in sets:
        total |= x
    bits = np.frombuffer(total.to_bytes((kmax + 8) // 8 + 1, "little"), dtype=np.uint8)
    flags = np.unpackbits(bits, bitorder="little")[:kmax + 1].astype(bool)
    return flags[kmin:]


def _draw(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per row of ``weights`` (B, m) (non-negative, some positive) the index whose
    cumulative share first exceeds ``u`` (B,)."""
    c = np.cumsum(weights, axis=1)
    idx = np.sum(c < (u * c[:, -1])[:, None], axis=1)
    return np.minimum(idx, weights.shape[1] - 1)


def sample_direct(law: ChainLaw, log_tr, k, theta, sums, rng) -> np.ndarray:
    """Sequences of p conditioned on their level sums ``sums`` (B,), backwards through the
    forward tables (SPEC 9) of the tilt theta (the tilt cancels in the conditional
    weights, with the tilted transition matrix): (B, length) int32."""
    tables = law.tables
    n = len(tables)
    b = sums.shape[0]
    v = log_tr.shape[0]
    out = np.empty((b, n), dtype=np.int32)
    j = sums.astype(np.int64).copy()
    last = tables[-1]
    col = j - last.lo
    w = last.arr[:, col].T                                          # (B, V)
    s_next = _draw(w, rng.random(b))
    out[:, -1] = s_next
    ptr, _ = _scaled_tilt(log_tr, k, theta)
    for t in range(n - 2, -1, -1):
        tab = tables[t]
        idx = j[:, None] - k[:, s_next].T - tab.lo                  # (B, V)
        okk = (idx >= 0) & (idx < tab.arr.shape[1])
        vals = tab.arr[np.arange(v)[None, :], np.clip(idx, 0, tab.arr.shape[1] - 1)]
        w = np.where(okk, vals * ptr[:, s_next].T, 0.0)
        s = _draw(w, rng.random(b))
        j -= k[s, s_next]
        out[:, t] = s
        s_next = s
    return out


def _entry(p: Poly, s_a, s_b, d):
    """Values ``p(s_a, s_b, d)`` (arrays broadcast), 0 outside the window."""
    idx = d - p.lo
    ok = (idx >= 0) & (idx < p.arr.shape[-1])
    return np.where(ok, p.arr[s_a, s_b, np.clip(idx, 0, p.arr.shape[-1] - 1)], 0.0)


def sample_doubling(law: ChainLaw, k, sums, rng) -> np.ndarray:
    """Sequences of p conditioned on their level sums, by splitting each block of the
    doubling at its middle state and level (SPEC 9): (B, length) int32."""
    b = sums.shape[0]
    v = k.shape[0]
    blocks, powers, vectors = law.blocks, law.powers, law.vectors
    n = 1 + sum(1 << j for j in blocks)
    out = np.empty((b, n), dtype=np.int32)
    states = np.arange(v)
    # the final state from P(y_n = s, K = sum), then backwards block by block
    j_end = sums.astype(np.int64)
    fin = law.final
    col = j_end - fin.lo
    w = fin.arr[:, np.clip(col, 0, fin.arr.shape[-1] - 1)].T
    s_end = _draw(w, rng.random(b))
    out[:, -1] = s_end
    pos = n - 1
    for i in range(len(blocks) - 1, -1, -1):
        pj = powers[blocks[i]]
        xv = vectors[i]
        # start of the block: state s_a and level a with weight x(s_a, a) A(s_a, s_end, j - a)
        a_lv = xv.lo + np.arange(xv.arr.shape[-1])                    # (W,)
        wts = xv.arr[None, :, :] * _entry(pj, states[None, :, None], s_end[:, None, None],
                                          j_end[:, None, None] - a_lv[None, None, :])
        flat = _draw(wts.reshape(b, -1), rng.random(b))
        s_a = flat // a_lv.size
        a = a_lv[flat % a_lv.size]
        start = pos - (1 << blocks[i])
        _fill_block(out, powers, blocks[i], start, s_a, s_end, j_end - a, k, rng)
        out[:, start] = s_a
        s_end, j_end, pos = s_a, a, start
    return out


def _fill_block(out, powers, level, start, s_a, s_b, d, k, rng):
    """Fill positions start+1 .. start+2^level-1 of ``out`` for paths of 2^level
    transitions from s_a to s_b with level sum d, by recursive halving."""
    b = s_a.shape[0]
    v = k.shape[0]
    states = np.arange(v)
    # breadth-first: all segments of one level at once, (B, segments) arrays
    seg_a, seg_b, seg_d = s_a[:, None], s_b[:, None], d[:, None]
    for lev in range(level, 0, -1):
        half = powers[lev - 1]
        lv = half.lo + np.arange(half.arr.shape[-1])                  # levels of a half
        nseg = seg_a.shape[1]
        # weight of (middle state c, first-half level x): A(a, c, x) A(c, b, d - x)
        left = half.arr[seg_a[:, :, None], states[None, None, :]]    # (B, S, V, W)
        right = _entry(half, states[None, None, :, None], seg_b[:, :, None, None],
                       seg_d[:, :, None, None] - lv[None, None, None, :])
        wts = (left * right).reshape(b * nseg, -1)
        flat = _draw(wts, rng.random(b * nseg)).reshape(b, nseg)
        mid = flat // lv.size
        x = lv[flat % lv.size]
        step = 1 << (lev - 1)
        cols = start + step * (2 * np.arange(nseg) + 1)
        out[:, cols] = mid
        new_a = np.empty((b, 2 * nseg), dtype=np.int64)
        new_b = np.empty_like(new_a)
        new_d = np.empty_like(new_a)
        new_a[:, 0::2], new_b[:, 0::2], new_d[:, 0::2] = seg_a, mid, x
        new_a[:, 1::2], new_b[:, 1::2], new_d[:, 1::2] = mid, seg_b, seg_d - x
        seg_a, seg_b, seg_d = new_a, new_b, new_d
    # single transitions: the level must match (a check of the bookkeeping)
    if np.any(k[seg_a, seg_b] != seg_d):
        raise RuntimeError("tiltlab: conditional Markov sampling lost its level "
                           "(internal error)")
