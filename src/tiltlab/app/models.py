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

Markov models (SPEC section 9: the token depends on the one before it) are listed apart, in
:data:`MARKOV_MODELS`, because they are not one token distribution: a constructor there
returns a :class:`MarkovModel` (initial and transition logits, rewards, state names), whose
``sequence(length)`` is a :class:`tiltlab.Markov`:

``english-letters``
    A real Markov model: character-level bigrams of English, 27 states (the word boundary
    ``_`` and ``a`` .. ``z``) estimated from the top words of ``wordfreq`` weighted by their
    frequency, with a small uniform smoothing so that every transition is possible; the
    first character follows the chain's stationary law.  Reward: the letter's Scrabble
    score (an integer; the boundary scores 0).  Needs the ``data`` extra (only
    ``wordfreq``).  :func:`english_letter_bigrams` gives the arrays,
    :func:`english_letters` the ``tiltlab.Markov`` of a given length.
``sticky-ternary``
    A built-in synthetic Markov model with the ``ternary`` model as its stationary law:
    three states with rewards ``(0, 1, 3)``; each token repeats the one before it with
    probability 1/2, else is drawn afresh from ``p = (0.5, 0.3, 0.2)``, i.e.
    ``P = I / 2 + 1 p^T / 2``; the first token is drawn from ``p`` (stationary).  Rewards of
    neighbouring tokens are positively correlated (``Var R / n -> 3 Var r``).  No extra
    needed: figure 8 of ``tiltlab reproduce`` uses it when ``english-letters`` is not
    installed.

The loaders are part of the application (``tiltlab.app``; also importable as
``tiltlab.models``); the :class:`~tiltlab.Model` they return is the library's
(``tiltlab.tokenmodel``), re-exported here.
"""

from __future__ import annotations

import functools
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import tiltlab
from tiltlab.tokenmodel import Model

__all__ = ["Model", "MissingDependency", "MODELS", "load_model", "english_sentiment",
           "MarkovModel", "MARKOV_MODELS", "english_letter_bigrams", "english_letters",
           "sticky_ternary"]


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


def _top_english_words(vocab: int, model: str) -> tuple[list, np.ndarray]:
    """The top ``vocab`` English words of wordfreq and their frequencies (the data extra;
    ``model`` names the model that needs them in the error)."""
    try:
        import wordfreq
    except ImportError:
        raise MissingDependency(f'the {model} model needs wordfreq: '
                                'pip install "tiltlab[data]"') from None
    words = wordfreq.top_n_list("en", vocab)
    if len(words) < vocab:
        raise ValueError(f"vocab={vocab} exceeds the {len(words)} English words wordfreq lists")
    return words, np.array([wordfreq.word_frequency(w, "en") for w in words], dtype=np.float64)


def _build_english_sentiment(vocab: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    words, freq = _top_english_words(vocab, "english-sentiment")
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
# english-letters: a character-level bigram (first-order Markov) model of English
# --------------------------------------------------------------------------------------

#: the states of ``english-letters``: the word boundary, then a .. z
_LETTERS = "_abcdefghijklmnopqrstuvwxyz"
#: standard English Scrabble letter scores, a .. z (the boundary scores 0)
_SCRABBLE = (1, 3, 3, 2, 1, 4, 2, 4, 1, 8, 5, 1, 3, 1, 1, 3, 10, 1, 1, 1, 1, 4, 4, 8, 4, 10)


@dataclass(frozen=True)
class MarkovModel:
    """A first-order Markov token model with per-token rewards, as arrays with provenance.

    What :func:`tiltlab.Markov` needs, without a length: :meth:`sequence` makes the
    sequence model of a given length.

    Attributes
    ----------
    name : str
        Short name (``english-letters``).
    names : ndarray of str, shape (V,)
        State (token) labels.
    initial_logits : ndarray, shape (V,)
        Normalised log-probabilities of the first token.
    transition_logits : ndarray, shape (V, V)
        Row ``s``: normalised log-probabilities of the token that follows ``s``.
    rewards : ndarray, shape (V,)
        Reward per token.
    description : str
        One line saying what the model is.
    source : dict
        Provenance: data package versions and the estimation settings.

    The arrays are the model's own read-only copies.
    """

    name: str
    names: np.ndarray
    initial_logits: np.ndarray
    transition_logits: np.ndarray
    rewards: np.ndarray
    description: str
    source: dict = field(default_factory=dict)

    def __post_init__(self):
        # the model's own read-only copies (float64 arrays, str names)
        for key in ("initial_logits", "transition_logits", "rewards", "names"):
            arr = np.array(getattr(self, key), dtype=str if key == "names" else np.float64)
            arr.setflags(write=False)
            object.__setattr__(self, key, arr)

    @property
    def n_states(self) -> int:
        return int(self.initial_logits.shape[0])

    def sequence(self, length: int, *, n_threads: int | None = None):
        """The sequence model ``tiltlab.Markov`` of ``length`` tokens (SPEC section 9)."""
        return tiltlab.Markov(self.initial_logits, self.transition_logits, self.rewards,
                              length, n_threads=n_threads)


def _wordfreq_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("wordfreq")
    except metadata.PackageNotFoundError:
        raise MissingDependency('the english-letters model needs the wordfreq package: '
                                'pip install "tiltlab[data]"') from None


@functools.lru_cache(maxsize=4)
def _letter_counts(vocab: int, version: str) -> tuple[np.ndarray, int, float]:
    """Frequency-weighted letter-transition counts (27, 27) of the top ``vocab`` English
    words of wordfreq that are made of a .. z only, the number of such words and the share
    of the listed words' frequency they carry (``version`` keys the cache only)."""
    listed, freq_all = _top_english_words(vocab, "english-letters")
    keep = [i for i, w in enumerate(listed) if w.isascii() and w.isalpha() and w.islower()]
    words = [listed[i] for i in keep]
    freq = freq_all[keep]
    # one stream "_w1__w2__w3_": inside each "_w_" block the pairs are the word's transitions
    # _ -> w[0] -> .. -> w[-1] -> _; the pairs between blocks are "_ -> _", which no word
    # has (words are not empty): dropping every "_ -> _" pair leaves exactly the word pairs,
    # in order, len(w) + 1 per word
    stream = np.frombuffer("".join(f"_{w}_" for w in words).encode("ascii"), dtype=np.uint8)
    codes = np.where(stream == ord("_"), 0, stream.astype(np.int64) - (ord("a") - 1))
    a, b = codes[:-1], codes[1:]
    inside = (a != 0) | (b != 0)
    weights = np.repeat(freq, [len(w) + 1 for w in words])
    counts = np.bincount(a[inside] * 27 + b[inside], weights=weights, minlength=27 * 27)
    counts = counts.reshape(27, 27) / np.sum(freq)     # transitions per word
    return counts, len(words), float(np.sum(freq) / np.sum(freq_all))


def _stationary(p: np.ndarray) -> np.ndarray:
    """The stationary law of the positive stochastic matrix ``p``: ``pi P = pi``, sum 1."""
    v = p.shape[0]
    a = p.T - np.eye(v)
    a[-1] = 1.0
    rhs = np.zeros(v)
    rhs[-1] = 1.0
    pi = np.linalg.solve(a, rhs)
    for _ in range(3):        # polish (a positive P contracts): every entry stays positive
        pi = pi @ p
    return pi / np.sum(pi)


def english_letter_bigrams(*, vocab: int = 20_000, smoothing: float = 1e-4,
                           start: str = "stationary") -> MarkovModel:
    """The ``english-letters`` model: a character-level bigram model of English.

    27 states: the word boundary ``"_"`` (index 0) and the letters ``a`` .. ``z``
    (indices 1 .. 26).  A sequence is a stream of words separated by single boundaries,
    e.g. ``_the_cat_sat``.

    *Estimation.*  The top ``vocab`` English words of the ``wordfreq`` package
    (``wordfreq.top_n_list("en", vocab)``) that consist of the letters a .. z only (words
    with digits, apostrophes or accents are left out; the words kept carry about 98 % of the
    list's frequency at the default ``vocab``), each weighted by its frequency
    ``wordfreq.word_frequency(w, "en")``: a word ``w`` adds its weight to the count of each
    transition of ``_ -> w[0] -> ... -> w[-1] -> _``.  Row ``s`` of the transition matrix is
    the counts of row ``s`` normalised (maximum likelihood), mixed with the uniform law:
    ``P(s, .) = (1 - smoothing) P_ML(s, .) + smoothing / 27``, i.e. a pseudo-count of
    ``smoothing / (27 (1 - smoothing))`` times the row's total added to every cell.  Every
    transition then has probability at least ``smoothing / 27`` (``_ -> _``, an empty word,
    included), so the chain is irreducible and aperiodic, as SPEC section 9's
    large-deviation results need; the estimated probabilities move by at most
    ``smoothing``.  (A letter that no kept word contains, possible only for a tiny
    ``vocab``, gets the uniform row.)

    *First token* (``start``): ``"stationary"`` (default) draws it from the stationary law
    ``mu`` of the chain (``mu P = mu``), so every position has the letter frequencies of
    running English text and ``E R = n sum_s mu(s) r(s)`` exactly: a length-``n`` window of
    an endless stream of words.  ``"word"`` starts at the first letter of a word (the row of
    the boundary, ``P(_, .)``).

    *Reward*: the letter's standard English Scrabble score (A=1, B=3, C=3, D=2, E=1, F=4,
    G=2, H=4, I=1, J=8, K=5, L=1, M=3, N=1, O=1, P=3, Q=10, R=1, S=1, T=1, U=1, V=4, W=4,
    X=8, Y=4, Z=10), 0 for the boundary: a sequence's reward is its Scrabble score.  The
    rewards are integers, so the exact lattice law of ``tiltlab.Markov`` applies (step 1).

    Needs the ``data`` extra (``pip install "tiltlab[data]"``; only ``wordfreq`` is read, from
    the installed package, no download).  The counts are cached in memory per ``vocab`` and
    ``wordfreq`` version; a build takes a fraction of a second.

    Parameters
    ----------
    vocab : int, optional
        Number of top words read from wordfreq (default 20000), in [1, 200000].
    smoothing : float, optional
        Weight of the uniform law in every row, in (0, 1] (default 1e-4).
    start : {"stationary", "word"}, optional
        The law of the first token (see above).

    Returns
    -------
    MarkovModel
        ``names`` (``"_"``, ``"a"`` .. ``"z"``), normalised ``initial_logits`` (27,) and
        ``transition_logits`` (27, 27), integer ``rewards`` (27,) and ``source`` (the
        ``wordfreq`` version, ``vocab``, the number of words kept and their share of the
        frequency, ``smoothing``, ``start``).

    Raises
    ------
    TypeError
        ``vocab`` not an integer, ``smoothing`` not a real number.
    ValueError
        ``vocab`` or ``smoothing`` out of range, an unknown ``start``.
    MissingDependency
        ``wordfreq`` is not installed.

    See Also
    --------
    english_letters : the same model as a ``tiltlab.Markov`` of a given length.
    """
    if isinstance(vocab, bool) or not isinstance(vocab, (int, np.integer)):
        raise TypeError(f"vocab must be an integer; got {vocab!r}")
    if not 1 <= vocab <= 200_000:
        raise ValueError(f"vocab must be in [1, 200000]; got {vocab}")
    smoothing = _finite_number(smoothing, "smoothing")
    if not 0.0 < smoothing <= 1.0:
        raise ValueError(f"smoothing must be in (0, 1]; got {smoothing}")
    if start not in ("stationary", "word"):
        raise ValueError(f"start must be 'stationary' or 'word'; got {start!r}")
    version = _wordfreq_version()
    counts, n_words, share = _letter_counts(int(vocab), version)
    total = np.sum(counts, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ml = np.where(total > 0, counts / total, 1.0 / 27)
    p = (1.0 - smoothing) * ml + smoothing / 27
    p = p / np.sum(p, axis=1, keepdims=True)
    p0 = _stationary(p) if start == "stationary" else p[0]
    rewards = np.array((0,) + _SCRABBLE, dtype=np.float64)
    return MarkovModel(
        "english-letters", np.array(list(_LETTERS)), np.log(p0), np.log(p), rewards,
        f"English letter bigrams (27 states: boundary + a..z), top {vocab} words (wordfreq) "
        f"weighted by frequency, smoothing {smoothing:g}, {start} start; reward = Scrabble "
        "score",
        source={"wordfreq": version, "vocab": int(vocab), "words": n_words,
                "frequency_share": share, "smoothing": smoothing, "start": start})


def english_letters(length: int, *, vocab: int = 20_000, smoothing: float = 1e-4,
                    start: str = "stationary", n_threads: int | None = None):
    """A character-level bigram model of English as a ``tiltlab.Markov`` of ``length`` tokens.

    The ``english-letters`` model (:func:`english_letter_bigrams`: 27 states, the word
    boundary ``"_"`` then ``a`` .. ``z``, estimated from the wordfreq word list weighted by
    frequency, smoothed so every transition is possible; reward = Scrabble score of the
    letter, 0 for the boundary) over sequences of ``length`` tokens.

    Parameters
    ----------
    length : int
        Sequence length ``n >= 1``.
    vocab, smoothing, start
        As for :func:`english_letter_bigrams`.
    n_threads : int, optional
        Threads for the compiled kernels of ``tiltlab.Markov``.

    Returns
    -------
    tiltlab.Markov
        State ``i`` is the character ``"_abcdefghijklmnopqrstuvwxyz"[i]``
        (``english_letter_bigrams().names``).

    Raises
    ------
    TypeError, ValueError
        Bad ``length``, ``vocab``, ``smoothing`` or ``start``, as for
        :func:`english_letter_bigrams` and ``tiltlab.Markov``.
    MissingDependency
        ``wordfreq`` is not installed (the ``data`` extra).

    Examples
    --------
    The Scrabble score of 100 characters of running English (boundaries score 0), and the
    optimal policy at a per-character KL budget of 0.1 nats (needs the ``data`` extra):

    >>> import numpy as np, tiltlab
    >>> bigrams = tiltlab.models.english_letter_bigrams()
    >>> letters = "".join(bigrams.names)
    >>> letters
    '_abcdefghijklmnopqrstuvwxyz'
    >>> p = np.exp(bigrams.transition_logits)
    >>> print(f"P(u | q) = {p[letters.index('q'), letters.index('u')]:.3f}")
    P(u | q) = 0.961
    >>> chain = tiltlab.models.english_letters(100)
    >>> print(f"{chain.tilt_stats(0.0).mean / 100:.4f}")   # Scrabble points per character
    1.3755
    >>> lam = chain.solve_lambda(0.1)
    >>> print(f"lambda = {lam:.4f}, {chain.tilt_stats(lam).mean / 100:.4f} points per character")
    lambda = 0.2974, 1.9276 points per character
    """
    return english_letter_bigrams(vocab=vocab, smoothing=smoothing, start=start).sequence(
        length, n_threads=n_threads)


def sticky_ternary(stay: float = 0.5) -> MarkovModel:
    """The ``sticky-ternary`` model: the ``ternary`` model with memory (no data needed).

    Three states ``"0"``, ``"1"``, ``"2"`` with rewards ``(0, 1, 3)``.  A token repeats the
    one before it with probability ``stay``, else it is drawn afresh from
    ``p = (0.5, 0.3, 0.2)``: ``P = stay I + (1 - stay) 1 p^T``.  ``p`` is stationary
    (``p P = p``) and is the law of the first token, so every position has the marginal of
    the ``ternary`` model, which is its memoryless twin; the correlation of neighbouring
    rewards is ``stay^k`` at lag ``k``, so ``Var R / n -> Var r (1 + stay) / (1 - stay)``.

    Parameters
    ----------
    stay : float, optional
        Probability of repeating the previous token, in [0, 1) (default 0.5; 0 is the
        memoryless ternary model).

    Returns
    -------
    MarkovModel
        The arrays, with ``source = {"stay": stay}``.

    Examples
    --------
    >>> import numpy as np, tiltlab
    >>> m = tiltlab.models.sticky_ternary()
    >>> np.exp(m.transition_logits).round(2).tolist()
    [[0.75, 0.15, 0.1], [0.25, 0.65, 0.1], [0.25, 0.15, 0.6]]
    """
    stay = _finite_number(stay, "stay")
    if not 0.0 <= stay < 1.0:
        raise ValueError(f"stay must be in [0, 1); got {stay}")
    p = np.array([0.5, 0.3, 0.2])
    trans = stay * np.eye(3) + (1.0 - stay) * p[None, :]
    return MarkovModel(
        "sticky-ternary", np.array(["0", "1", "2"]), np.log(p), np.log(trans),
        np.array([0.0, 1.0, 3.0]),
        f"ternary model with memory: repeat the previous token with probability {stay:g}, "
        "else draw from p = (0.5, 0.3, 0.2); reward (0, 1, 3)",
        source={"stay": stay})


MARKOV_MODELS = {
    "english-letters": english_letter_bigrams,
    "sticky-ternary": sticky_ternary,
}


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
