"""Token models for experiments and ``tiltlab reproduce``: built-in, real-data and user files.

A model is one token distribution ``p`` (as logits) with a reward per token; the memoryless
sequence model of SPEC section 4 draws ``n`` tokens independently from it and adds their
rewards.  Every model is documented here, in :data:`MODELS`:

``bernoulli``
    ``p(1) = 0.3``, ``r(y) = y`` (the oracle model of SPEC section 8).
``ternary``
    ``p = (0.5, 0.3, 0.2)``, ``r = (0, 1, 3)``.
``zipf``
    ``V = 10^4`` tokens with Zipf probabilities ``p_k ∝ k^-1.1`` (rank ``k = 1..V``) and integer
    rewards ``r_k = ((2654435761 k) mod 2^32) mod 11 - 5`` in ``[-5, 5]``: a fixed,
    platform-independent scrambling (Knuth's multiplicative hash) so that reward is unrelated
    to frequency.
``english-sentiment``
    A real memoryless language model: the unigram distribution of the ``V`` most frequent
    English words (default ``V = 20000``) from the ``wordfreq`` package, renormalised over
    those words, with reward the word's valence in the VADER sentiment lexicon shipped with the
    ``vaderSentiment`` package (mean human rating in ``[-3.9, 3.4]``, on a 0.1 lattice; words
    not in the lexicon score 0).  Needs the ``data`` extra: ``pip install "tiltlab[data]"``.
    Both data sets are read from the installed packages (no download); the arrays are cached in
    memory and on disk (``$TILTLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/tiltlab``, else
    ``~/.cache/tiltlab``), keyed by ``V`` and the two packages' versions.
``path/to/model.npz``
    A user model: arrays ``logits`` and ``rewards`` of shape ``(V,)``, optional ``names``
    (``V`` strings) and optional scalar ``step`` (the reward lattice step passed to
    :class:`tiltlab.Memoryless`).

The loaders are part of the application (``tiltlab.app``; also importable as
``tiltlab.models``); the :class:`~tiltlab.Model` they return is the library's
(``tiltlab.tokenmodel``), re-exported here.
"""

from __future__ import annotations

import functools
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from tiltlab.tokenmodel import Model

__all__ = ["Model", "MissingDependency", "MODELS", "load_model", "english_sentiment"]


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def _normalise(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    m = np.max(logits)
    return logits - (m + np.log(np.sum(np.exp(logits - m))))


def _default_names(v: int) -> np.ndarray:
    return np.array([str(i) for i in range(v)])


def _finite_number(x, name: str) -> float:
    """``x`` as one finite float; the error names ``name`` (a masked value is refused)."""
    if isinstance(x, np.ma.MaskedArray):
        if np.ma.getmaskarray(x).any():
            raise ValueError(f"{name} is a masked array with a masked element; a mask has no "
                             f"meaning for {name}: pass a plain number")
        x = np.ma.getdata(x)
    arr = np.asarray(x)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real number; got {x!r}")
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a single number; got an array of shape {arr.shape}")
    value = float(arr)
    if not np.isfinite(value):
        what = "NaN" if np.isnan(value) else "an infinite value"
        raise ValueError(f"{name} contains {what}; {name} must be finite")
    return value


def _check_memory(n_bytes: int, what: str) -> None:
    """MemoryError, before anything is allocated, when ``what`` needs more than the physical
    memory of this machine (2^47 bytes where the OS does not say)."""
    try:
        limit = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not Linux / macOS
        limit = 1 << 47
    if n_bytes > limit:
        raise MemoryError(f"{what} would need {n_bytes / 2**30:.3g} GiB, more than the "
                          f"{limit / 2**30:.3g} GiB of memory of this machine")


def bernoulli() -> Model:
    return Model("bernoulli", _normalise(np.log([0.7, 0.3])), np.array([0.0, 1.0]),
                 np.array(["0", "1"]), "Bernoulli token, p(1) = 0.3, r(y) = y")


def ternary() -> Model:
    return Model("ternary", _normalise(np.log([0.5, 0.3, 0.2])), np.array([0.0, 1.0, 3.0]),
                 np.array(["a", "b", "c"]), "ternary token, p = (0.5, 0.3, 0.2), r = (0, 1, 3)")


def zipf(vocab: int = 10_000, exponent: float = 1.1) -> Model:
    if isinstance(vocab, bool) or not isinstance(vocab, (int, np.integer)):
        raise TypeError(f"vocab must be an integer; got {vocab!r}")
    if vocab < 1:
        raise ValueError(f"vocab must be >= 1; got {vocab}")
    # six float64 / int64 arrays and a token name (a Python str and a numpy string) per token
    _check_memory(int(vocab) * 160, f"vocab={vocab} tokens")
    exponent = _finite_number(exponent, "exponent")
    k = np.arange(1, vocab + 1, dtype=np.int64)
    logits = _normalise(-exponent * np.log(k.astype(np.float64)))
    rewards = (((k * 2654435761) % 2**32) % 11 - 5).astype(np.float64)
    return Model("zipf", logits, rewards, np.array([f"tok{i}" for i in k]),
                 f"Zipf tokens, V = {vocab}, p_k ~ k^-{exponent}, "
                 "integer rewards r_k = (2654435761 k mod 2^32) mod 11 - 5")


# --------------------------------------------------------------------------------------
# english-sentiment: wordfreq unigram frequencies x VADER valence
# --------------------------------------------------------------------------------------

def _cache_dir() -> Path:
    env = os.environ.get("TILTLAB_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tiltlab"


def _data_versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("wordfreq", "vaderSentiment"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            raise MissingDependency(
                f"the english-sentiment model needs the {dist} package: "
                'pip install "tiltlab[data]"') from None
    return out


def _vader_lexicon() -> dict:
    """Word -> mean valence, read from the lexicon file of the installed vaderSentiment."""
    from importlib import resources

    text = resources.files("vaderSentiment").joinpath("vader_lexicon.txt").read_text(
        encoding="utf-8")
    lexicon = {}
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if len(parts) >= 2:
            lexicon[parts[0]] = float(parts[1])
    return lexicon


def _build_english_sentiment(vocab: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        import wordfreq
    except ImportError:
        raise MissingDependency('the english-sentiment model needs wordfreq: '
                                'pip install "tiltlab[data]"') from None
    words = wordfreq.top_n_list("en", vocab)
    if len(words) < vocab:
        raise ValueError(f"vocab={vocab} exceeds the {len(words)} English words wordfreq lists")
    freq = np.array([wordfreq.word_frequency(w, "en") for w in words], dtype=np.float64)
    lexicon = _vader_lexicon()
    valence = np.array([lexicon.get(w, 0.0) for w in words], dtype=np.float64)
    # the lexicon's valences are decimals with one digit: snap them to the 0.1 lattice exactly
    valence = np.round(valence * 10.0) / 10.0
    return np.array(words), np.log(freq), valence


@functools.lru_cache(maxsize=4)
def _english_arrays(vocab: int):
    versions = _data_versions()
    key = (f"english-sentiment-V{vocab}-wordfreq{versions['wordfreq']}"
           f"-vader{versions['vaderSentiment']}")
    path = _cache_dir() / f"{key}.npz"
    try:
        arrays, _ = _read_npz(path, ("names", "logits", "rewards"))
        names, logits, rewards = arrays["names"], arrays["logits"], arrays["rewards"]
        if names.shape == logits.shape == rewards.shape == (vocab,):
            return names, logits, rewards, versions, str(path)
    except (KeyError, ValueError):   # absent, damaged or foreign cache file: rebuild it
        pass
    names, logits, rewards = _build_english_sentiment(vocab)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        try:
            np.savez(tmp, names=names, logits=logits, rewards=rewards)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        where = str(path)
    except OSError:
        where = "(not cached: cache directory not writable)"
    return names, logits, rewards, versions, where


def english_sentiment(vocab: int = 20_000) -> Model:
    """The ``english-sentiment`` model (see the module docstring) over the top ``vocab`` words."""
    if isinstance(vocab, bool) or not isinstance(vocab, (int, np.integer)):
        raise TypeError(f"vocab must be an integer; got {vocab!r}")
    if not 2 <= vocab <= 200_000:
        raise ValueError(f"vocab must be in [2, 200000]; got {vocab}")
    names, logits, rewards, versions, where = _english_arrays(int(vocab))
    return Model("english-sentiment", _normalise(logits), rewards.copy(), names.copy(),
                 f"English unigram model, top {vocab} words (wordfreq), reward = VADER valence",
                 step=0.1, source={**versions, "cache": where})


# --------------------------------------------------------------------------------------
# user models
# --------------------------------------------------------------------------------------

def _load_error(exc: BaseException) -> str:
    """Why an .npz file could not be read, in a few words (for one-line error messages)."""
    if isinstance(exc, MemoryError):
        return "it declares more data than fits in memory"
    if isinstance(exc, zipfile.BadZipFile):
        return f"damaged zip archive: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).splitlines()[0] if str(exc) else ""
    if "pickled data" in text:
        return "neither a zip archive of .npy arrays nor an .npy array"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_npz(p: Path, keys: tuple[str, ...]) -> tuple[dict, list]:
    """The arrays ``keys`` of the .npz file ``p`` (those present, read now) and every name.

    Any failure to read the file (missing, a folder, unreadable, empty, a damaged or
    truncated zip, a member that is not an ``.npy`` array or needs pickle) is a ValueError
    naming the file and the problem.
    """
    where = f"model file {str(p)!r}"
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ValueError(f"{where} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{where} cannot be read ({_load_error(exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{where} is a folder, not an .npz file")
    if not stat.S_ISREG(st.st_mode):      # a FIFO or a device would block or never end
        raise ValueError(f"{where} is not a regular file")
    if st.st_size == 0:
        raise ValueError(f"{where} is empty, not an .npz file")
    try:
        f = np.load(p, allow_pickle=False)
    except OSError as exc:        # e.g. permission denied (BadZipFile is no OSError)
        raise ValueError(f"{where} cannot be read ({_load_error(exc)})") from None
    except Exception as exc:      # np.load raises many types: BadZipFile, EOFError, ...
        raise ValueError(f"{where} is not a readable .npz file ({_load_error(exc)})") from None
    if not hasattr(f, "files"):
        raise ValueError(f"{where} holds a single array, not an .npz archive "
                         "with 'logits' and 'rewards'")
    arrays = {}
    with f:
        files = list(f.files)
        for key in keys:
            if key not in files:
                continue
            try:
                arr = f[key]
            except Exception as exc:  # damaged member (bad CRC, truncated), object array
                raise ValueError(f"{where}: array {key!r} cannot be read "
                                 f"({_load_error(exc)})") from None
            if not isinstance(arr, np.ndarray):   # a member that is not in .npy format
                raise ValueError(f"{where}: member {key}.npy is not an .npy array")
            arrays[key] = arr
    return arrays, files


def from_npz(path: str | os.PathLike) -> Model:
    """A user model from an ``.npz`` file with ``logits``, ``rewards`` [, ``names``, ``step``].

    Raises
    ------
    ValueError
        The file is missing, not a readable ``.npz`` archive (empty, a folder, unreadable,
        damaged or truncated), or its arrays are missing or malformed; the message names
        the file and the problem.
    """
    p = Path(path)
    arrays, files = _read_npz(p, ("logits", "rewards", "names", "step"))
    missing = [k for k in ("logits", "rewards") if k not in files]
    if missing:
        raise ValueError(f"model file {str(p)!r} lacks the array(s) {', '.join(missing)}; "
                         f"it has {', '.join(files) or 'none'}")
    logits, rewards = arrays["logits"], arrays["rewards"]
    names, step = arrays.get("names"), arrays.get("step")
    for arr, what in ((logits, "logits"), (rewards, "rewards")):
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"model file {str(p)!r}: {what} must be real numbers; "
                             f"got dtype {arr.dtype}")
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"model file {str(p)!r}: {what} must have shape (V,) with V >= 1; "
                             f"got shape {arr.shape}")
    if logits.shape != rewards.shape:
        raise ValueError(f"model file {str(p)!r}: logits {logits.shape} and rewards "
                         f"{rewards.shape} differ in shape")
    logits = logits.astype(np.float64)
    rewards = rewards.astype(np.float64)
    if np.isnan(logits).any() or np.isposinf(logits).any():
        raise ValueError(f"model file {str(p)!r}: logits contain NaN or +inf")
    if not np.isfinite(logits).any():
        raise ValueError(f"model file {str(p)!r}: every logit is -inf")
    if not np.isfinite(rewards).all():
        raise ValueError(f"model file {str(p)!r}: rewards must be finite")
    if names is None:
        names = _default_names(logits.size)
    elif names.shape != logits.shape:
        raise ValueError(f"model file {str(p)!r}: names has shape {names.shape}, "
                         f"expected {logits.shape}")
    elif names.dtype.kind not in "USiufb":
        raise ValueError(f"model file {str(p)!r}: names must be strings; "
                         f"got dtype {names.dtype}")
    else:
        names = names.astype(str)
    if step is not None:
        if step.shape != () or step.dtype.kind not in "fiu" or not (float(step) > 0
                                                                    and np.isfinite(step)):
            raise ValueError(f"model file {str(p)!r}: step must be a positive finite scalar")
        step = float(step)
    return Model(p.stem, _normalise(logits), rewards, names,
                 f"user model from {p.name}, V = {logits.size}", step=step,
                 source={"path": str(p.resolve())})


MODELS = {
    "bernoulli": bernoulli,
    "ternary": ternary,
    "zipf": zipf,
    "english-sentiment": english_sentiment,
}


def load_model(name: str, **options) -> Model:
    """A token model by name or from an ``.npz`` file (the models of ``tiltlab reproduce``).

    Parameters
    ----------
    name : str or path
        ``bernoulli``, ``ternary``, ``zipf``, ``english-sentiment`` (needs the ``data``
        extra) or the path of an ``.npz`` file with arrays ``logits`` and ``rewards`` of
        shape ``(V,)`` (optional ``names`` and scalar ``step``).  See :mod:`tiltlab.app.models`
        for what each built-in model is.
    **options
        Passed to the model's constructor, e.g. ``vocab=5000`` for ``english-sentiment``.

    Returns
    -------
    Model
        Normalised ``logits``, ``rewards``, token ``names``, a ``description``, the lattice
        ``step`` to use for sequences (None: detect) and the data ``source``.

    Raises
    ------
    ValueError
        Unknown name, or a model file that is missing, empty, a folder, unreadable, not a
        zip archive or a damaged or truncated one, or whose arrays are missing or malformed
        (the message names the file and says what is wrong).
    MissingDependency
        ``english-sentiment`` without ``wordfreq`` / ``vaderSentiment`` installed.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> m = tiltlab.load_model("ternary")
    >>> np.exp(m.logits).round(3).tolist(), m.rewards.tolist()
    ([0.5, 0.3, 0.2], [0.0, 1.0, 3.0])
    >>> seq = tiltlab.Memoryless(m.logits, m.rewards, 100, step=m.step)
    >>> print(f"{seq.best_of_n(n=16).kl:.6f}")
    1.833536
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"model must be a name or a path; got {name!r}")
    key = str(name)
    if key in MODELS:
        return MODELS[key](**options)
    # os.path.exists is False (not an error) for names the OS refuses, e.g. too long
    if key.endswith(".npz") or os.sep in key or os.path.exists(key):
        return from_npz(key)
    raise ValueError(f"unknown model {key!r}; choose one of {', '.join(MODELS)} "
                     "or give the path of an .npz file with arrays logits and rewards")
