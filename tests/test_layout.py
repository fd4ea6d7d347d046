"""The package layout and its arrows (issue 19 item 4), read from the source with ``ast``.

``tiltlab/`` is the numerical library, ``tiltlab/app/`` the application around it (command
line, models of experiments, experiments, report, sweeps).  Checked here, for every module of
the installed package (function-level imports included):

* the library imports nothing from ``tiltlab.app``, except the package façade
  ``tiltlab/__init__.py`` (re-exports, old module paths) and ``tiltlab/__main__.py``
  (``python -m tiltlab`` runs the command line);
* the application uses the library through its public API only: no private library module
  (``tiltlab._validation``, ``tiltlab._core``, ...), no underscored name of any module; it
  may import its own private modules (``tiltlab.app._staging``);
* no module imports another module's underscored name, or reads one as an attribute of an
  imported module (the project rule).  A package's private module (``from tiltlab import
  _validation`` in the library) is not a private name: it is the package's own.  The
  library's present exceptions are listed exactly in KNOWN_PRIVATE_IMPORTS: a new one fails.
"""

from __future__ import annotations

import ast
import functools
import pathlib
import subprocess
import sys

import pytest

import tiltlab

PKG = pathlib.Path(tiltlab.__file__).resolve().parent

# The library's uses of another module's underscored names (imported, or read as an
# attribute of an imported module), by exact (importer, module, name): none since issue 20
# item 7 moved the shared helpers into private modules (tiltlab._common, tiltlab._legendre,
# tiltlab.sequences._tilted).  An exception, if one is ever needed, is listed here exactly:
# any other one fails the test, and an entry that disappears must be removed.
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()

# the only library files that may import the application
FACADE = {"tiltlab", "tiltlab.__main__"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


@functools.cache
def _is_module(name: str) -> bool:
    """Whether the dotted name is a module or package of tiltlab (source, Cython or built)."""
    parts = name.split(".")
    if parts[0] != "tiltlab":
        return False
    base = PKG.parent.joinpath(*parts)
    if base.is_dir() and (base / "__init__.py").exists():
        return True
    return any(p.suffix in (".py", ".pyx", ".so", ".pyd")
               for p in base.parent.glob(base.name + ".*") if p.name.split(".")[0] == base.name)


def _is_private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _package_of(modname: str) -> str:
    return modname if MODULES[modname].name == "__init__.py" else modname.rpartition(".")[0]


def _imports(modname: str):
    return _imports_of(modname, MODULES[modname])


@functools.cache
def _imports_of(modname: str, path: pathlib.Path):
    """(kind, module, name, line) for every tiltlab import of a module: kind "module" (the
    module ``module`` is imported) or "name" (``name`` is imported from ``module``), and
    "attr" for ``alias._name`` read on an imported tiltlab module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bound = {}                       # local name -> tiltlab module it refers to
    found = []
    pkg = _package_of(modname)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "tiltlab":
                    found.append(("module", a.name, None, node.lineno))
                    if a.asname:
                        bound[a.asname] = a.name
                    else:
                        bound[a.name.split(".")[0]] = "tiltlab"
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] != "tiltlab":
                continue
            for a in node.names:
                full = f"{base}.{a.name}"
                if _is_module(full):
                    found.append(("module", full, None, node.lineno))
                    bound[a.asname or a.name] = full
                else:
                    found.append(("name", base, a.name, node.lineno))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            base = _resolve(node.value, bound)
            if base is None or not _is_module(base):
                continue
            target = f"{base}.{node.attr}"
            if _is_module(target):
                found.append(("module", target, None, node.lineno))
            else:
                found.append(("attr", base, node.attr, node.lineno))
    return found


def _resolve(node, bound: dict) -> str | None:
    """The dotted tiltlab name an expression ``a.b.c`` stands for (None: not one)."""
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, bound)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _violations():
    """Every breach of the arrows, as (importer, imported module, name or None, why)."""
    out = []
    for modname in MODULES:
        in_app = modname == "tiltlab.app" or modname.startswith("tiltlab.app.")
        own = _package_of(modname)
        for kind, module, name, line in _imports(modname):
            path = MODULES[modname]
            shown = path.relative_to(PKG.parent) if path.is_relative_to(PKG.parent) else path
            where = f"{shown}:{line}"
            to_app = module == "tiltlab.app" or module.startswith("tiltlab.app.")
            if to_app and not in_app and modname not in FACADE:
                out.append((modname, module, name, f"{where}: the library imports the app"))
            if kind == "module":
                parent, _, leaf = module.rpartition(".")
                private = [p for p in module.split(".") if _is_private(p)]
                # a private module may be used by its own package and the package's library
                # subpackages (tiltlab.sequences uses tiltlab._validation), never across the
                # line between the library and the application
                inside = own == parent or own.startswith(parent + ".")
                app_side = parent == "tiltlab.app" or parent.startswith("tiltlab.app.")
                if private and not (inside and in_app == app_side and _is_private(leaf)
                                    and not any(_is_private(p) for p in parent.split("."))):
                    out.append((modname, module, None,
                                f"{where}: private module of another package"))
            elif _is_private(name) and module != modname:
                out.append((modname, module, name,
                            f"{where}: another module's underscored name"))
    return out


def test_every_module_is_found():
    assert {"tiltlab", "tiltlab.bestofn", "tiltlab.tokenmodel", "tiltlab.app",
            "tiltlab.app.cli", "tiltlab.app.models", "tiltlab.app.report",
            "tiltlab.app.experiments", "tiltlab.app._staging"} <= set(MODULES)
    # the application is no longer at the top level
    for old in ("cli", "models", "report", "experiments", "_staging"):
        assert not (PKG / f"{old}.py").exists(), old


def test_arrows_run_one_way():
    """The library never imports the app (façade excepted); the app uses public API only;
    nobody imports another module's private name (the known list excepted, exactly)."""
    found = _violations()
    known = {(m, mod, n) for m, mod, n, _ in found if (m, mod, n) in KNOWN_PRIVATE_IMPORTS}
    new = [v for v in found if (v[0], v[1], v[2]) not in KNOWN_PRIVATE_IMPORTS]
    assert not new, "layout violations:\n" + "\n".join(v[3] + f" ({v[1]} {v[2] or ''})"
                                                         for v in new)
    # the known list is exact: an entry that no longer occurs must be removed from it
    assert known == KNOWN_PRIVATE_IMPORTS, KNOWN_PRIVATE_IMPORTS - known


@pytest.mark.parametrize("module, source, expected", [
    ("tiltlab.planted", "from tiltlab.app.models import load_model",
     "the library imports the app"),
    ("tiltlab.planted", "import tiltlab.app.report", "the library imports the app"),
    ("tiltlab.planted", "from tiltlab.bestofn import _generators",
     "another module's underscored name"),
    ("tiltlab.planted", "from tiltlab.app import _staging", "private module of another package"),
    ("tiltlab.planted", "import tiltlab\nx = tiltlab.bestofn._log_n_param",
     "another module's underscored name"),
    ("tiltlab.app.planted", "from tiltlab import _validation",
     "private module of another package"),
    ("tiltlab.app.planted", "import tiltlab._core", "private module of another package"),
    ("tiltlab.app.planted", "import tiltlab\ntiltlab._openmp",
     "private module of another package"),
    ("tiltlab.app.planted", "from tiltlab.app.experiments import _col",
     "another module's underscored name"),
    # a subpackage's private module is its own, not its parent package's
    ("tiltlab.planted", "from tiltlab.sequences import _tilted",
     "private module of another package"),
    ("tiltlab.sequences.planted", "from tiltlab.sequences.memoryless import _EXACT_WORK",
     "another module's underscored name"),
])
def test_the_checker_sees_each_kind_of_violation(tmp_path, monkeypatch, module, source,
                                                 expected):
    """The checker is not vacuous: each kind of breach, planted in a library module
    (tiltlab.planted) or an app module (tiltlab.app.planted)."""
    fake = tmp_path / "planted.py"
    fake.write_text(source + "\n")
    monkeypatch.setitem(MODULES, module, fake)
    got = [v for v in _violations() if v[0] == module]
    assert any(expected in v[3] for v in got), got


@pytest.mark.parametrize("module, source", [
    ("tiltlab.sequences.planted", "from tiltlab import _validation as V\n"
                                  "from tiltlab._common import generators"),
    ("tiltlab.sequences.planted", "from tiltlab.sequences import _tilted"),
    ("tiltlab.app.planted", "from tiltlab.app import _staging"),
])
def test_the_checker_allows_a_package_its_private_modules(tmp_path, monkeypatch, module,
                                                          source):
    """The library's subpackages use the library's private modules (and their own); the
    app its own only (the cases above)."""
    fake = tmp_path / "planted.py"
    fake.write_text(source + "\n")
    monkeypatch.setitem(MODULES, module, fake)
    assert [v for v in _violations() if v[0] == module] == []


def test_old_module_paths_are_the_app_modules():
    import tiltlab.cli
    import tiltlab.experiments
    import tiltlab.models
    import tiltlab.report

    import tiltlab.app.cli
    import tiltlab.app.experiments
    import tiltlab.app.models
    import tiltlab.app.report
    from tiltlab import models

    assert tiltlab.models is models is tiltlab.app.models
    assert tiltlab.report is tiltlab.app.report
    assert tiltlab.experiments is tiltlab.app.experiments
    assert tiltlab.cli is tiltlab.app.cli
    assert sys.modules["tiltlab.models"] is tiltlab.app.models
    assert tiltlab.models.english_sentiment is tiltlab.app.models.english_sentiment
    assert tiltlab.load_model is tiltlab.app.models.load_model
    assert tiltlab.reproduce is tiltlab.app.report.reproduce
    assert tiltlab.Model is tiltlab.app.models.Model is tiltlab.tokenmodel.Model
    assert tiltlab.app.models.__name__ == "tiltlab.app.models"   # the canonical name


def test_sequence_models_are_found_where_they_were():
    """Sequence models live in tiltlab/sequences/; tiltlab.memoryless is the module
    tiltlab.sequences.memoryless, and every public name is where it was."""
    code = ("import tiltlab.memoryless as old\n"
            "from tiltlab.memoryless import Asymptotics, LatticeLaw, Memoryless, "
            "SequenceBestOfN\n"
            "import tiltlab, tiltlab.sequences.memoryless as new\n"
            "import tiltlab.sequences.lattice as lat\n"
            "assert old is new is tiltlab.memoryless and new.__name__ == "
            "'tiltlab.sequences.memoryless'\n"
            "assert Memoryless is tiltlab.Memoryless is tiltlab.sequences.Memoryless\n"
            "for c in (LatticeLaw, SequenceBestOfN, Asymptotics):\n"
            "    assert c is getattr(tiltlab, c.__name__) is getattr(lat, c.__name__)\n"
            "print(sorted(old.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['Asymptotics', 'LatticeLaw', 'Memoryless', 'SequenceBestOfN']"


def test_old_paths_in_a_fresh_process():
    code = ("import sys, tiltlab\n"
            "assert 'tiltlab.app.cli' not in sys.modules and 'argparse' not in sys.modules\n"
            "import tiltlab.app.cli as c\n"           # the real module first, then the alias
            "import tiltlab.models, tiltlab.report\n"
            "from tiltlab.experiments import EXPERIMENTS\n"
            "from tiltlab.cli import main\n"
            "import tiltlab.cli\n"
            "import tiltlab.app.models as m\n"
            "assert tiltlab.models is m and tiltlab.cli is c and main is c.main\n"
            "assert c.__spec__.name == 'tiltlab.app.cli' and c.__name__ == 'tiltlab.app.cli'\n"
            "print(len(EXPERIMENTS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "8"


def test_import_tiltlab_leaves_the_command_line_unloaded():
    """``import tiltlab`` does not load the command line (nor argparse); ``tiltlab.cli`` then
    loads it on first use, as the module tiltlab.app.cli itself."""
    code = ("import sys, tiltlab\n"
            "print(sorted(m for m in ('argparse', 'tiltlab.app.cli', 'tiltlab.cli') "
            "if m in sys.modules))\n"
            "print(tiltlab.cli is sys.modules['tiltlab.app.cli'], tiltlab.cli.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["[]", "True tiltlab.app.cli"]


@pytest.mark.parametrize("module", ["tiltlab", "tiltlab.cli", "tiltlab.app.cli"])
def test_python_m_runs_the_command_line(module):
    run = subprocess.run([sys.executable, "-m", module, "info"], capture_output=True,
                         text=True, check=True)
    assert run.stdout.startswith(f"tiltlab {tiltlab.__version__} ")
    assert run.stderr == ""         # no runpy warning about a module imported twice
