"""Divergences between distributions given as logits."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from tiltlab import _core
from tiltlab import _interop as interop
from tiltlab import _validation as V

__all__ = ["kl_divergence"]


@interop.arrays("logits_p", "logits_q")
def kl_divergence(logits_p: ArrayLike, logits_q: ArrayLike, *, n_threads: int | None = None):
    """Row-wise ``KL(p || q)`` for ``p = softmax(logits_p)``, ``q = softmax(logits_q)``.

    ``KL(p || q) = sum_y p(y) (log p(y) - log q(y))`` in nats, ``+inf`` where ``q`` is zero
    on an outcome that ``p`` can produce.  One pass per row; the log normalisers are
    combined as ``log1p`` of a sum of ``expm1`` terms so that KL keeps its relative
    accuracy when ``q`` is close to ``p`` (the closeness identity of SPEC section 2 relies
    on small KLs).

    Parameters
    ----------
    logits_p, logits_q : array_like, shape (..., V)
        Logits of the two distributions; leading axes broadcast.
    n_threads : int, optional
        Threads for the compiled kernel.

    Returns
    -------
    ndarray or float
        KL per batch element.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> print(f"{tiltlab.kl_divergence(np.log([0.5, 0.5]), np.log([0.9, 0.1])):.10f}")
    0.5108256238
    >>> float(tiltlab.kl_divergence([0.0, 0.0], [0.0, -np.inf]))
    inf
    """
    rows = V.prepare_rows(logits_p, logits_q, names=("logits_p", "logits_q"),
                          second_is_logits=True)
    nt = V.threads_for_work(rows.n_rows * rows.n_outcomes, V.n_threads_value(n_threads))
    out = np.empty(rows.n_rows, dtype=np.float64)
    flags = np.zeros(rows.n_rows, dtype=np.int32)
    _core.kl_rows(rows.first, rows.second, rows.first_off, rows.second_off, rows.n_outcomes,
                  out, flags, nt)
    flags &= ~np.int32(16)  # TL_FLAG_INF_KL: an answer (+inf), not an error
    V.raise_for_flags(flags, rows, second_is_logits=True)
    return V.shaped(out, rows.batch_shape)
