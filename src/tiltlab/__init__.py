"""tiltlab: exact, fast numerics for the theory of language-model alignment.

The optimal KL-constrained policy (the exponential tilt ``phi_lam ∝ p e^(lam r)``),
best-of-N sampling and their asymptotics for memoryless sequences, after *Asymptotics of
Language Model Alignment* (arXiv 2404.01730): exact values (or a clear error) from compiled,
threaded kernels, and drop-in replacements for the SciPy / PyTorch calls research scripts
use.  Arrays broadcast NumPy-style with outcomes on the last axis; CPU torch tensors are
accepted and returned; float32 stays float32.  The docstrings cite the sections of
docs/SPEC.md for the formulas.

Public functions by topic
-------------------------
Optimal policy (tilting, SPEC 2)
    tilt_stats, tilt, solve_lambda, kl_max, frontier, cumulants
Sampling (SPEC 2.1, 3)
    sample_categorical, sample_tilted, sample_best_of_n, simulate_best_of_n
Best-of-N, exactly (SPEC 3)
    best_of_n (BestOfN), reward_levels (RewardLevels), beirami_kl_estimate
Memoryless sequences (SPEC 4)
    Memoryless (LatticeLaw, SequenceBestOfN, Asymptotics)
Markov sequences (SPEC 9)
    Markov
Large deviations and Renyi quantities
    rate_function, scaled_cgf, renyi_cross_entropy, renyi_divergence
Other inference-time policies
    soft_best_of_n, worst_of_n, best_of_poisson, rewind_and_repeat, calibrated_tilt,
    policy_frontier (PolicyLaw, Frontier)
KL estimators against exact values
    kl_estimators (KLEstimates), estimator_study (EstimatorStudy)
SciPy-compatible special functions
    tiltlab.special: logsumexp (also tiltlab.logsumexp), softmax, log_softmax
Divergences
    kl_divergence
Models, the report and sweeps (the application, tiltlab.app)
    Model, load_model, tiltlab.app.models, reproduce, sweep (needs the ``distributed`` extra)
Build and CPU
    build_info, tiltlab.simd (SIMD variant in use, forcing one)

Layout: ``tiltlab/`` is the numerical library; ``tiltlab/app/`` is the application around
it (command line, models of experiments, experiments, report, sweeps), which uses the library's
public API only.  The old module paths ``tiltlab.models``, ``tiltlab.report``,
``tiltlab.experiments`` and ``tiltlab.cli`` are aliases of the ``tiltlab.app`` modules (the
same module objects), kept so existing scripts work.  Sequence models live in
``tiltlab/sequences/``; ``tiltlab.memoryless`` is ``tiltlab.sequences.memoryless``.
"""

import importlib
import importlib.machinery
import os
import sys
import warnings

from tiltlab import (
    _openmp,  # noqa: F401  (first: sets up OpenMP before it starts)
    simd,
    special,  # noqa: F401  (tiltlab.special: softmax, log_softmax, logsumexp)
)
from tiltlab._version import __version__

# the application (tiltlab/app/, public API users only): its public names, and its modules
# under their old paths (aliases below)
from tiltlab.app import experiments, models, report
from tiltlab.app.models import load_model
from tiltlab.app.report import reproduce
from tiltlab.app.sweep import sweep
from tiltlab.bestofn import (
    BestOfN,
    RewardLevels,
    beirami_kl_estimate,
    best_of_n,
    reward_levels,
    sample_best_of_n,
    simulate_best_of_n,
)
from tiltlab.divergence import kl_divergence
from tiltlab.estimators import EstimatorStudy, KLEstimates, estimator_study, kl_estimators
from tiltlab.largedev import rate_function, renyi_cross_entropy, renyi_divergence, scaled_cgf
from tiltlab.policies import (
    Frontier,
    PolicyLaw,
    best_of_poisson,
    calibrated_tilt,
    policy_frontier,
    rewind_and_repeat,
    soft_best_of_n,
    worst_of_n,
)
from tiltlab.sampling import sample_categorical, sample_tilted
from tiltlab.sequences import (
    Asymptotics,
    LatticeLaw,
    Markov,
    Memoryless,
    SequenceBestOfN,
    memoryless,
)
from tiltlab.special import logsumexp
from tiltlab.tilting import (
    TiltStats,
    cumulants,
    frontier,
    kl_max,
    solve_lambda,
    tilt,
    tilt_stats,
)
from tiltlab.tokenmodel import Model

# tiltlab.models, tiltlab.report, tiltlab.experiments: the same module objects as
# tiltlab.app.* (imported above for load_model and reproduce); tiltlab.memoryless: the
# module tiltlab.sequences.memoryless
for _name, _module in (("experiments", experiments), ("models", models), ("report", report),
                       ("memoryless", memoryless)):
    sys.modules[f"tiltlab.{_name}"] = _module
del _name, _module

# tiltlab.cli: tiltlab.app.cli, imported on first use only (``import tiltlab`` does not load
# the command line and argparse; ``python -m tiltlab.app.cli`` runs without runpy's warning)
_LAZY_ALIASES = {"tiltlab.cli": "tiltlab.app.cli"}


class _LazyAlias:
    """Meta-path finder and loader: ``import tiltlab.cli`` gives the module tiltlab.app.cli
    itself (its own ``__spec__`` and name kept), and ``python -m tiltlab.cli`` runs it."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name in _LAZY_ALIASES:
            return importlib.machinery.ModuleSpec(name, _LazyAlias)
        return None

    @staticmethod
    def create_module(spec):
        module = importlib.import_module(_LAZY_ALIASES[spec.name])
        spec.loader_state = module.__spec__
        return module

    @staticmethod
    def exec_module(module):
        # the import system has set module.__spec__ to the alias's spec: restore the module's
        alias = module.__spec__
        module.__spec__ = alias.loader_state

    @staticmethod
    def get_code(name):  # runpy (python -m tiltlab.cli)
        import importlib.util

        spec = importlib.util.find_spec(_LAZY_ALIASES[name])
        return spec.loader.get_code(spec.name)


if not any(f is _LazyAlias for f in sys.meta_path):
    sys.meta_path.append(_LazyAlias)


def __getattr__(name: str):
    """``tiltlab.cli`` without importing it first (the lazy alias above)."""
    if f"tiltlab.{name}" in _LAZY_ALIASES:
        return importlib.import_module(f"tiltlab.{name}")
    raise AttributeError(f"module 'tiltlab' has no attribute {name!r}")

__all__ = [
    "__version__",
    "BestOfN",
    "RewardLevels",
    "beirami_kl_estimate",
    "best_of_n",
    "reward_levels",
    "sample_best_of_n",
    "sample_categorical",
    "sample_tilted",
    "simulate_best_of_n",
    "Memoryless",
    "Markov",
    "rate_function",
    "scaled_cgf",
    "renyi_cross_entropy",
    "renyi_divergence",
    "LatticeLaw",
    "SequenceBestOfN",
    "Asymptotics",
    "Model",
    "PolicyLaw",
    "KLEstimates",
    "EstimatorStudy",
    "kl_estimators",
    "estimator_study",
    "Frontier",
    "policy_frontier",
    "best_of_poisson",
    "calibrated_tilt",
    "rewind_and_repeat",
    "soft_best_of_n",
    "worst_of_n",
    "load_model",
    "reproduce",
    "sweep",
    "TiltStats",
    "cumulants",
    "frontier",
    "kl_divergence",
    "kl_max",
    "logsumexp",
    "solve_lambda",
    "tilt",
    "tilt_stats",
    "build_info",
]


def build_info() -> dict:
    """Facts about the compiled core: OpenMP, default thread count, chunk size, and the
    instruction-set variant in use (see :mod:`tiltlab.simd`).

    ``max_threads`` is the number of threads a kernel uses by default; it is 1 in a
    process forked from one that had imported tiltlab (``forked_child`` is then True),
    where every kernel runs on one thread (the parent's OpenMP thread pool does not survive
    fork)."""
    from tiltlab import _core

    return {
        "version": __version__,
        "openmp": _core.openmp_enabled(),
        "max_threads": _core.max_threads(),
        "forked_child": _core.forked_child(),
        "chunk_size": _core.chunk_size(),
        "simd": simd.active(),
        "simd_compiled": list(simd.compiled()),
        "simd_supported": list(simd.available()),
        "simd_forced": os.environ.get(simd.ENV_VAR) or None,
    }



def _select_simd_from_environment() -> None:
    """``TILTLAB_SIMD`` (:mod:`tiltlab.simd`), applied once at import of tiltlab: an unknown
    variant, or one the CPU cannot run, gives a RuntimeWarning and the automatic choice."""
    name = os.environ.get(simd.ENV_VAR, "").strip().lower()
    if name in ("", "auto"):
        simd.select("auto")
        return
    try:
        simd.select(name)
    except ValueError as exc:
        warnings.warn(f"{simd.ENV_VAR}={name!r} ignored: {exc}; using "
                      f"{simd.select('auto')!r}", RuntimeWarning, stacklevel=3)


_select_simd_from_environment()
