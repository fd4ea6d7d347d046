"""``tiltlab sweep``: the table the Python API gives, written as CSV or parquet or printed;
grid values parsed as ints, reals or text; user tasks as ``package.module:function``;
every error one line with exit status 2, before any cell runs."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import require_distributed

import tiltlab

require_distributed()
pd = pytest.importorskip("pandas", reason="tiltlab sweep needs the distributed extra (pandas)")
pytest.importorskip("pyarrow", reason="parquet output needs pyarrow")

from tiltlab.app.cli import main  # noqa: E402


def _run(capsys, *argv):
    code = main(["sweep", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_csv_equals_the_python_api(tmp_path, capsys):
    out = tmp_path / "t.csv"
    code, _, err = _run(capsys, "sequence_best_of_n", "--grid", "n=1,4,1e6",
                        "--grid", "length=10,100", "--workers", "1", "--out", str(out))
    assert code == 0, err
    assert f"6 cells -> {out}" in err
    got = pd.read_csv(out)
    want = tiltlab.sweep("sequence_best_of_n",
                         {"model": ["ternary"], "n": [1, 4, 1_000_000], "length": [10, 100]},
                         n_workers=1, progress=False)
    assert list(got.columns) == list(want.columns)
    assert got["n"].tolist() == [1, 1, 4, 4, 1_000_000, 1_000_000]   # 1e6 read as an int
    for c in want.columns:
        if want[c].dtype.kind == "f":
            # CSV keeps 17 significant digits: the float round-trips exactly
            np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=c)
        else:
            assert got[c].tolist() == want[c].tolist(), c


def test_parquet_keeps_arrays_and_csv_writes_them_as_json(tmp_path, capsys):
    args = ["simulate_best_of_n", "--model", "ternary,bernoulli", "--grid", "n=4",
            "--grid", "size=2000", "--seed", "7", "--workers", "1", "-q"]
    pq, csv = tmp_path / "t.parquet", tmp_path / "t.csv"
    assert _run(capsys, *args, "--out", str(pq))[0] == 0
    assert _run(capsys, *args, "--out", str(csv))[0] == 0
    want = tiltlab.sweep("simulate_best_of_n",
                         {"model": ["ternary", "bernoulli"], "n": [4], "size": [2000]},
                         seed=7, n_workers=1, progress=False)
    got = pd.read_parquet(pq)
    assert got["model"].tolist() == ["ternary", "bernoulli"]
    for a, b in zip(got["counts"], want["counts"], strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    flat = pd.read_csv(csv)
    assert [json.loads(v) for v in flat["counts"]] == [b.tolist() for b in want["counts"]]
    assert int(sum(json.loads(flat["counts"][0]))) == 2000


def test_printed_table_and_a_rerun_from_the_checkpoint(tmp_path, capsys):
    ck = tmp_path / "ck.parquet"
    args = ["best_of_n", "--grid", "n=1,2,inf", "--workers", "1", "--checkpoint", str(ck)]
    code, out, _ = _run(capsys, *args)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "n", "kl"]
    assert len(lines) == 4 and lines[3].split()[1] == "inf"
    assert ck.is_file()
    code, out2, _ = _run(capsys, *args)
    assert code == 0 and out2 == out


def test_a_user_task_by_module_and_name(tmp_path, capsys, monkeypatch):
    (tmp_path / "mytasks.py").write_text(textwrap.dedent("""
        def square(x, rng):
            return {"y": x * x, "u": float(rng.random())}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = _run(capsys, "mytasks:square", "--grid", "x=1,2,3", "--workers", "1",
                          "--seed", "3")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["x", "y", "u"]        # no model column for a user task
    assert [r[1] for r in rows[1:]] == ["1", "4", "9"]
    import mytasks
    want = tiltlab.sweep(mytasks.square, {"x": [1, 2, 3]}, seed=3, n_workers=1,
                         progress=False)
    assert [float(r[2]) for r in rows[1:]] == pytest.approx(want["u"].tolist(), rel=1e-6)


@pytest.mark.parametrize(("argv", "needle"), [
    (["nope", "--grid", "n=1"], "task must be one of"),
    (["best_of_n", "--grid", "n=1,x"], "grid['n']"),
    (["best_of_n", "--grid", "n"], "--grid expects NAME=V1,V2"),
    (["best_of_n", "--grid", "n="], "has no values"),
    (["best_of_n", "--grid", "n=1", "--grid", "n=2"], "names 'n' twice"),
    (["best_of_n", "--grid", "n=4", "--model", "nosuch"], "unknown model 'nosuch'"),
    (["best_of_n", "--grid", "n=4", "--out", "t.txt"], "--out must end in .csv or .parquet"),
    (["best_of_n", "--grid", "n=4", "--grid", "model=ternary", "--model", "bernoulli"],
     "not both"),
    (["best_of_n", "--grid", "lam=1"], "lam"),
    (["nosuchmodule:f", "--grid", "x=1"], "cannot import"),
    (["best_of_n", "--grid", "n=4", "--out", "no-such-folder/t.csv"],
     "folder does not exist or is not writable"),
    (["best_of_n", "--grid", "n=4,0.5"], "must be >= 1"),
])
def test_errors_are_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, *argv, "--workers", "1")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("tiltlab sweep: error: "), err
    assert needle in err
    assert list(tmp_path.iterdir()) == []           # nothing written


def test_the_console_script_and_its_help():
    r = subprocess.run([sys.executable, "-m", "tiltlab", "sweep", "--help"],
                       capture_output=True, text=True, check=True)
    for word in ("--grid", "--workers", "--scheduler", "--checkpoint", "--out",
                 "simulate_best_of_n", "package.module:function"):
        assert word in r.stdout
    r = subprocess.run([sys.executable, "-m", "tiltlab", "sweep", "best_of_n", "--workers",
                        "2", "--scheduler", "tcp://127.0.0.1:1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not allowed with argument" in r.stderr


def test_the_console_script_imports_a_task_from_the_current_folder(tmp_path):
    (tmp_path / "mytasks2.py").write_text("def cube(x, rng):\n    return {'y': x ** 3}\n")
    script = pathlib.Path(sys.executable).with_name("tiltlab")
    if not script.exists():
        pytest.skip("no tiltlab console script next to this Python")
    r = subprocess.run([str(script), "sweep", "mytasks2:cube", "--grid", "x=2,3",
                        "--workers", "1", "-q"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [line.split() for line in r.stdout.splitlines()] == [["x", "y"], ["2", "8"],
                                                                ["3", "27"]]


def test_a_missing_extra_is_one_line_naming_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow", None)      # as if not installed
    code, _, err = _run(capsys, "best_of_n", "--grid", "n=4", "--workers", "1",
                        "--checkpoint", str(tmp_path / "ck.parquet"))
    assert code == 2 and err.count("\n") == 1
    assert "distributed extra" in err and "missing here: pyarrow" in err
    assert list(tmp_path.iterdir()) == []
