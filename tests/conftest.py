"""Shared fixtures, hypothesis strategies and profiles for the tiltlab tests.

Hypothesis profiles: ``ci`` (default, bounded) and ``long`` (select with
``--hypothesis-profile=long`` or HYPOTHESIS_PROFILE=long).

Fuzz tests (marker ``fuzz``, tests/test_fuzz.py, with their own profiles ``fuzz-ci`` and
``fuzz-long`` chosen by TILTLAB_FUZZ_PROFILE) are skipped by the default run
(``python -m pytest tests``): :func:`pytest_collection_modifyitems` skips every item
marked ``fuzz`` unless the ``-m`` expression mentions fuzz (``-m fuzz``) or the
environment variable TILTLAB_FUZZ is set to a non-empty value other than ``0``
(``TILTLAB_FUZZ=1 python -m pytest tests`` runs everything).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "long", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    """Skip ``fuzz`` tests unless ``-m`` mentions fuzz or TILTLAB_FUZZ is set."""
    if "fuzz" in (config.getoption("markexpr", default="") or ""):
        return
    if os.environ.get("TILTLAB_FUZZ", "") not in ("", "0"):
        return
    skip = pytest.mark.skip(reason="fuzz test: select with -m fuzz or set TILTLAB_FUZZ=1")
    for item in items:
        if item.get_closest_marker("fuzz") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def torch():
    """The torch module (tests/test_interop.py).  Without torch the test is skipped, unless
    the environment variable TILTLAB_REQUIRE_TORCH is set to a non-empty value other than
    ``0`` (CI, .ci/run): a missing torch then fails the test, so CI never skips them."""
    if os.environ.get("TILTLAB_REQUIRE_TORCH", "") not in ("", "0"):
        try:
            import torch
        except ImportError as exc:
            pytest.fail(f"TILTLAB_REQUIRE_TORCH is set but torch cannot be imported: {exc}")
        return torch
    return pytest.importorskip("torch")


@pytest.fixture
def bernoulli():
    """Bernoulli token: p(1) = 0.3, r(y) = y (SPEC section 8)."""
    return np.log([0.7, 0.3]), np.array([0.0, 1.0])


@pytest.fixture
def ternary():
    """p = (0.5, 0.3, 0.2), r = (0, 1, 3)."""
    return np.log([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 3.0])


@st.composite
def rows(draw, max_rows=3, max_outcomes=24, logit_scale=30.0, reward_scale=10.0,
         neg_inf=True, ties=True):
    """(logits, rewards) with a random batch of rows; every row has a finite logit."""
    n_rows = draw(st.integers(1, max_rows))
    v = draw(st.integers(1, max_outcomes))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n_rows, v)) * draw(st.sampled_from([0.1, 1.0, logit_scale]))
    if neg_inf and draw(st.booleans()):
        mask = rng.random((n_rows, v)) < draw(st.sampled_from([0.2, 0.5, 0.9]))
        mask[np.arange(n_rows), rng.integers(0, v, n_rows)] = False
        logits[mask] = -np.inf
    kind = draw(st.sampled_from(["normal", "integer", "binary"] if ties else ["normal"]))
    if kind == "normal":
        rewards = rng.normal(size=(n_rows, v)) * reward_scale
    elif kind == "integer":
        rewards = rng.integers(-3, 4, size=(n_rows, v)).astype(float)
    else:
        rewards = rng.integers(0, 2, size=(n_rows, v)).astype(float)
    if draw(st.booleans()):
        rewards = rewards + draw(st.sampled_from([-1e3, 0.5, 1e3]))
    return logits, rewards


lams = st.one_of(
    st.floats(-50, 50, allow_nan=False),
    st.sampled_from([0.0, np.inf, -np.inf, 1e-8, -1e-8, 1e5, -1e5]),
)


def require_distributed() -> None:
    """The sweep tests skip without the distributed extra (dask.distributed, pandas,
    pyarrow), unless TILTLAB_REQUIRE_DISTRIBUTED is set to a non-empty value other than
    ``0`` (CI, .ci/run): a missing module then fails the test module instead."""
    if os.environ.get("TILTLAB_REQUIRE_DISTRIBUTED", "") in ("", "0"):
        return
    for mod in ("pandas", "pyarrow", "dask", "distributed"):
        try:
            __import__(mod)
        except ImportError as exc:
            pytest.fail(f"TILTLAB_REQUIRE_DISTRIBUTED is set but {mod} cannot be imported: "
                        f"{exc}", pytrace=False)
