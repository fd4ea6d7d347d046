"""Row-kernel plumbing shared by the public modules: running a compiled row driver with the
kernels' flags turned into exceptions, the row information under ``p``, and the tilt's shift.

The public modules (tilting, largedev, bestofn, policies, memoryless) call the compiled
row drivers through these few functions instead of reaching into each other.
"""

from __future__ import annotations

import numpy as np

from tiltlab import _core
from tiltlab import _validation as V

# columns of row_info: (log_norm, mean, variance, r_max, log_p_max, r_min, log_p_min)
INFO_MEAN, INFO_VAR, INFO_RMAX, INFO_LPMAX, INFO_RMIN, INFO_LPMIN = 1, 2, 3, 4, 5, 6


def kernel_call(fn, rows: V.Rows, *args, n_threads):
    """Run a Cython row driver; returns its flags after raising for bad input."""
    n_threads = V.threads_for_work(rows.n_rows * rows.n_outcomes, n_threads)
    flags = np.zeros(rows.n_rows, dtype=np.int32)
    fn(rows.first, rows.second, rows.first_off, rows.second_off, rows.n_outcomes, *args,
       flags, n_threads)
    V.raise_for_flags(flags, rows)
    return flags


def row_info(logits, rewards, n_threads):
    """(rows, info): per row of the broadcast batch, the columns INFO_* under p."""
    rows = V.prepare_rows(logits, rewards)
    nt = V.n_threads_value(n_threads)
    out = np.empty((rows.n_rows, 7), dtype=np.float64)
    kernel_call(_core.info_rows, rows, out, n_threads=nt)
    return rows, out


def tilt_shift(logits, rewards, lam, n_threads=None):
    """(c, Lambda(lam) - lam c) per element of the broadcast batch of finite ``lam``, with
    c the reward of the outcome that dominates ``phi_lam`` (the argmax of l + lam r).

    The closeness identity ``KL(pi || phi_lam) = KL(pi || p) - lam (E_pi r - c) + (Lambda -
    lam c)`` then has no term of the size of ``lam r``: for ``lam ~ 1e308`` both ``lam E r``
    and ``Lambda`` overflow, while ``Lambda - lam c`` and ``lam (E_pi r - c)`` do not."""
    lam_a = V.param_array(lam, "lam", allow_inf=False)
    rows = V.prepare_rows(logits, rewards, {"lam": lam_a})
    out = np.empty((rows.n_rows, 7), dtype=np.float64)
    kernel_call(_core.tilt_rows, rows, rows.params["lam"], out,
                n_threads=V.n_threads_value(n_threads))
    return (out[:, 5].reshape(rows.batch_shape), out[:, 6].reshape(rows.batch_shape))
