"""A token model: one token distribution ``p`` (as logits) with a reward per token.

:class:`Model` is the value the application (``tiltlab.app.models``: the built-in models,
``.npz`` files, ``english-sentiment``; ``tiltlab reproduce``; sweeps) passes around.  It is
part of the library, not of the application, because what it holds is checked by the
library's own rules for outcome arrays (SPEC section 1: a masked logit is an impossible
outcome, a masked reward is allowed only there; DLPack / CPU torch tensors are read; the
arrays are the object's own read-only float64 copies), exactly as every library function
checks its ``logits`` and ``rewards``.  The loaders that build models live in
:mod:`tiltlab.app.models` (also importable as ``tiltlab.models``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Model"]


@dataclass(frozen=True)
class Model:
    """A token model: ``p = softmax(logits)`` over ``V`` tokens and a reward per token.

    Attributes
    ----------
    name : str
        Short name (``ternary``, ``english-sentiment``, the file name of a user model).
    logits, rewards : ndarray, shape (V,)
        Log-probabilities (normalised) and rewards, float64.
    names : ndarray of str, shape (V,)
        Token names (words for ``english-sentiment``; ``"0"``, ``"1"``, ... otherwise).
    description : str
        One line saying what the model is.
    step : float or None
        Reward lattice step to use for sequences (None: detect it).
    source : dict
        Provenance: package versions for real-data models, the path for user files.

    The arrays are the model's own copies (float64 for ``logits`` and ``rewards``) and
    read-only.  A masked logit is ``-inf``; a reward may be masked only where the logit is
    masked or ``-inf``; masked ``names`` are refused (SPEC section 1).  Models are usually
    made by :func:`tiltlab.load_model`.
    """

    name: str
    logits: np.ndarray
    rewards: np.ndarray
    names: np.ndarray
    description: str
    step: float | None = None
    source: dict = field(default_factory=dict)

    def __post_init__(self):
        from tiltlab import _interop as interop
        from tiltlab import _validation as V

        logits, rewards = V.owned_outcomes(interop.asarray(self.logits, "logits"),
                                           interop.asarray(self.rewards, "rewards"))
        names = V.readonly(np.array(V.refuse_mask(self.names, "names")))
        for key, value in (("logits", logits), ("rewards", rewards), ("names", names)):
            object.__setattr__(self, key, value)

    @property
    def vocab_size(self) -> int:
        return int(self.logits.shape[-1])

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.logits)
