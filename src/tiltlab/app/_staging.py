"""Crash-safe output folders (plumbing of ``tiltlab reproduce``): write aside, swap in.

A report folder ``P/N`` is never written in place.  Every path below is a sibling in the
parent ``P`` of the real (symlink-resolved) output folder, so each rename stays on one
filesystem and is atomic:

1. :func:`check` refuses ``P/N`` if it is a file, a mount point, the home folder, the
   current folder or one of its parents, or a non-empty folder this module did not write
   (unless ``force``).  Nothing is created before these checks pass.
2. Lock ``P/N.tiltlab-lock`` with ``flock``: one writer per output folder.  The kernel
   drops the lock when its process dies, SIGKILL included, so a lock file left behind by a
   killed run never blocks the next one.
3. Recover from killed runs: if ``P/N`` is missing and a backup ``P/N.tiltlab-backup-*``
   exists (a run was killed between the two renames of step 6), rename the backup back to
   ``P/N``; then remove every ``P/N.tiltlab-staging-*``, ``P/N.tiltlab-backup-*`` and
   ``P/N.tiltlab-trash-*`` left over (the lock guarantees that no live run owns them).
4. The caller writes the new folder into ``P/N.tiltlab-staging-<pid>-<hex>``.
5. Write the stamp :data:`STAMP` (signature and the list of files) last; fsync every file
   and the folder.
6. Swap.  On Linux, one ``renameat2(RENAME_EXCHANGE)`` exchanges the staging folder and
   ``P/N`` atomically (the old folder is then at the staging path).  Elsewhere, or on a
   filesystem without exchange: rename ``P/N`` to ``P/N.tiltlab-backup-<pid>-<hex>``, then
   the staging folder to ``P/N``.  Then fsync ``P``, rename the old folder to
   ``P/N.tiltlab-trash-<pid>-<hex>`` and remove it.
7. Unlock (unlink the lock file).

At every instant ``P/N`` is the old folder or the new complete one.  Only with the
two-rename fallback is there an instant (between the renames) when ``P/N`` is absent; the
old folder then sits whole in the backup, which the next run puts back.  A Python exception
(or Ctrl-C) at any step before the swap removes the staging folder and leaves ``P/N`` as it
was.

A folder counts as written here when its stamp ``.tiltlab-report`` holds the signature
and lists every file in the folder (``.DS_Store`` and ``Thumbs.db`` aside); a report of a
tiltlab without stamps counts when its ``run.json`` says ``"command": "tiltlab
reproduce"`` and names every file.  A folder with any other file is refused unless
``force``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - no flock (Windows): one writer is assumed
    fcntl = None

__all__ = ["STAMP", "SIGNATURE", "Target", "resolve", "check", "staged_folder", "checkpoint"]

STAMP = ".tiltlab-report"
SIGNATURE = "tiltlab reproduce report"
_IGNORED = frozenset({".DS_Store", "Thumbs.db"})     # written by file browsers
_LEFTOVER = r"\.tiltlab-(staging|backup|trash)-\d+-[0-9a-f]+"


def checkpoint(stage: str) -> None:
    """Mark a step of a staged write (a no-op; tests replace it to crash at that step).

    Stages, in order: ``"staging"`` (staging folder created), ``"experiment"`` (from the
    caller, after each part written), ``"staged"`` (stamp written and synced),
    ``"moved-aside"`` (two-rename fallback only: old folder renamed to the backup),
    ``"swapped"`` (new folder in place, old one not yet removed), ``"removing"`` (the first
    file of the old folder removed).
    """


@dataclass(frozen=True)
class Target:
    """An output folder: as the caller gave it (for messages) and its real path."""

    shown: str
    path: Path


def resolve(out: str | os.PathLike) -> Target:
    """The output folder ``out`` with symlinks resolved (the swap renames the real folder)."""
    shown = os.fspath(out)
    try:
        real = os.path.realpath(shown)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--out {shown!r} is not a usable path ({exc})") from None
    return Target(shown, Path(real))


def _unwritable(t: Target, exc: OSError) -> ValueError:
    return ValueError(f"cannot write the report to --out {t.shown!r}: {exc.strerror or exc}")


def _listed_files(folder: Path) -> set | None:
    """The files a report folder says it holds (stamp, else a stamp-less run.json), or None."""
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
        files = stamp["files"]
        if stamp["signature"] == SIGNATURE and all(isinstance(f, str) for f in files):
            return set(files)
    except (OSError, ValueError, TypeError, KeyError):
        pass
    try:     # reports written before the stamp existed: run.json names every file
        run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        if run["command"] == "tiltlab reproduce":
            names = {"report.md", "report.html", "run.json"}
            for part in run["files"].values():
                names.add(part["figure"])
                names.update(part["tables"])
            if all(isinstance(f, str) for f in names):
                return names
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


def _foreign(folder: Path, entries: list) -> str | None:
    """Why a non-empty folder is not one this module wrote (None: it is)."""
    listed = _listed_files(folder)
    if listed is None:
        return f"no {STAMP} stamp"
    extra = sorted(set(entries) - listed - {STAMP} - _IGNORED)
    if extra:
        more = ", ..." if len(extra) > 5 else ""
        return "it holds files the report does not list: " + ", ".join(extra[:5]) + more
    return None


def _guard(t: Target) -> None:
    """Refuse folders that must never be replaced as a whole."""
    p = t.path
    try:
        cwd = Path(os.path.realpath(os.getcwd()))
    except OSError:           # the current folder was removed
        cwd = None
    home = Path(os.path.realpath(os.path.expanduser("~")))
    if cwd is not None and (p == cwd or p in cwd.parents):
        what = "the current folder" if p == cwd else "a parent of the current folder"
    elif p == home:
        what = "your home folder"
    elif os.path.ismount(p):
        what = "a mount point"
    else:
        return
    raise ValueError(f"--out {t.shown!r} is {what}; tiltlab reproduce replaces its output "
                     "folder as a whole, so give it a folder of its own, e.g. "
                     "--out tiltlab-report")


def check(t: Target, force: bool) -> None:
    """Refuse an output folder that may not be replaced (touches nothing).

    Raises
    ------
    ValueError
        ``t`` is not a folder; a mount point, the home folder, the current folder or a parent of
        it; unreadable; or a non-empty folder not written by :func:`staged_folder` while
        ``force`` is False.
    """
    p = t.path
    if not os.path.lexists(p):
        return
    if not p.is_dir():
        raise ValueError(f"--out {t.shown!r} exists and is not a folder; give the path of "
                         "a new or empty folder (or one tiltlab reproduce wrote)")
    _guard(t)
    try:
        entries = os.listdir(p)
    except OSError as exc:
        raise _unwritable(t, exc) from None
    if not entries or force:
        return
    why = _foreign(p, entries)
    if why:
        raise ValueError(f"--out {t.shown!r} is not empty and was not written by tiltlab "
                         f"reproduce ({why}); choose a new or empty folder, or pass --force "
                         "to replace it and everything in it")


class _Lock:
    """An exclusive ``flock`` on ``P/N.tiltlab-lock``, unlinked on release."""

    def __init__(self, t: Target):
        self.path = t.path.parent / f"{t.path.name}.tiltlab-lock"
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise _unwritable(t, exc) from None
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise ValueError(f"another tiltlab reproduce is writing --out {t.shown!r} "
                                     "right now; wait for it or choose another --out") from None
                except OSError:    # a filesystem without locks: go on unlocked
                    pass
            try:       # the file may have been unlinked by the previous holder meanwhile
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)        # while still holding the lock
        os.close(self.fd)


def _fresh(parent: Path, prefix: str, mkdir: bool) -> Path:
    """A new path ``parent/prefix<hex>`` (created as a folder when ``mkdir``)."""
    while True:
        p = parent / f"{prefix}{secrets.token_hex(4)}"
        if mkdir:
            try:
                os.mkdir(p)           # mode from the umask, like any folder the user makes
                return p
            except FileExistsError:
                continue
        elif not os.path.lexists(p):
            return p


def _remove_tree(p: Path) -> None:
    """Remove a folder this module made (files first, with a checkpoint after the first)."""
    try:
        entries = sorted(os.scandir(p), key=lambda e: e.name != STAMP)
    except FileNotFoundError:
        return
    first = True
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path)
        else:
            os.unlink(e.path)
        if first:
            first = False
            checkpoint("removing")
    os.rmdir(p)


def _recover(t: Target, say) -> None:
    """Undo what killed runs left: put a moved-aside folder back, remove the rest."""
    parent, name = t.path.parent, t.path.name
    pattern = re.compile(re.escape(name) + _LEFTOVER)
    found = []
    for e in os.scandir(parent):
        m = pattern.fullmatch(e.name)
        if m and e.is_dir(follow_symlinks=False):
            found.append((m.group(1), Path(e.path), e.stat(follow_symlinks=False).st_mtime_ns))
    if not os.path.lexists(t.path):
        backups = sorted((f for f in found if f[0] == "backup"), key=lambda f: f[2])
        if backups:
            os.rename(backups[-1][1], t.path)
            found.remove(backups[-1])
            say(f"restored the previous report in {t.shown} from {backups[-1][1].name} "
                "(a run was killed while moving its report into place)")
    for _, p, _ in found:
        with contextlib.suppress(OSError):     # best effort: a leftover never blocks a run
            _remove_tree(p)


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:          # e.g. folders cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _seal(staging: Path, stamp: dict) -> None:
    """Write the stamp (last) listing every file, and sync the folder to disk."""
    files = sorted(n for n in os.listdir(staging) if n != STAMP)
    doc = {"signature": SIGNATURE, **stamp, "files": files}
    (staging / STAMP).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    for n in files + [STAMP]:
        _fsync(staging / n)
    _fsync(staging, directory=True)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.lru_cache(maxsize=1)
def _renameat2():
    """glibc's ``renameat2`` (Linux >= 3.15, glibc >= 2.28), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (RENAME_EXCHANGE); False if unsupported."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False          # e.g. a filesystem without exchange: rename twice instead
    raise OSError(err, os.strerror(err), os.fspath(b))


def _swap(staging: Path, t: Target) -> None:
    """Put ``staging`` at ``t``; the previous folder there (if any) is removed after."""
    parent, name = t.path.parent, t.path.name
    old = None
    if os.path.lexists(t.path):
        with contextlib.suppress(OSError):     # keep the folder's permissions
            os.chmod(staging, stat.S_IMODE(os.stat(t.path).st_mode))
    if os.path.lexists(t.path) and _exchange(staging, t.path):
        old = staging                # one atomic step: no instant without a whole folder
    else:
        backup = None
        try:
            if os.path.lexists(t.path):
                backup = _fresh(parent, f"{name}.tiltlab-backup-{os.getpid()}-", mkdir=False)
                os.rename(t.path, backup)
            checkpoint("moved-aside")
            os.rename(staging, t.path)
        except BaseException:
            if backup is not None and os.path.lexists(backup) and \
                    not os.path.lexists(t.path):
                os.rename(backup, t.path)
            raise
        old = backup
    _fsync(parent, directory=True)
    checkpoint("swapped")
    if old is not None:
        trash = _fresh(parent, f"{name}.tiltlab-trash-{os.getpid()}-", mkdir=False)
        try:
            os.rename(old, trash)
            _remove_tree(trash)
        except OSError:    # the new folder is in place; the next run removes the rest
            pass


@contextlib.contextmanager
def staged_folder(out: str | os.PathLike, *, force: bool = False, stamp: dict | None = None,
                  say=None) -> Iterator[Path]:
    """Write a folder aside and swap it in whole: ``with staged_folder(out) as d: ...``.

    Parameters
    ----------
    out : str or path
        The output folder; its parent is created if needed.
    force : bool, default False
        Replace a non-empty folder this module did not write (everything in it is removed).
    stamp : dict, optional
        Extra fields for the stamp file (e.g. the version that wrote the folder).
    say : callable, optional
        Receives a line when a folder moved aside by a killed run is put back.

    Yields
    ------
    pathlib.Path
        The staging folder to write into.  When the ``with`` body returns, the folder is
        stamped, synced and swapped in; when it raises, the staging folder is removed and
        ``out`` is left as it was.

    Raises
    ------
    ValueError
        ``out`` refused by :func:`check`, not writable, or being written by another run.
    """
    say = say or (lambda *a: None)
    t = resolve(out)
    check(t, force)
    try:
        t.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(t, exc) from None
    lock = _Lock(t)
    try:
        try:
            _recover(t, say)
        except OSError as exc:
            raise _unwritable(t, exc) from None
        check(t, force)
        try:
            staging = _fresh(t.path.parent, f"{t.path.name}.tiltlab-staging-{os.getpid()}-",
                             mkdir=True)
        except OSError as exc:
            raise _unwritable(t, exc) from None
        try:
            checkpoint("staging")
            yield staging
            _seal(staging, stamp or {})
            checkpoint("staged")
            _swap(staging, t)
        except BaseException:
            if os.path.lexists(staging):
                shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        lock.release()
