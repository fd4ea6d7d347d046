"""Sequence models with an additive reward on a lattice (SPEC section 4).

``tiltlab.sequences.memoryless``
    :class:`~tiltlab.Memoryless`: independent positions, ``R = sum_i r_i(y_i)``.
``tiltlab.sequences.markov``
    :class:`~tiltlab.Markov`: first-order Markov chains (bigram models), rewards per token or
    per transition (SPEC section 9).
``tiltlab.sequences.lattice``
    What the sequence models return: :class:`~tiltlab.LatticeLaw` (the law of ``R`` on its
    lattice), :class:`~tiltlab.SequenceBestOfN` (exact best-of-N over whole sequences) and
    :class:`~tiltlab.Asymptotics`.

The lattice-law machinery the models share (tilted laws of lattice sums, their
convolutions, several tilts stitched, best-of-N from the law) is the private module
``tiltlab.sequences._tilted``.  Every public name is also found at the top level
(``tiltlab.Memoryless``, ...), and ``tiltlab.memoryless`` is ``tiltlab.sequences.memoryless``.
"""

from tiltlab.sequences.lattice import Asymptotics, LatticeLaw, SequenceBestOfN
from tiltlab.sequences.markov import Markov
from tiltlab.sequences.memoryless import Memoryless

__all__ = ["Memoryless", "Markov", "LatticeLaw", "SequenceBestOfN", "Asymptotics"]
