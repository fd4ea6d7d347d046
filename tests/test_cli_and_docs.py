"""The placeholder command line and the docstring examples (run against the installed
package)."""

from __future__ import annotations

import doctest
import importlib.util
import subprocess
import sys

import pytest

import tiltlab
import tiltlab.app.models
import tiltlab.bestofn
import tiltlab.divergence
import tiltlab.estimators
import tiltlab.largedev
import tiltlab.policies
import tiltlab.reference
import tiltlab.sampling
import tiltlab.sequences.lattice
import tiltlab.sequences.markov
import tiltlab.sequences.memoryless
import tiltlab.simd
import tiltlab.special
import tiltlab.tilting

DOCTESTED = [tiltlab.tilting, tiltlab.special, tiltlab.divergence, tiltlab.bestofn,
             tiltlab.sequences.memoryless, tiltlab.sequences.lattice, tiltlab.largedev,
             tiltlab.app.models, tiltlab.policies, tiltlab.estimators, tiltlab.sampling,
             tiltlab.simd, tiltlab.reference, tiltlab.sequences.markov]


# examples of real-data models say "needs the ``data`` extra" in their docstring; they run
# where wordfreq (the data the english-letters model reads) is installed
HAVE_WORDFREQ = importlib.util.find_spec("wordfreq") is not None


@pytest.mark.parametrize("module", DOCTESTED, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(module):
        if not HAVE_WORDFREQ and "needs the ``data`` extra" in (test.docstring or "").lower():
            continue
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


def test_every_module_with_examples_is_doctested():
    """Every public module (library and tiltlab.app) whose docstrings hold examples is in
    DOCTESTED (tiltlab.app.report's are run by tests/test_reproduce.py, which has the
    plotting extra at hand, and tiltlab.app.sweep's by tests/test_sweep.py, with the
    distributed extra)."""
    import pathlib
    import pkgutil

    pkg = pathlib.Path(tiltlab.__file__).parent
    with_examples = set()
    for info in pkgutil.walk_packages([str(pkg)], prefix="tiltlab."):
        leaf = info.name.rpartition(".")[2]
        path = pkg.parent.joinpath(*info.name.split(".")).with_suffix(".py")
        if not leaf.startswith("_") and path.exists() and ">>>" in path.read_text():
            with_examples.add(info.name)
    assert "tiltlab.app.models" in with_examples     # the walk reaches the app package
    assert with_examples - {m.__name__ for m in DOCTESTED} == {"tiltlab.app.report",
                                                              "tiltlab.app.sweep"}


def test_cli_demo_prints_bernoulli_table():
    out = subprocess.run([sys.executable, "-m", "tiltlab"], capture_output=True, text=True,
                         check=True).stdout
    assert "0.4157352218" in out  # Lambda(1) of SPEC section 8
    assert "0.9058310508" in out or "0.5146291211" in out


def test_cli_info():
    out = subprocess.run([sys.executable, "-m", "tiltlab", "info"], capture_output=True,
                         text=True, check=True).stdout
    assert "openmp" in out and tiltlab.__version__ in out


def test_every_public_function_has_a_docstring_with_an_example():
    import inspect

    for name in tiltlab.__all__:
        obj = getattr(tiltlab, name)
        if inspect.isfunction(obj) and name != "build_info":
            doc = obj.__doc__ or ""
            assert "Examples" in doc and "Parameters" in doc and "Returns" in doc, name
