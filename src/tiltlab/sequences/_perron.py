"""Perron roots and large-deviation quantities of tilted Markov chains (SPEC section 9).

Private machinery of :class:`tiltlab.Markov`'s large-deviation methods: the transition
graph (communicating classes, period), cycle means (Karp) and max-plus potentials, the
Perron root and right vector of a batch of tilted matrices ``M_th = P o e^{th r}``, the
Doob transform, its stationary law and the asymptotic variance (Poisson equation).

Every matrix is handled in log space until it is scaled: ``log M_th(s, s') = log P(s, s')
+ th (r(s, s') + u(s') - u(s))`` with ``u`` a max-plus (``th >= 0``) or min-plus
(``th < 0``) potential of ``r`` -- a diagonal similarity, so the Perron root is unchanged
and ``th c`` (``c`` the extreme cycle mean) is added back in log space -- then scaled by its
largest entry.  After the similarity no entry is below ``e^{th (r - c)}`` on the critical
cycles, so nothing that matters under- or overflows at any tilt.  The Perron pair of the
scaled matrix ``A`` comes from Noda's iteration (inverse iteration shifted by the upper
Collatz-Wielandt bound, ``x <- (hi I - A)^{-1} x``: positive iterates, monotone and
quadratically convergent for irreducible ``A``, periodic or not), stopped when the bounds
``min (Ax)/x <= rho <= max (Ax)/x`` agree to 1e-14 relative, or stop narrowing below 1e-12
(the rounding of ``A x``: about ``V eps`` times the spread of the terms).  A matrix where that fails
falls back to power iteration in log space on ``rho_hat I + M``.
"""

from __future__ import annotations

import numpy as np

_TOL = 1e-14
_MAX_NODA = 60
_STALL = 1e-12


# ---------------------------------------------------------------------------------------
# the transition graph


def closure(adj: np.ndarray) -> np.ndarray:
    """Reflexive-transitive closure of a boolean (V, V) adjacency matrix."""
    reach = adj | np.eye(adj.shape[0], dtype=bool)
    while True:
        nxt = (reach.astype(np.int64) @ reach.astype(np.int64)) > 0
        if (nxt == reach).all():
            return reach
        reach = nxt


def classes(adj: np.ndarray) -> list[list[int]]:
    """Communicating classes of the graph (lists of states, ordered by first state)."""
    reach = closure(adj)
    comm = reach & reach.T
    seen = np.zeros(adj.shape[0], dtype=bool)
    out = []
    for s in range(adj.shape[0]):
        if not seen[s]:
            members = np.flatnonzero(comm[s])
            seen[members] = True
            out.append([int(x) for x in members])
    return out


def period(adj: np.ndarray) -> int:
    """Period of a strongly connected graph, 0 if it is not strongly connected.

    The gcd of the lengths ``k <= V`` of the closed walks: every simple cycle is among
    them and every closed walk is a union of simple cycles.
    """
    nv = adj.shape[0]
    if len(classes(adj)) > 1:
        return 0
    a = adj.astype(np.int64)
    walk = np.eye(nv, dtype=np.int64)
    d = 0
    for k in range(1, nv + 1):
        walk = ((walk @ a) > 0).astype(np.int64)
        if np.trace(walk) > 0:
            d = int(np.gcd(d, k))
            if d == 1:
                break
    return d


def require_irreducible(adj: np.ndarray) -> None:
    """ValueError naming ``transition_logits`` and the classes if the chain is reducible."""
    cls = classes(adj)
    if len(cls) > 1:
        shown = ", ".join(str(c) for c in cls[:6]) + (", ..." if len(cls) > 6 else "")
        raise ValueError(
            f"transition_logits: the chain is reducible, its states do not all communicate "
            f"(communicating classes {shown}); the scaled CGF, rate function and "
            f"stationary law need an irreducible chain (SPEC section 9)")


# ---------------------------------------------------------------------------------------
# cycle means and potentials (max-plus algebra)


def max_cycle_mean(w: np.ndarray) -> float:
    """Largest mean weight of a cycle (Karp), ``w`` (V, V) with ``-inf`` = no edge, for a
    strongly connected graph."""
    nv = w.shape[0]
    d = np.empty((nv + 1, nv))
    d[0] = 0.0
    for k in range(1, nv + 1):
        d[k] = np.max(d[k - 1][:, None] + w, axis=0)     # best walk of k edges ending at s
    with np.errstate(invalid="ignore"):
        ks = np.arange(nv)[:, None]
        ratio = (d[nv][None, :] - d[:nv]) / (nv - ks)
    ratio = np.where(np.isfinite(d[:nv]), ratio, np.inf)
    best = np.min(ratio, axis=0)
    return float(np.max(best[np.isfinite(d[nv])]))


def _tol(w_fin: np.ndarray) -> float:
    return 64.0 * np.finfo(np.float64).eps * w_fin.shape[0] * max(
        float(np.max(np.abs(w_fin), initial=0.0)), np.finfo(np.float64).tiny)


def potential(w: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """A max-plus potential ``u`` with ``w(s, s') + u(s') - u(s) <= c`` on every edge, and
    the critical edges (on a cycle of mean ``c``, within rounding).

    Floyd-Warshall on ``w - c`` (no positive cycle): ``best(s, s')`` the heaviest path.
    """
    nv = w.shape[0]
    wc = w - c
    best = wc.copy()
    for k in range(nv):
        best = np.maximum(best, best[:, k:k + 1] + best[k:k + 1, :])
    fin = np.isfinite(w)
    tol = _tol(np.where(fin, w, 0.0))
    diag = np.diagonal(best)
    crit_node = int(np.argmax(diag))
    path = best.copy()
    np.fill_diagonal(path, np.maximum(diag, 0.0))
    u = path[:, crit_node]
    with np.errstate(invalid="ignore"):
        critical = fin & (wc + path.T >= -tol)
    return u - np.max(u), critical


# ---------------------------------------------------------------------------------------
# Perron root and vector


def _noda(a: np.ndarray, x: np.ndarray):
    """Noda's iteration on a batch (B, V, V) of non-negative matrices with largest entry 1,
    from the positive start vectors ``x`` (B, V).

    Returns ``(rho, x, ok)``: the midpoint of the Collatz-Wielandt bounds, the positive
    right vector (max 1) and whether the bounds agreed to 1e-14 relative."""
    b, nv, _ = a.shape
    x_out = x.copy()
    rho = np.full(b, np.nan)
    ok = np.zeros(b, dtype=bool)
    active = np.arange(b)
    aa, xa = a, x_out.copy()
    prev = np.full(b, np.inf)
    eye = np.eye(nv)
    for _ in range(_MAX_NODA):
        with np.errstate(all="ignore"):
            ratio = np.matmul(aa, xa[:, :, None])[:, :, 0] / xa
        lo = np.min(ratio, axis=1)
        hi = np.max(ratio, axis=1)
        good = np.isfinite(lo) & np.isfinite(hi) & (lo > 0)
        gap = (hi - lo) / hi
        # converged, or stalled at the rounding of A x (below 1e-12: the bounds still
        # enclose rho, the midpoint is within half the gap)
        done = good & ((gap <= _TOL) | ((gap <= _STALL) & (gap > 0.25 * prev)))
        if done.any():
            rho[active[done]] = 0.5 * (lo[done] + hi[done])
            ok[active[done]] = True
            x_out[active[done]] = xa[done]
        keep = good & ~done
        if not keep.all():
            active, aa, xa = active[keep], aa[keep], xa[keep]
            lo, hi, gap = lo[keep], hi[keep], gap[keep]
        if active.size == 0:
            break
        prev = gap
        shift = hi * (1.0 + 4e-16)                # >= rho: (shift I - A)^-1 is positive
        try:
            z = np.linalg.solve(shift[:, None, None] * eye - aa, xa[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            break
        z = np.abs(z)
        xa = z / np.max(z, axis=1, keepdims=True)
    return rho, x_out, ok


def _log_power(log_a: np.ndarray, max_iter: int = 20000):
    """Fallback for one log matrix (V, V): power iteration in log space on
    ``rho_hat I + M``; returns ``(log rho, log x)``."""
    x = np.zeros(log_a.shape[0])
    lo = hi = 0.0
    for _ in range(max_iter):
        z = log_a + x[None, :]
        mz = np.max(z, axis=1)
        y = mz + np.log(np.sum(np.exp(z - mz[:, None]), axis=1))
        ratio = y - x
        lo, hi = float(np.min(ratio)), float(np.max(ratio))
        if hi - lo <= _TOL:
            break
        x = np.logaddexp(x + 0.5 * (lo + hi), y)
        x -= np.max(x)
    return 0.5 * (lo + hi), x


class Tilted:
    """The tilted matrices ``M_th`` of one chain: ``log P`` (V, V), ``r`` (V, V) (0 off
    the support); an irreducible chain."""

    def __init__(self, log_tr: np.ndarray, r: np.ndarray):
        self.log_tr = log_tr
        self.support = np.isfinite(log_tr)
        self.r = np.where(self.support, r, 0.0)
        w = np.where(self.support, self.r, -np.inf)
        wn = np.where(self.support, -self.r, -np.inf)
        self.c_max = max_cycle_mean(w)
        self.c_min = -max_cycle_mean(wn)
        self.u_max, self.crit_max = potential(w, self.c_max)
        u_min, self.crit_min = potential(wn, -self.c_min)
        self.u_min = -u_min

    def log_perron(self, theta: np.ndarray):
        """``(log rho (B,), log v (B, V))`` of ``M_th`` at finite tilts ``theta`` (B,),
        ``v`` the right Perron vector (max 1)."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        pos = theta >= 0
        u = np.where(pos[:, None], self.u_max[None, :], self.u_min[None, :])
        c = np.where(pos, self.c_max, self.c_min)
        g = self.r[None, :, :] + u[:, None, :] - u[:, :, None] - c[:, None, None]
        log_m = np.where(self.support, self.log_tr + theta[:, None, None] * g, -np.inf)
        top = np.max(log_m, axis=(1, 2))
        with np.errstate(under="ignore"):
            a = np.exp(log_m - top[:, None, None])
        # warm starts: every 64th tilt in sorted order from the flat vector, then every
        # 8th, then the rest, each from the Perron vector of the nearest tilt already
        # solved (Noda converges quadratically once the upper bound is close)
        b = theta.shape[0]
        order = np.argsort(theta, kind="stable")
        rho = np.empty(b)
        x = np.empty((b, self.r.shape[0]))
        ok = np.empty(b, dtype=bool)
        solved = np.zeros(0, dtype=np.int64)             # ranks (positions in order)
        for stride in (64, 8, 1):
            ranks = np.setdiff1d(np.arange(0, b, stride), solved)
            if ranks.size == 0:
                continue
            idx = order[ranks]
            if solved.size == 0:
                x0 = np.ones((idx.size, x.shape[1]))
            else:
                pos = np.clip(np.searchsorted(solved, ranks), 1, solved.size) - 1
                right = np.minimum(pos + 1, solved.size - 1)
                pick = np.where(np.abs(solved[right] - ranks) < np.abs(solved[pos] - ranks),
                                right, pos)
                near = order[solved[pick]]
                with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                    lx = (np.log(x[near]) + theta[near, None] * u[near]
                          - theta[idx, None] * u[idx])
                lx = np.where(np.isfinite(lx), lx, 0.0)
                x0 = np.exp(np.maximum(lx - np.max(lx, axis=1, keepdims=True), -600.0))
            rho[idx], x[idx], ok[idx] = _noda(a[idx], x0)
            solved = np.union1d(solved, ranks[ok[idx]])
        with np.errstate(divide="ignore"):
            log_rho = theta * c + top + np.log(rho)
            log_x = np.log(x)
        for i in np.flatnonzero(~ok):
            lr, lx = _log_power(log_m[i] - top[i])
            log_rho[i] = theta[i] * c[i] + top[i] + lr
            log_x[i] = lx
        # back through the similarity M' = D^-1 M D, D = diag(e^{th u}): v = D x
        log_v = log_x + theta[:, None] * u
        log_v -= np.max(log_v, axis=1, keepdims=True)
        return log_rho, log_v

    def doob(self, theta: np.ndarray, log_rho: np.ndarray, log_v: np.ndarray) -> np.ndarray:
        """``Q_th(s, s') = M_th(s, s') v(s') / (rho v(s))`` (B, V, V), rows renormalised."""
        with np.errstate(under="ignore"):
            lq = np.where(self.support,
                          self.log_tr + theta[:, None, None] * self.r
                          + log_v[:, None, :] - log_v[:, :, None] - log_rho[:, None, None],
                          -np.inf)
            q = np.exp(lq)
        return q / np.sum(q, axis=2, keepdims=True)

    def moments(self, q: np.ndarray):
        """Stationary law ``mu`` (B, V) of ``Q``, ``Lambda' = E_mu r`` and the asymptotic
        variance ``Lambda'' = sum_s mu(s) Var_{Q(s, .)}[r(s, .) + h(.)]``, ``h`` solving
        the Poisson equation ``(I - Q + 1 mu^T) h = Q r - Lambda'``."""
        mu = stationary(q)
        rr = self.r[None, :, :]
        qr = np.sum(q * rr, axis=2)                     # (B, V)
        m = np.sum(mu * qr, axis=1)
        nv = q.shape[1]
        eye = np.eye(nv)
        fund = eye - q + np.ones((1, nv, 1)) * mu[:, None, :]
        h = np.linalg.solve(fund, (qr - m[:, None])[:, :, None])[:, :, 0]
        y = rr + h[:, None, :] - h[:, :, None] - m[:, None, None]
        var = np.sum(mu * np.sum(q * y * y, axis=2), axis=1)
        return mu, m, var


def stationary(q: np.ndarray) -> np.ndarray:
    """Stationary law of a batch (B, V, V) of irreducible stochastic matrices:
    ``mu^T (I - Q + 1 1^T) = 1^T``."""
    nv = q.shape[1]
    a = np.eye(nv) - q + 1.0
    mu = np.linalg.solve(np.swapaxes(a, 1, 2), np.ones(q.shape[:2])[:, :, None])[:, :, 0]
    mu = np.maximum(mu, 0.0)
    return mu / np.sum(mu, axis=1, keepdims=True)
