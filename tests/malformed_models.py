"""Malformed model files, one per kind, for the error-path tests of tiltlab.app.models and the CLI.

``make(folder, kind, monkeypatch)`` writes the file (or folder) of ``kind`` and returns its
path; ``KINDS`` maps each kind to a piece of the expected one-line message.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import zipfile

import numpy as np

KINDS = {
    "pk-junk": "is not a readable .npz file (damaged zip archive",       # PK\x03\x04 + junk
    "truncated-half": "is not a readable .npz file (damaged zip archive",
    "truncated-tail": "is not a readable .npz file (damaged zip archive",
    "bad-crc": "array 'logits' cannot be read (damaged zip archive: Bad CRC-32",
    "empty": "is empty",
    "folder": "is a folder",
    "unreadable": "cannot be read (Permission denied)",
    "text": "is not a readable .npz file",
    "member-not-npy": "member logits.npy is not an .npy array",
    "object-array": "array 'logits' cannot be read",
    "missing-rewards": "lacks the array(s) rewards",
    "rewards-2d": "rewards must have shape (V,)",
    "names-struct": "names must be strings",
}


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


GOOD = dict(logits=np.log([0.5, 0.3, 0.2]), rewards=np.array([0.0, 1.0, 3.0]))


def make(folder, kind: str, monkeypatch=None) -> str:
    """Write a malformed model file of ``kind`` in ``folder``; its path as a string.

    ``unreadable`` is a file with mode 000; when the tests run as root (who reads it anyway)
    ``monkeypatch`` makes ``open`` refuse that path as the OS refuses other users.
    """
    path = os.path.join(os.fspath(folder), f"{kind}.npz")
    good = _npz_bytes(**GOOD)
    if kind == "pk-junk":
        data = b"PK\x03\x04" + bytes(range(7, 250)) * 3
    elif kind == "truncated-half":
        data = good[: len(good) // 2]
    elif kind == "truncated-tail":
        data = good[:-10]                      # end of the central directory cut off
    elif kind == "bad-crc":
        data = bytearray(good)
        data[good.index(b"\x93NUMPY") + 128 + 3] ^= 0x40   # a byte of the logits' data
        data = bytes(data)
    elif kind == "empty":
        data = b""
    elif kind == "folder":
        os.mkdir(path)
        return path
    elif kind == "text":
        data = b"logits,rewards\n0,1\n"
    elif kind == "member-not-npy":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("logits.npy", b"0.1 0.2 0.3")
            z.writestr("rewards.npy", b"0 1 3")
        data = buf.getvalue()
    elif kind == "object-array":
        data = _npz_bytes(logits=np.array([0.1, None], dtype=object), rewards=np.zeros(2))
    elif kind == "missing-rewards":
        data = _npz_bytes(logits=GOOD["logits"])
    elif kind == "rewards-2d":
        data = _npz_bytes(logits=np.zeros(2), rewards=np.zeros((2, 1)))
    elif kind == "names-struct":
        data = _npz_bytes(**GOOD, names=np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]))
    elif kind == "unreadable":
        data = good
    else:
        raise KeyError(kind)
    with open(path, "wb") as f:
        f.write(data)
    if kind == "unreadable":
        os.chmod(path, 0)
        if os.geteuid() == 0:
            assert monkeypatch is not None, "unreadable as root needs monkeypatch"
            real_open = builtins.open

            def refusing_open(file, *args, **kwargs):
                if isinstance(file, (str, os.PathLike)) and os.fspath(file) == path:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
                return real_open(file, *args, **kwargs)

            monkeypatch.setattr(builtins, "open", refusing_open)
    return path
