"""The models of ``tiltlab reproduce``: built-in, english-sentiment (real data) and user files."""

from __future__ import annotations

import importlib.util

import malformed_models
import numpy as np
import pytest

import tiltlab
from tiltlab.app import models

HAVE_DATA = all(importlib.util.find_spec(m) is not None for m in ("wordfreq", "vaderSentiment"))
needs_data = pytest.mark.skipif(not HAVE_DATA, reason='needs the data extra: '
                                'pip install "tiltlab[data]" (wordfreq, vaderSentiment)')


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TILTLAB_CACHE_DIR", str(tmp_path / "cache"))
    models._english_arrays.cache_clear()
    yield tmp_path / "cache"
    models._english_arrays.cache_clear()


@pytest.mark.parametrize("name", ["bernoulli", "ternary", "zipf"])
def test_builtin_models_are_normalised_and_on_a_lattice(name):
    m = models.load_model(name)
    assert m.name == name
    assert m.logits.shape == m.rewards.shape == m.names.shape == (m.vocab_size,)
    assert abs(np.exp(m.logits).sum() - 1.0) < 1e-14
    assert np.all(m.rewards == np.round(m.rewards))            # integer rewards
    seq = tiltlab.Memoryless(m.logits, m.rewards, 10, step=m.step)
    assert seq.step == 1.0


def test_builtin_model_values():
    b = models.load_model("bernoulli")
    np.testing.assert_allclose(np.exp(b.logits), [0.7, 0.3], rtol=1e-15)
    t = models.load_model("ternary")
    np.testing.assert_allclose(np.exp(t.logits), [0.5, 0.3, 0.2], rtol=1e-15)
    np.testing.assert_array_equal(t.rewards, [0.0, 1.0, 3.0])
    z = models.load_model("zipf")
    assert z.vocab_size == 10_000
    p = np.exp(z.logits)
    assert np.all(np.diff(p) < 0)
    np.testing.assert_allclose(p[0] / p[1], 2.0 ** 1.1, rtol=1e-13)
    assert set(np.unique(z.rewards)) == set(range(-5, 6))
    k = np.arange(1, 6)
    np.testing.assert_array_equal(z.rewards[:5], ((k * 2654435761) % 2**32) % 11 - 5)


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="unknown model 'nope'.*ternary.*npz"):
        models.load_model("nope")
    with pytest.raises(TypeError, match="model must be"):
        models.load_model(3)


def test_npz_round_trip(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, logits=np.array([0.0, 1.0, 2.0]), rewards=np.array([0.0, 0.5, 1.5]),
             names=np.array(["x", "y", "z"]), step=np.float64(0.5))
    m = models.load_model(str(path))
    assert m.name == "mine" and m.step == 0.5
    np.testing.assert_allclose(np.exp(m.logits), np.exp([0, 1, 2]) / np.exp([0, 1, 2]).sum())
    assert list(m.names) == ["x", "y", "z"]
    np.savez(path, logits=np.array([0.0, -np.inf]), rewards=np.array([1, 2]))
    m = models.load_model(path)
    assert list(m.names) == ["0", "1"] and m.step is None and m.logits[1] == -np.inf


@pytest.mark.parametrize("arrays, match", [
    ({"logits": np.zeros(3)}, "lacks the array.*rewards"),
    ({"logits": np.zeros(3), "rewards": np.zeros(4)}, "differ in shape"),
    ({"logits": np.zeros((2, 3)), "rewards": np.zeros((2, 3))}, "shape \\(V,\\)"),
    ({"logits": np.zeros(0), "rewards": np.zeros(0)}, "V >= 1"),
    ({"logits": np.array([0.0, np.nan]), "rewards": np.zeros(2)}, "NaN"),
    ({"logits": np.full(2, -np.inf), "rewards": np.zeros(2)}, "every logit is -inf"),
    ({"logits": np.zeros(2), "rewards": np.array([0.0, np.inf])}, "rewards must be finite"),
    ({"logits": np.array(["a", "b"]), "rewards": np.zeros(2)}, "real numbers"),
    ({"logits": np.zeros(2), "rewards": np.zeros(2), "names": np.array(["a"])}, "names"),
    ({"logits": np.zeros(2), "rewards": np.zeros(2), "step": np.float64(-1)}, "step"),
])
def test_malformed_npz(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        models.load_model(str(path))


def test_not_an_npz(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a readable .npz"):
        models.load_model(str(path))
    with pytest.raises(ValueError, match="does not exist"):
        models.load_model(str(tmp_path / "missing.npz"))
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        models.load_model(str(single))


@pytest.mark.parametrize("kind", sorted(malformed_models.KINDS))
def test_malformed_model_file_is_a_one_line_value_error(tmp_path, monkeypatch, kind):
    """Issue 15 item 12: every kind of broken model file (a PK header and junk, a truncated
    zip, a bad CRC, an empty file, a folder, an unreadable file, wrong or missing arrays)
    is a ValueError naming the file and the problem, never BadZipFile, EOFError or
    AttributeError from inside numpy."""
    path = malformed_models.make(tmp_path, kind, monkeypatch)
    with pytest.raises(ValueError) as info:
        models.load_model(path)
    msg = str(info.value)
    assert f"model file {path!r}" in msg and malformed_models.KINDS[kind] in msg, msg
    assert "\n" not in msg


def test_model_names_the_os_refuses():
    """A name too long for the OS is an unknown model, a path too long cannot be read:
    ValueError both (it was OSError: File name too long)."""
    with pytest.raises(ValueError, match="unknown model 'aaaa"):
        models.load_model("a" * 5000)
    path = "/" + "a" * 5000 + ".npz"
    with pytest.raises(ValueError, match="cannot be read .File name too long"):
        models.load_model(path)


@needs_data
def test_english_sentiment_damaged_cache_is_rebuilt(cache_dir):
    """A cache file that is not a readable .npz (here a PK header and junk) is rebuilt, not a
    BadZipFile traceback."""
    m = models.english_sentiment(vocab=50)
    (cached,) = cache_dir.glob("english-sentiment-V50-*.npz")
    cached.write_bytes(b"PK\x03\x04" + bytes(range(200)))
    models._english_arrays.cache_clear()
    again = models.english_sentiment(vocab=50)
    np.testing.assert_array_equal(again.logits, m.logits)
    with np.load(cached) as f:                              # rewritten, readable again
        np.testing.assert_array_equal(f["rewards"], m.rewards)
    assert [p.name for p in cache_dir.iterdir()] == [cached.name]     # no temporary left


@needs_data
def test_english_sentiment(cache_dir):
    m = models.load_model("english-sentiment")
    assert m.vocab_size == 20_000
    assert abs(np.exp(m.logits).sum() - 1.0) < 1e-13
    p = np.exp(m.logits)
    assert np.all(np.diff(p) <= 0)                # frequencies never increase with rank
    assert p[0] > 100 * p[-1]
    assert len(set(m.names.tolist())) == m.vocab_size
    word = dict(zip(m.names.tolist(), m.rewards.tolist(), strict=True))
    assert word["good"] > 0 and word["love"] > 0 and word["great"] > 0
    assert word["bad"] < 0 and word["hate"] < 0
    assert word["the"] == 0.0 and word["table"] == 0.0    # not in the lexicon
    assert -3.9 <= m.rewards.min() < 0 < m.rewards.max() <= 3.4
    np.testing.assert_array_equal(m.rewards, np.round(m.rewards * 10) / 10)
    # the lattice is detected by itself as 0.1 (no step= given)
    seq = tiltlab.Memoryless(m.logits, m.rewards, 5)
    assert seq.step == pytest.approx(0.1, rel=1e-12)
    assert seq.quantisation_error < 1e-12
    # cached on disk, and the cache gives the same arrays
    files = list(cache_dir.glob("english-sentiment-V20000-*.npz"))
    assert len(files) == 1 and m.source["cache"] == str(files[0])
    models._english_arrays.cache_clear()
    again = models.load_model("english-sentiment")
    np.testing.assert_array_equal(again.logits, m.logits)
    np.testing.assert_array_equal(again.rewards, m.rewards)
    small = models.english_sentiment(vocab=500)
    np.testing.assert_array_equal(small.names, m.names[:500])


@needs_data
def test_english_sentiment_cache_unwritable_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("TILTLAB_CACHE_DIR", str(blocker / "sub"))
    models._english_arrays.cache_clear()
    try:
        m = models.english_sentiment(vocab=100)
        assert m.vocab_size == 100 and "not cached" in m.source["cache"]
    finally:
        models._english_arrays.cache_clear()


def test_english_sentiment_bad_vocab():
    with pytest.raises(ValueError, match="vocab"):
        models.english_sentiment(vocab=1)
    with pytest.raises(TypeError, match="vocab"):
        models.english_sentiment(vocab=2.5)


def test_english_sentiment_without_the_data_extra(cache_dir, monkeypatch):
    from importlib import metadata

    real = metadata.version

    def fake(dist):
        if dist in ("wordfreq", "vaderSentiment"):
            raise metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(metadata, "version", fake)
    with pytest.raises(models.MissingDependency, match=r'pip install "tiltlab\[data\]"'):
        models.load_model("english-sentiment")
