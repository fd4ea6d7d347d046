"""``tiltlab reproduce`` never destroys or mixes a report (issue 15 item 13).

The report is written into a staging folder next to ``--out`` and swapped in whole; killed
at any moment (SIGKILL), the previous report stays byte for byte; a folder it did not write
is refused unless ``--force``.  The kill tests crash the run at every step of the swap
through ``tiltlab.app._staging.checkpoint`` (in forked children of one helper process) and kill
a real ``tiltlab reproduce --quick`` in the middle of its experiments.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import tiltlab
from tiltlab.app import _staging
from tiltlab.app import experiments as X
from tiltlab.app import report as R
from tiltlab.app.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                reason='needs the plot extra: pip install "tiltlab[plot]"')

# the report in place and the re-run: the two fastest experiments, no file name in common
OLD = dict(model="bernoulli", experiments=["frontier"])
NEW = dict(model="ternary", experiments=["large_deviations"])


def _snapshot(folder: Path) -> dict:
    """Every file (hidden ones too) and folder under ``folder``: path -> sha256 or 'dir'."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _report(folder: Path, model: str, experiments: list) -> dict:
    tiltlab.reproduce(model, folder, quiet=True, experiments=experiments)
    return _snapshot(folder)


def _assert_complete(folder: Path, model: str, experiments: list) -> None:
    """``folder`` is one whole report of ``model``: the stamp lists exactly its files."""
    stamp = json.loads((folder / _staging.STAMP).read_text())
    assert stamp["signature"] == _staging.SIGNATURE
    names = sorted(p.name for p in folder.iterdir() if p.name != _staging.STAMP)
    assert stamp["files"] == names
    run = json.loads((folder / "run.json").read_text())
    assert run["model"]["name"] == model and list(run["files"]) == experiments
    figures = sorted(p.name for p in folder.glob("*.png"))
    assert figures == sorted(f"fig{i}_{k}.png" for i, k in enumerate(experiments, 1))
    tables = {t for k in experiments for t in run["files"][k]["tables"]}
    assert {p.name for p in folder.glob("*.csv")} == tables
    assert (folder / "report.md").read_text().count("## Figure") == len(experiments)


def _siblings(folder: Path) -> list:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


# --------------------------------------------------------------------------------------
# (a) SIGKILL at every step, and a real CLI run killed mid-way
# --------------------------------------------------------------------------------------

# one helper process forks a child per step; the child replaces the checkpoint hook by a
# SIGKILL to itself at that step and re-runs the report over the old one.  The helper
# itself never runs a kernel before forking (no OpenMP pool to inherit).
_KILL_AT_STAGE = r"""
import io, json, os, signal, sys
import tiltlab
from tiltlab.app import _staging
from matplotlib.figure import Figure

fig = Figure()                        # load matplotlib and its fonts once, before forking
ax = fig.subplots()
ax.plot([0, 1], label="x")
ax.legend()
fig.savefig(io.BytesIO(), format="png")
jobs, new = json.loads(sys.argv[1]), json.loads(sys.argv[2])
killed = {}
for key, folder in jobs:
    stage, mode = key.split(":")
    pid = os.fork()
    if pid == 0:
        def crash(at, stage=stage):
            if at == stage:
                os.kill(os.getpid(), signal.SIGKILL)
        _staging.checkpoint = crash
        if mode == "renames":                   # the fallback without RENAME_EXCHANGE
            _staging._exchange = lambda a, b: False
        try:
            tiltlab.reproduce(new["model"], folder, quiet=True, experiments=new["experiments"])
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    killed[key] = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
print(json.dumps(killed))
"""

# step:swap mode ("exchange": one renameat2 RENAME_EXCHANGE where the platform has it, else
# the fallback; "renames": the fallback forced, rename the old folder aside then the new in)
STAGES = ["experiment:exchange", "staged:exchange", "swapped:exchange", "removing:exchange",
          "moved-aside:renames", "swapped:renames"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_at_every_step_keeps_a_whole_report(tmp_path, monkeypatch):
    base = tmp_path / "base"
    old = _report(base, **OLD)
    folders = {}
    for stage in STAGES:
        folders[stage] = tmp_path / stage.replace(":", "-") / "report"
        shutil.copytree(base, folders[stage])
    jobs = [[stage, str(folders[stage])] for stage in STAGES]
    res = subprocess.run([sys.executable, "-c", _KILL_AT_STAGE, json.dumps(jobs),
                          json.dumps(NEW)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {stage: True for stage in STAGES}, res.stdout
    for stage in STAGES:
        d = folders[stage]
        step = stage.split(":")[0]
        if step in ("staging", "experiment", "staged"):     # before the swap: untouched
            assert _snapshot(d) == old, stage
            assert any(".tiltlab-staging-" in n for n in _siblings(d)), stage
        elif step == "moved-aside":           # between the two renames: old one, whole, aside
            assert not os.path.lexists(d)
            (backup,) = [d.parent / n for n in _siblings(d) if ".tiltlab-backup-" in n]
            assert _snapshot(backup) == old
        else:                                 # after the swap: the new report, whole
            _assert_complete(d, NEW["model"], NEW["experiments"])
    # the next run puts a moved-aside report back and removes every leftover of the killed
    # run, before it writes anything: crash it right there (a Python exception)
    def stop(at):
        if at == "staging":
            raise RuntimeError("stop after recovery")

    monkeypatch.setattr(_staging, "checkpoint", stop)
    for stage in STAGES:
        d = folders[stage]
        with pytest.raises(RuntimeError, match="stop after recovery"):
            tiltlab.reproduce(NEW["model"], d, quiet=True, experiments=NEW["experiments"])
        assert _siblings(d) == [], (stage, _siblings(d))
        if stage.split(":")[0] in ("swapped", "removing"):
            _assert_complete(d, NEW["model"], NEW["experiments"])
        else:
            assert _snapshot(d) == old, stage


def test_sigkill_of_the_cli_mid_run_leaves_the_old_report(tmp_path):
    """``tiltlab reproduce --quick`` over an existing report, killed with SIGKILL once it
    has written two of its eight figures: the old report is byte for byte as it was (it
    used to hold the new CSVs and figures beside the old report.md and run.json)."""
    after_figure = 2
    out = tmp_path / "report"
    old = _report(out, **OLD)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "tiltlab", "reproduce", "--quick",
                             "--model", "ternary", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    watchdog = threading.Timer(300, proc.kill)     # never hang the suite
    watchdog.start()
    try:
        for line in proc.stdout:
            if f"[{after_figure}/8]" in line:
                break
        else:
            pytest.fail("the run ended before the figure")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert _snapshot(out) == old
    # the next run cleans up after the killed one
    tiltlab.reproduce(**NEW, out=out, quiet=True)
    _assert_complete(out, NEW["model"], NEW["experiments"])
    assert _siblings(out) == []


# --------------------------------------------------------------------------------------
# (b) a folder it did not write is refused, --force replaces it
# --------------------------------------------------------------------------------------

def _one_line(capsys, *needles) -> str:
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in cap.err, cap.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def one_figure(monkeypatch):
    """The command line runs only the frontier experiment (fast)."""
    monkeypatch.setattr(R, "_FIGURE_ORDER", ("frontier",))
    return ["frontier"]


def test_foreign_folder_is_refused_untouched_and_force_replaces_it(tmp_path, capsys,
                                                                   one_figure):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    (out / "data").mkdir()
    (out / "data" / "x.csv").write_text("1,2\n")
    before = _snapshot(out)
    argv = ["reproduce", "--model", "bernoulli", "--quiet", "--out", str(out)]
    assert main(argv) == 2
    _one_line(capsys, "was not written by tiltlab reproduce", "--force")
    assert _snapshot(out) == before and _siblings(out) == []         # nothing touched
    assert main([*argv, "--force"]) == 0
    _assert_complete(out, "bernoulli", one_figure)
    assert not (out / "notes.txt").exists() and _siblings(out) == []


def test_own_report_with_a_foreign_file_is_refused(tmp_path):
    out = tmp_path / "r"
    _report(out, **OLD)
    (out / "my-analysis.ipynb").write_text("{}")
    before = _snapshot(out)
    with pytest.raises(ValueError, match="files the report does not list: my-analysis.ipynb"):
        tiltlab.reproduce(**NEW, out=out, quiet=True)
    assert _snapshot(out) == before and _siblings(out) == []
    tiltlab.reproduce(**NEW, out=out, quiet=True, force=True)
    _assert_complete(out, NEW["model"], NEW["experiments"])


@pytest.mark.parametrize("what", ["file", "cwd", "parent-of-cwd", "forged-stamp"])
def test_refused_targets(tmp_path, monkeypatch, capsys, what):
    """A file, the current folder or its parent (even with --force: the report replaces
    the folder whole), a stamp without the signature: one line, status 2, untouched."""
    target = tmp_path / "t"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    argv = ["reproduce", "--model", "bernoulli", "--quiet"]
    if what == "file":
        target = target / "keep.txt"
        needle = "is not a folder"
    elif what == "cwd":
        monkeypatch.chdir(target)
        needle, argv = "is the current folder", [*argv, "--force"]
    elif what == "parent-of-cwd":
        (target / "sub").mkdir()
        monkeypatch.chdir(target / "sub")
        needle, argv = "is a parent of the current folder", [*argv, "--force"]
    else:
        (target / _staging.STAMP).write_text(json.dumps({"signature": "x", "files": []}))
        needle = f"no {_staging.STAMP} stamp"
    before = _snapshot(tmp_path)
    assert main([*argv, "--out", str(target)]) == 2
    _one_line(capsys, needle)
    assert _snapshot(tmp_path) == before


def test_second_run_on_the_same_folder_is_refused_while_the_first_writes(tmp_path):
    out = tmp_path / "r"
    lock = _staging._Lock(_staging.resolve(out))    # what a running reproduce holds
    try:
        with pytest.raises(ValueError, match="another tiltlab reproduce is writing"):
            tiltlab.reproduce(**OLD, out=out, quiet=True)
    finally:
        lock.release()
    assert _siblings(out) == [] and not out.exists()


# --------------------------------------------------------------------------------------
# (c) re-running over its own report
# --------------------------------------------------------------------------------------

def test_rerun_over_its_own_report_replaces_it_whole(tmp_path, monkeypatch, capsys,
                                                     one_figure):
    """The second run's report holds only its own files: the first run's figure and CSVs
    are gone (they used to stay beside the new report, a mixed folder)."""
    out = tmp_path / "r"
    _report(out, **NEW)
    _report(out, **OLD)
    assert sorted(p.name for p in out.glob("*.png")) == ["fig1_frontier.png"]
    assert not list(out.glob("rate_function.csv")) and _siblings(out) == []
    _assert_complete(out, OLD["model"], OLD["experiments"])
    # through the command line too, with the default folder in the current directory
    monkeypatch.chdir(tmp_path)
    for model in ("ternary", "bernoulli"):
        assert main(["reproduce", "--model", model, "--quiet"]) == 0
    _assert_complete(tmp_path / "tiltlab-report", "bernoulli", one_figure)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "tiltlab-report"]
    assert capsys.readouterr().err == ""


def test_stampless_report_of_an_older_tiltlab_is_recognised(tmp_path):
    """A report written before the stamp existed (its run.json names every file) is
    replaced without --force; the same folder with a foreign file is refused."""
    out = tmp_path / "r"
    _report(out, **OLD)
    (out / _staging.STAMP).unlink()
    before = _snapshot(out)
    (out / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not list: x.txt"):
        tiltlab.reproduce(**NEW, out=out, quiet=True)
    (out / "x.txt").unlink()
    assert _snapshot(out) == before
    tiltlab.reproduce(**NEW, out=out, quiet=True)
    _assert_complete(out, NEW["model"], NEW["experiments"])


def test_out_through_a_symlink_swaps_the_real_folder(tmp_path):
    real = tmp_path / "real"
    _report(real, **OLD)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    tiltlab.reproduce(**NEW, out=link, quiet=True)
    assert link.is_symlink()
    _assert_complete(real, NEW["model"], NEW["experiments"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


# --------------------------------------------------------------------------------------
# (d) no staging folder left behind
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_exception_mid_run_leaves_no_staging_and_the_old_report(tmp_path, monkeypatch, error):
    out = tmp_path / "r"
    old = _report(out, **OLD)

    def broken(ctx):
        raise error("experiment failed")

    monkeypatch.setitem(X.EXPERIMENTS, "cumulants", broken)
    with pytest.raises(error, match="experiment failed"):      # after a figure was written
        tiltlab.reproduce("ternary", out, quiet=True,
                          experiments=["large_deviations", "cumulants"])
    assert _snapshot(out) == old and _siblings(out) == []


@pytest.mark.parametrize("stage", ["staged", "moved-aside"])
def test_exception_during_the_swap_puts_the_old_report_back(tmp_path, monkeypatch, stage):
    out = tmp_path / "r"
    old = _report(out, **OLD)
    if stage == "moved-aside":      # the two-rename fallback: the old folder is put back
        monkeypatch.setattr(_staging, "_exchange", lambda a, b: False)

    def fail(at):
        if at == stage:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(_staging, "checkpoint", fail)
    with pytest.raises(OSError, match="No space left"):
        tiltlab.reproduce(**NEW, out=out, quiet=True)
    assert _snapshot(out) == old and _siblings(out) == []


def test_swap_is_one_atomic_exchange_where_supported(tmp_path, monkeypatch):
    """Where renameat2(RENAME_EXCHANGE) works (Linux), the swap is one step: the run never
    passes through a state without a whole report at --out (no 'moved-aside' step)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    if not _staging._exchange(a, b):
        pytest.skip("no RENAME_EXCHANGE here: the two-rename fallback is used")
    assert (b / "x").read_text() == "a" and not (a / "x").exists()
    out = tmp_path / "r"
    _report(out, **OLD)
    out.chmod(0o750)
    steps = []
    monkeypatch.setattr(_staging, "checkpoint", steps.append)
    tiltlab.reproduce(**NEW, out=out, quiet=True)
    assert steps == ["staging", "experiment", "staged", "swapped", "removing"]
    _assert_complete(out, NEW["model"], NEW["experiments"])
    assert out.stat().st_mode & 0o777 == 0o750          # the folder keeps its permissions
    assert _siblings(out) == ["a", "b"]


def test_cli_io_error_mid_run_is_one_line_and_leaves_the_old_report(tmp_path, monkeypatch,
                                                                    capsys, one_figure):
    """A disk that fills up while the report is written: one line, exit status 2 (it was
    an OSError traceback), the previous report untouched, no staging folder left."""
    out = tmp_path / "r"
    old = _report(out, **OLD)

    def full_disk(path, columns):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(R, "write_csv", full_disk)
    assert main(["reproduce", "--model", "ternary", "--quiet", "--out", str(out)]) == 2
    _one_line(capsys, "tiltlab reproduce: error:", "No space left on device")
    assert _snapshot(out) == old and _siblings(out) == []


def test_cli_broken_pipe_is_still_quiet(monkeypatch):
    """BrokenPipeError is an OSError: `tiltlab bon | head` still ends with status 0."""
    from tiltlab.app import cli

    def closed_pipe(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setitem(cli._COMMANDS, "bon", closed_pipe)
    assert main(["bon"]) == 0


def test_success_leaves_nothing_beside_the_report(tmp_path):
    out = tmp_path / "deep" / "er" / "r"          # parents are created
    tiltlab.reproduce(**OLD, out=out, quiet=True)
    _assert_complete(out, OLD["model"], OLD["experiments"])
    assert _siblings(out) == []
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_default_output_folder_is_ignored_by_git():
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("tiltlab-report/report.md", "docs/tiltlab-report/run.json",
                 "tiltlab-report.tiltlab-staging-12-abcdef01/x.csv",
                 "tiltlab-report.tiltlab-backup-12-abcdef01/x.csv", "tiltlab-report.tiltlab-lock"):
        res = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", "--no-index", path],
                             capture_output=True, text=True)
        assert res.returncode == 0, path
