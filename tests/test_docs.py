"""The documentation site (docs/): every public name has an API page, and the tour's
examples run.  (The site itself is built by ``python -m sphinx -W -b html docs
docs/_build/html`` in CI, not here.)"""

from __future__ import annotations

import doctest
import importlib
import pathlib
import pkgutil
import re

import pytest

import tiltlab

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
# the tests run against the installed package, from the repository or from a copy of tests/
# that has docs/ next to it (.ci/run copies both)
pytestmark = pytest.mark.skipif(not (DOCS / "api" / "index.rst").is_file(),
                                reason="no docs/ next to tests/")


def _documented() -> set[str]:
    """Full names listed in the autosummary tables of docs/api/index.rst (each gets its page)."""
    names, module = set(), "tiltlab"
    in_table = False
    for line in (DOCS / "api" / "index.rst").read_text(encoding="utf-8").splitlines():
        if m := re.match(r"\.\. (?:currentmodule|automodule):: (\S+)", line):
            module, in_table = m.group(1), False
        elif line.startswith(".. autosummary::"):
            in_table = True
        elif in_table and line.startswith("   ") and not line.strip().startswith(":"):
            names.add(f"{module}.{line.strip()}")
        elif line and not line.startswith(" "):
            in_table = False
    return names


def _public_modules() -> list[str]:
    """The public modules of the library and of the application (tiltlab.app.*), by their
    canonical names (the command line excepted: it has no API)."""
    pkg = pathlib.Path(tiltlab.__file__).parent
    return sorted(i.name for i in pkgutil.walk_packages([str(pkg)], prefix="tiltlab.")
                  if not any(part.startswith("_") for part in i.name.split("."))
                  and not i.ispkg and i.name != "tiltlab.app.cli")


def test_public_modules_include_the_application():
    mods = _public_modules()
    assert {"tiltlab.app.models", "tiltlab.app.report", "tiltlab.app.experiments",
            "tiltlab.bestofn", "tiltlab.tokenmodel"} <= set(mods)
    assert not any(m in mods for m in ("tiltlab.app.cli", "tiltlab.app._staging",
                                       "tiltlab._validation"))


def test_every_public_name_has_an_api_page():
    documented = _documented()
    missing = [f"tiltlab.{n}" for n in tiltlab.__all__ if f"tiltlab.{n}" not in documented]
    for modname in _public_modules():
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            top = getattr(tiltlab, name, None) is obj and name in tiltlab.__all__
            if f"{modname}.{name}" not in documented and not top:
                missing.append(f"{modname}.{name}")
    assert not missing, f"add to docs/api/index.rst: {missing}"


def test_api_pages_name_only_existing_objects():
    for full in _documented():
        modname, _, name = full.rpartition(".")
        assert hasattr(importlib.import_module(modname), name), full


def test_every_public_module_has_all():
    """The check above reads __all__: a public module without one would escape it."""
    for modname in _public_modules():
        assert hasattr(importlib.import_module(modname), "__all__"), modname


def test_guide_examples():
    result = doctest.testfile(str(DOCS / "guide.md"), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10
    assert result.failed == 0
