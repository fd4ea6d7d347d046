"""Honest NumPy baselines that are not part of tiltlab (for benchmark context only).

``numpy_simple_tilt_stats`` is what a researcher writes in a few lines (SPEC section 7's
"straightforward NumPy: max, exp, three sums"): fast-ish, but it returns log Z of the
tilted weights (not Lambda relative to the normalised p), loses all digits of the KL for
small tilts and overflows nothing only because it max-shifts.  It is the speed bar that
tiltlab.reference (which is written for accuracy, and is slower) is not.
"""

from __future__ import annotations

import numpy as np


def numpy_simple_tilt_stats(logits, rewards, lam):
    x = logits + lam * rewards
    m = x.max(axis=-1, keepdims=True)
    w = np.exp(x - m)
    z = w.sum(axis=-1)
    mean = (w * rewards).sum(axis=-1) / z
    second = (w * rewards * rewards).sum(axis=-1) / z
    log_z = np.log(z) + m[..., 0]
    return log_z, mean, second - mean * mean
