"""Parameter sweeps over a grid, reproducible on one process, a local pool or Dask.

:func:`sweep` runs a task (a built-in one, or any callable ``f(**params, rng)``) on every
cell of a grid and returns a :class:`pandas.DataFrame`, one row per cell in grid order.
Each cell's random stream is keyed by ``seed`` and the cell's own parameters, so the table
is bitwise the same serially, on a local process pool, on any number of Dask workers, and
when a checkpointed sweep is resumed.

This module uses the library through its public API only (``import tiltlab``), and imports
pandas, pyarrow, dask and tqdm inside the functions that need them (the ``distributed``
extra): ``import tiltlab`` loads none of them.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import time
from collections.abc import Mapping, Sequence

import numpy as np

import tiltlab
from tiltlab.app.models import MissingDependency

__all__ = ["sweep", "SHARD_DRAWS", "SHARD_SAMPLES", "POOL_RESTARTS"]

#: A ``simulate_best_of_n`` cell is split into shards of at most this many candidate draws
#: (``n * samples``) ...
SHARD_DRAWS = 1 << 24
#: ... and at most this many samples (the outcome indices of a shard take 8 bytes each).
SHARD_SAMPLES = 1 << 21

_FORMAT = 1                      # checkpoint format; part of the signature
#: how many times a sweep replaces a local pool whose worker process died
POOL_RESTARTS = 3
_PROGRESS_EVERY = 5.0            # seconds between plain progress lines
_CHECKPOINT_EVERY = 1.0          # seconds between checkpoint rewrites (and at the end)


# --------------------------------------------------------------------------------------
# canonical encoding of parameters: the key of a cell's random stream
# --------------------------------------------------------------------------------------

def _file_digest(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_digest(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for arr in (model.logits, model.rewards):
        a = np.ascontiguousarray(arr, dtype=np.float64)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    h.update(repr(None if model.step is None else float(model.step).hex()).encode())
    return h.hexdigest()


def _encode(value, out: list, where: str) -> None:
    """Append the canonical, type-tagged bytes of ``value`` to ``out``.

    Numbers are keyed by their exact value (``4``, ``4.0``, ``np.int32(4)`` and
    ``np.float64(4.0)`` are one key; ``0.1`` is the binary double nearest 0.1, so
    ``np.float32(0.1)`` is another); booleans, strings, None, sequences (lists, tuples and
    arrays alike, element by element), mappings (by sorted key), :class:`tiltlab.Model`
    (its arrays and step) and paths (the contents of the file) each have their own tag."""
    if value is None:
        out.append(b"N;")
    elif isinstance(value, (bool, np.bool_)):
        out.append(b"B1;" if value else b"B0;")
    elif isinstance(value, numbers.Integral):
        out.append(b"R%d/1;" % int(value))
    elif isinstance(value, numbers.Real):
        x = float(value)
        if math.isnan(x):
            out.append(b"Fnan;")
        elif math.isinf(x):
            out.append(b"F+inf;" if x > 0 else b"F-inf;")
        else:
            num, den = x.as_integer_ratio()
            out.append(b"R%d/%d;" % (num, den))
    elif isinstance(value, str):
        b = value.encode("utf-8")
        out.append(b"S%d:" % len(b) + b)
    elif isinstance(value, bytes):
        out.append(b"Y%d:" % len(value) + value)
    elif isinstance(value, tiltlab.Model):
        out.append(b"M" + _model_digest(value).encode() + b";")
    elif isinstance(value, os.PathLike):
        p = os.fspath(value)
        if os.path.isfile(p):
            out.append(b"P" + _file_digest(p).encode() + b";")
        else:
            _encode(str(p), out, where)
    elif isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufUSO":
            raise TypeError(f"{where}: cannot key an array of dtype {value.dtype} for seeding")
        _encode(value.tolist(), out, where)
    elif isinstance(value, (list, tuple)):
        out.append(b"L%d:" % len(value))
        for v in value:
            _encode(v, out, where)
    elif isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            kb: list = []
            _encode(k, kb, where)
            vb: list = []
            _encode(v, vb, where)
            items.append((b"".join(kb), b"".join(vb)))
        out.append(b"D%d:" % len(items))
        for kb, vb in sorted(items):
            out.append(kb + vb)
    else:
        raise TypeError(f"{where} has a value of type {type(value).__name__} ({value!r:.60}), "
                        f"which cannot be keyed for the cell's random stream; use numbers, "
                        f"strings, None, booleans, lists, dicts, arrays, paths or tiltlab.Model")


def cell_key(params: Mapping, *, model_keys: Mapping | None = None) -> tuple[int, ...]:
    """The spawn key of a cell: 8 words of the SHA-256 of its canonical parameters."""
    import hashlib

    out: list = []
    for name in sorted(params):
        _encode(name, out, "grid")
        if model_keys is not None and name in model_keys:
            out.append(model_keys[name].encode() + b";")
        else:
            _encode(params[name], out, f"grid[{name!r}]")
    digest = hashlib.sha256(b"".join(out)).digest()
    return tuple(int.from_bytes(digest[4 * i:4 * i + 4], "little") for i in range(8))


def _generator(seed: int, words: tuple) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=words)))


# --------------------------------------------------------------------------------------
# built-in tasks
# --------------------------------------------------------------------------------------

def _as_int(value, where: str, lo: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where} must be an integer; got {value!r}")
    if not isinstance(value, numbers.Integral):
        x = float(value)
        if not (math.isfinite(x) and x == int(x)):
            raise ValueError(f"{where} must be an integer; got {value!r}")
        value = int(x)
    value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{where} must be >= {lo}; got {value}")
    return value


def _as_real(value, where: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where} must be a real number; got {value!r}")
    if math.isnan(float(value)):
        raise ValueError(f"{where} must be a number; got nan")
    return float(value)


def _as_reals(value, where: str) -> np.ndarray:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{where} must be a list of real numbers; got {value!r}")
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf" or arr.ndim != 1:
        raise TypeError(f"{where} must be a one-dimensional list of real numbers; got {value!r}")
    return arr.astype(np.float64)


def _as_choice(choices):
    """A checker of a string among ``choices()`` (a function: looked up when used)."""
    def check(value, where: str) -> str:
        choices_now = choices()
        if not isinstance(value, str):
            raise TypeError(f"{where} must be a string; got {value!r}")
        if value not in choices_now:
            raise ValueError(f"{where} must be one of {', '.join(choices_now)}; got {value!r}")
        return value
    return check


def _resolve_model(value, where: str, cache: dict):
    """(Model, key) of a ``model`` parameter: a built-in model name (keyed by the name),
    an ``.npz`` path (keyed by the file's contents) or a Model (keyed by its arrays)."""
    if isinstance(value, tiltlab.Model):
        return value, "M" + _model_digest(value)
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{where} must be a model name, an .npz path or a tiltlab.Model; got "
                        f"{value!r}")
    name = os.fspath(value)
    if name not in cache:
        try:
            model = tiltlab.load_model(name)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        path = model.source.get("path") if isinstance(model.source, dict) else None
        cache[name] = (model, "P" + _file_digest(path) if path else "S" + name)
    return cache[name]


class _Task:
    """A built-in task: its parameters (name -> checker), the required ones, groups of
    which exactly one must be given, and the function computing a cell."""

    def __init__(self, name, run, params, required=(), one_of=(), at_most_one=(),
                 checks=None):
        self.name, self.run, self.params = name, run, params
        self.required, self.one_of, self.at_most_one = required, one_of, at_most_one
        self.checks = checks   # checks(args, where) of the ranges and combinations

    def check(self, cell: Mapping, models: dict) -> tuple[dict, dict]:
        """(arguments for run, model keys) of one cell; errors name the grid key."""
        for key in cell:
            if key not in self.params:
                raise ValueError(f"grid[{key!r}] is not a parameter of the task {self.name!r} "
                                 f"(its parameters: {', '.join(self.params)})")
        for key in self.required:
            if key not in cell:
                raise ValueError(f"the grid lacks {key!r}, a required parameter of the task "
                                 f"{self.name!r}")
        given = {k for k, v in cell.items() if v is not None}
        for group in self.one_of:
            if len(given & set(group)) != 1:
                raise ValueError(f"the task {self.name!r} needs exactly one of "
                                 f"{' and '.join(repr(g) for g in group)} in each grid cell; "
                                 f"got cell {dict(cell)!r:.200}")
        for group in self.at_most_one:
            if len(given & set(group)) > 1:
                raise ValueError(f"the task {self.name!r} takes at most one of "
                                 f"{' and '.join(repr(g) for g in group)}")
        args, keys = {}, {}
        for key, value in cell.items():
            where = f"grid[{key!r}] (task {self.name!r})"
            if key == "model":
                args[key], keys[key] = _resolve_model(value, where, models)
            elif value is None and key not in self.required:
                args[key] = None
            else:
                args[key] = self.params[key](value, where)
        if self.checks is not None:
            self.checks(args, lambda key: f"grid[{key!r}] (task {self.name!r})")
        return args, keys

    def shards(self, args: dict) -> int:
        return _simulate_shards(args) if self.name == "simulate_best_of_n" else 1


def _bon_metrics(b) -> dict:
    return {k: float(getattr(b, k)) for k in ("kl", "expected_reward", "win_rate", "kl_bound",
                                               "win_rate_bound", "log_n")}


def _t_best_of_n(a, rng, threads):
    m = a["model"]
    b = tiltlab.best_of_n(m.logits, m.rewards, a.get("n"), log_n=a.get("log_n"),
                          n_threads=threads)
    return _bon_metrics(b)


def _t_frontier(a, rng, threads):
    m = a["model"]
    lam = tiltlab.solve_lambda(m.logits, m.rewards, a["kl"], n_threads=threads)
    er = tiltlab.frontier(m.logits, m.rewards, a["kl"], n_threads=threads)
    return {"lam": float(lam), "expected_reward": float(er)}


def _t_policy_frontier(a, rng, threads):
    m = a["model"]
    scalar = a.get("parameter") is not None
    grid = [a["parameter"]] if scalar else a["grid"]
    f = tiltlab.policy_frontier(m.logits, m.rewards, a["method"], grid, n=a.get("n"),
                                temperature=a.get("temperature"), n_threads=threads)
    if scalar:
        return {k: float(getattr(f, k)[0]) for k in ("kl", "expected_reward", "win_rate")}
    return {k: np.asarray(getattr(f, k), dtype=np.float64)
            for k in ("kl", "expected_reward", "win_rate")}


def _memoryless(a, threads):
    m = a["model"]
    step = a.get("step") if a.get("step") is not None else m.step
    return tiltlab.Memoryless(m.logits, m.rewards, a["length"], step=step, n_threads=threads)


def _t_sequence_best_of_n(a, rng, threads):
    b = _memoryless(a, threads).best_of_n(a.get("n"), log_n=a.get("log_n"))
    out = _bon_metrics(b)
    out["theta"] = float(b.theta)
    out["unresolved_weight"] = float(b.unresolved_weight)
    return out


def _simulate_plan(args: dict) -> tuple[int, int]:
    """(shards, samples per shard) of a simulate_best_of_n cell: depends on n and size only."""
    per = max(1, min(SHARD_SAMPLES, SHARD_DRAWS // args["n"]))
    return -(-args["size"] // per), per


def _simulate_shards(args: dict) -> int:
    return _simulate_plan(args)[0]


def _simulate_counts(a, rng, threads, size) -> np.ndarray:
    m = a["model"]
    y = tiltlab.simulate_best_of_n(m.logits, m.rewards, a["n"], size=size, rng=rng,
                                   n_threads=threads)
    return np.bincount(np.asarray(y).reshape(-1), minlength=m.logits.shape[-1]).astype(np.int64)


def _simulate_shard(a, seed, words, shard, threads) -> np.ndarray:
    shards, per = _simulate_plan(a)
    size = per if shard < shards - 1 else a["size"] - per * (shards - 1)
    return _simulate_counts(a, _generator(seed, words + (shard,)), threads, size)


def _simulate_finish(a, counts: np.ndarray, threads) -> dict:
    """The result of a simulate_best_of_n cell from its outcome counts: every sum is an
    exactly rounded sum over outcomes (math.fsum), so it depends on the counts only."""
    m = a["model"]
    r = np.asarray(m.rewards, dtype=np.float64)
    size = int(counts.sum())
    live = counts > 0
    mean = math.fsum((counts[live] * r[live]).tolist()) / size
    if size > 1:
        var = math.fsum((counts[live] * (r[live] - mean) ** 2).tolist()) / (size - 1)
        se = math.sqrt(var / size)
    else:
        se = math.inf
    exact = tiltlab.best_of_n(m.logits, m.rewards, a["n"], n_threads=threads).expected_reward
    return {"draws": size * a["n"], "counts": counts, "mean_reward": mean, "se_reward": se,
            "expected_reward": float(exact)}


def _t_simulate_best_of_n(a, rng, threads):
    return _simulate_finish(a, _simulate_counts(a, rng, threads, a["size"]), threads)


_STUDY_POLICIES = ("best_of_n", "worst_of_n", "soft_best_of_n", "best_of_poisson",
                   "rewind_and_repeat", "calibrated_tilt", "tilted")
_STUDY_LABELS = {"k1": "k1", "k2": "k2", "k3": "k3", "per-token (RB)": "rb",
                 "log N - (N-1)/N": "bound"}


def _study_policy(a, threads):
    m, kind, x = a["model"], a["policy"], a["parameter"]
    if a.get("length") is not None or kind == "tilted":
        if kind not in ("best_of_n", "tilted"):
            raise ValueError(f"estimator_study over sequences (length=) takes policy "
                             f"'best_of_n' or 'tilted'; got {kind!r}")
        seq = _memoryless({**a, "length": a.get("length") or 1}, threads)
        if kind == "tilted":
            return seq, x
        return seq.best_of_n(x), None
    lg, r = m.logits, m.rewards
    if kind == "best_of_n":
        return tiltlab.best_of_n(lg, r, x, n_threads=threads), None
    if kind == "soft_best_of_n":
        if a.get("temperature") is None:
            raise ValueError("estimator_study with policy 'soft_best_of_n' needs temperature")
        return tiltlab.soft_best_of_n(lg, r, x, a["temperature"], n_threads=threads), None
    fn = {"worst_of_n": tiltlab.worst_of_n, "best_of_poisson": tiltlab.best_of_poisson,
          "rewind_and_repeat": tiltlab.rewind_and_repeat,
          "calibrated_tilt": tiltlab.calibrated_tilt}[kind]
    return fn(lg, r, x), None


def _t_estimator_study(a, rng, threads):
    policy, lam = _study_policy(a, threads)
    s = tiltlab.estimator_study(policy, a["n_samples"], a["repeats"], rng, lam=lam)
    out = {"exact_kl": float(s.exact_kl)}
    for i, name in enumerate(s.estimator):
        label = _STUDY_LABELS.get(name, name)
        for field in ("mean", "bias", "std", "rmse"):
            out[f"{label}_{field}"] = float(getattr(s, field)[i])
    return out


def _pos_int(value, where):
    return _as_int(value, where, lo=1)


def _min2_int(value, where):
    return _as_int(value, where, lo=2)


def _at_least(args: dict, key: str, lo: float, where) -> None:
    if args.get(key) is not None and not args[key] >= lo:
        raise ValueError(f"{where(key)} must be >= {lo:g}; got {args[key]!r}")


def _check_bon(args: dict, where) -> None:
    _at_least(args, "n", 1.0, where)
    _at_least(args, "log_n", 0.0, where)


def _check_frontier(args: dict, where) -> None:
    _at_least(args, "kl", 0.0, where)


def _check_study(args: dict, where) -> None:
    kind = args["policy"]
    if (args.get("length") is not None or kind == "tilted") and \
            kind not in ("best_of_n", "tilted"):
        raise ValueError(f"{where('policy')}: over sequences (length=) the study takes "
                         f"policy 'best_of_n' or 'tilted'; got {kind!r}")
    if kind == "soft_best_of_n" and args.get("temperature") is None:
        raise ValueError(f"{where('temperature')}: policy 'soft_best_of_n' needs a temperature")
    if kind in ("best_of_n", "worst_of_n"):
        _at_least(args, "parameter", 1.0, where)


_MODEL = {"model": None}
TASKS: dict[str, _Task] = {
    t.name: t for t in (
        _Task("best_of_n", _t_best_of_n, {**_MODEL, "n": _as_real, "log_n": _as_real},
              required=("model",), one_of=(("n", "log_n"),), checks=_check_bon),
        _Task("frontier", _t_frontier, {**_MODEL, "kl": _as_real}, required=("model", "kl"),
              checks=_check_frontier),
        _Task("policy_frontier", _t_policy_frontier,
              {**_MODEL, "method": _as_choice(lambda: tiltlab.policies.METHODS),
               "parameter": _as_real, "grid": _as_reals, "n": _as_real,
               "temperature": _as_real},
              required=("model", "method"), one_of=(("parameter", "grid"),),
              at_most_one=(("n", "temperature"),)),
        _Task("sequence_best_of_n", _t_sequence_best_of_n,
              {**_MODEL, "length": _pos_int, "n": _as_real, "log_n": _as_real,
               "step": _as_real},
              required=("model", "length"), one_of=(("n", "log_n"),), checks=_check_bon),
        _Task("simulate_best_of_n", _t_simulate_best_of_n,
              {**_MODEL, "n": _pos_int, "size": _pos_int}, required=("model", "n", "size")),
        _Task("estimator_study", _t_estimator_study,
              {**_MODEL, "policy": _as_choice(lambda: _STUDY_POLICIES), "parameter": _as_real,
               "n_samples": _min2_int, "repeats": _min2_int, "length": _pos_int,
               "temperature": _as_real, "step": _as_real},
              required=("model", "policy", "parameter", "n_samples", "repeats"),
              checks=_check_study),
    )
}


# --------------------------------------------------------------------------------------
# running cells (in this process, in a pool worker or on a Dask worker)
# --------------------------------------------------------------------------------------

def _normalise_result(result, task_name: str) -> dict:
    if not isinstance(result, Mapping):
        raise TypeError(f"task {task_name} must return a mapping of names to scalars or "
                        f"arrays; got {type(result).__name__}")
    out = {}
    for k, v in result.items():
        if not isinstance(k, str):
            raise TypeError(f"task {task_name} returned a non-string key {k!r}")
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, (list, tuple)):
            v = np.asarray(v)
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in "biufcUS":
                raise TypeError(f"task {task_name} returned {k!r}, an array of dtype "
                                f"{v.dtype}; return numbers or strings")
            v = np.array(v)  # own, writeable copy
        elif not (v is None or isinstance(v, (bool, int, float, complex, str))):
            raise TypeError(f"task {task_name} returned {k!r} of type {type(v).__name__}; "
                            f"return scalars or arrays")
        out[k] = v
    return out


_WORKER_THREADS: list = [None]  # the kernels' thread count in this process (pool: 1)


def _pool_init() -> None:
    """A pool worker runs single-threaded kernels: OMP_NUM_THREADS for its children and a
    threadpoolctl limit (when installed) for the OpenMP and BLAS runtimes a user task
    reaches; the built-in tasks pass n_threads=1 themselves."""
    os.environ["OMP_NUM_THREADS"] = "1"
    _WORKER_THREADS[0] = 1
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _WORKER_THREADS.append(threadpool_limits(limits=1))  # kept: the limit lasts


def _run_units(task, seed: int, units: list, threads) -> list:
    """Run the units ``(uid, words, args, shard)`` of one batch; returns ``(uid, result)``.

    ``shard`` is None for a whole cell (result: its mapping) or the index of a shard of a
    split cell (result: the shard's partial, reduced by the caller in shard order)."""
    if threads is None:
        threads = _WORKER_THREADS[0]
    if isinstance(task, bytes):   # a user task shipped to a pool worker by value (_dumps)
        import pickle

        task = pickle.loads(task)
    out = []
    for uid, words, args, shard in units:
        if isinstance(task, str):
            spec = TASKS[task]
            if shard is not None:
                out.append((uid, _simulate_shard(args, seed, words, shard, threads)))
                continue
            res = spec.run(args, _generator(seed, words), threads)
        else:
            res = task(**args, rng=_generator(seed, words))
        out.append((uid, _normalise_result(res, task if isinstance(task, str) else
                                           getattr(task, "__qualname__", repr(task)))))
    return out


# --------------------------------------------------------------------------------------
# checkpoint: a parquet file of finished cells
# --------------------------------------------------------------------------------------

def _enc(v):
    if v is None:
        return ["n"]
    if isinstance(v, bool):
        return ["b", v]
    if isinstance(v, int):
        return ["i", str(v)]
    if isinstance(v, float):
        return ["f", v.hex()]
    if isinstance(v, complex):
        return ["c", v.real.hex(), v.imag.hex()]
    if isinstance(v, str):
        return ["s", v]
    import base64
    import io

    buf = io.BytesIO()
    np.save(buf, v, allow_pickle=False)
    return ["a", base64.b64encode(buf.getvalue()).decode("ascii")]


def _dec(e):
    t = e[0]
    if t == "n":
        return None
    if t == "b":
        return bool(e[1])
    if t == "i":
        return int(e[1])
    if t == "f":
        return float.fromhex(e[1])
    if t == "c":
        return complex(float.fromhex(e[1]), float.fromhex(e[2]))
    if t == "s":
        return e[1]
    import base64
    import io

    return np.load(io.BytesIO(base64.b64decode(e[1])), allow_pickle=False)


class _Checkpoint:
    """Finished cells in a parquet file: columns ``key`` (hex spawn key), ``params`` (the
    cell's parameters as text, for people) and ``result`` (JSON: floats as exact hex,
    arrays as base64 ``.npy``), and the sweep's signature in the file's metadata.  Every
    write goes to a temporary file in the same folder, then ``os.replace``: a crash leaves
    the previous complete file."""

    META = b"tiltlab.sweep"

    def __init__(self, path, signature: dict):
        import json

        import pyarrow.parquet as pq

        self.path = os.fspath(path)
        self.signature = signature
        self.rows: dict = {}
        self.dirty = False
        self.last = 0.0
        if os.path.exists(self.path):
            try:
                table = pq.read_table(self.path)
                meta = json.loads((table.schema.metadata or {})[self.META])
            except Exception as exc:  # noqa: BLE001 - any unreadable file is the same error
                raise ValueError(f"checkpoint {self.path!r} is not a tiltlab.sweep checkpoint "
                                 f"({type(exc).__name__}: {exc}); remove it or choose "
                                 f"another file") from None
            if meta != signature:
                diff = sorted(k for k in set(meta) | set(signature)
                              if meta.get(k) != signature.get(k))
                raise ValueError(f"checkpoint {self.path!r} was written by a different sweep "
                                 f"(it differs in {', '.join(diff)}: recorded "
                                 f"{ {k: meta.get(k) for k in diff} }, now "
                                 f"{ {k: signature.get(k) for k in diff} }); remove it or "
                                 f"choose another file")
            d = table.to_pydict()
            for key, params, res in zip(d["key"], d["params"], d["result"], strict=True):
                self.rows[key] = (params, res)

    def get(self, key: str):
        import json

        row = self.rows.get(key)
        if row is None:
            return None
        return {k: _dec(v) for k, v in json.loads(row[1]).items()}

    def add(self, key: str, params: Mapping, result: Mapping) -> None:
        import json

        text = ", ".join(f"{k}={v!r:.80}" for k, v in params.items())
        self.rows[key] = (text, json.dumps({k: _enc(v) for k, v in result.items()}))
        self.dirty = True
        if time.monotonic() - self.last >= _CHECKPOINT_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self.dirty:
            return
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = list(self.rows)
        table = pa.table({"key": pa.array(keys, pa.string()),
                          "params": pa.array([self.rows[k][0] for k in keys], pa.string()),
                          "result": pa.array([self.rows[k][1] for k in keys], pa.string())})
        table = table.replace_schema_metadata({self.META: json.dumps(self.signature)})
        tmp = f"{self.path}.tmp-{os.getpid()}"
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as f:   # on disk before it replaces the previous file
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.dirty = False
        self.last = time.monotonic()


# --------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------

class _Progress:
    def __init__(self, total: int, enabled: bool, what: str, note: str | None = None):
        self.total, self.done, self.enabled = total, 0, enabled
        self.start = self.last = time.monotonic()
        self.bar = None
        self.what = what
        if not enabled:
            return
        if note:
            print(f"sweep: {note}", file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, desc="sweep", unit=what, file=sys.stderr)

    def update(self, k: int = 1) -> None:
        self.done += k
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(k)
            return
        now = time.monotonic()
        if now - self.last >= _PROGRESS_EVERY:
            self.last = now
            print(f"sweep: {self.done}/{self.total} {self.what}s ({now - self.start:.0f} s)",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            print(f"sweep: {self.done}/{self.total} {self.what}s "
                  f"({time.monotonic() - self.start:.1f} s)", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------------------

def _cells(grid) -> list[dict]:
    import itertools

    if isinstance(grid, Mapping):
        names, values = [], []
        for name, vals in grid.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"grid keys must be parameter names; got {name!r}")
            if isinstance(vals, (str, bytes, Mapping)) or not isinstance(
                    vals, (Sequence, np.ndarray, range)):
                raise TypeError(f"grid[{name!r}] must be a list of values; got {vals!r:.80}")
            vals = list(vals)
            if not vals:
                raise ValueError(f"grid[{name!r}] is empty")
            names.append(name)
            values.append(vals)
        if not names:
            raise ValueError("grid has no cells (an empty dict)")
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence):
        raise TypeError(f"grid must be a dict of name -> list of values or a list of dicts; "
                        f"got {type(grid).__name__}")
    cells = []
    for i, cell in enumerate(grid):
        if not isinstance(cell, Mapping):
            raise TypeError(f"grid[{i}] must be a dict of parameters; got {cell!r:.80}")
        for name in cell:
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"grid[{i}] has a key that is not a parameter name: {name!r}")
        cells.append(dict(cell))
    if not cells:
        raise ValueError("grid has no cells")
    return cells


def _by_reference(task) -> bool:
    """A module-level function another process can import by its name (not defined in
    ``__main__``, not a lambda or a local function)."""
    import types

    if not isinstance(task, types.FunctionType):
        return False
    mod, qual = getattr(task, "__module__", None), getattr(task, "__qualname__", "")
    if not mod or mod == "__main__" or "<" in qual or "." in qual:
        return False
    obj = sys.modules.get(mod)
    return obj is not None and getattr(obj, qual, None) is task


def _task_id(task) -> str:
    """The task's identity in a checkpoint's signature, so that a checkpoint is never read
    back by a different task: a built-in task's name; a named function's
    ``module.qualname`` (``__main__`` included: a script or notebook that fixes its function
    and runs again resumes its sweep); a ``functools.partial`` by its function and a digest
    of its arguments; anything else (a lambda, a local function, a callable object) by its
    name and a digest of it pickled by value."""
    import functools
    import hashlib
    import types

    if isinstance(task, str):
        return task
    if isinstance(task, types.FunctionType) and "<" not in task.__qualname__:
        return f"{task.__module__}.{task.__qualname__}"
    try:
        if isinstance(task, functools.partial):
            blob = _dumps((task.args, task.keywords))
            name = f"partial({_task_id(task.func)})"
        else:
            blob = _dumps(task)
            name = getattr(task, "__qualname__", type(task).__qualname__)
    except TypeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the same error
        raise TypeError(f"task {task!r:.60} cannot be pickled, so a checkpoint cannot know "
                        f"it again: {type(exc).__name__}: {exc}") from None
    return f"{name}@{hashlib.sha256(blob).hexdigest()[:32]}"


def _dumps(task) -> bytes:
    """The task pickled for other processes: by value (cloudpickle, which the distributed
    extra brings) unless it is a module-level function importable by name."""
    import pickle

    if _by_reference(task):
        return pickle.dumps(task)
    try:
        import cloudpickle
    except ImportError:
        return pickle.dumps(task)
    return cloudpickle.dumps(task)


def _check_int(value, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}; got {value}")
    return int(value)


def _require(*modules: str) -> None:
    """Each of the optional modules a sweep needs, or MissingDependency naming the extra."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency(f"tiltlab.sweep needs the distributed extra (dask[distributed], "
                                f"pandas, pyarrow; missing here: {', '.join(missing)}): "
                                f'pip install "tiltlab[distributed]"')


def _connect(scheduler):
    if not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be an address such as 'tcp://host:8786'; got "
                        f"{scheduler!r}")
    import dask
    from distributed import Client

    timeout = dask.config.get("distributed.comm.timeouts.connect")
    try:
        return Client(scheduler, timeout=timeout, set_as_default=False)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the scheduler is unusable
        raise ValueError(f"scheduler {scheduler!r} is unreachable within {timeout} "
                         f"({type(exc).__name__}: {exc})") from None


def sweep(task, grid, *, client=None, scheduler=None, n_workers=None, seed=0,
          checkpoint=None, progress=None):
    """Run a task on every cell of a grid, reproducibly, in-process, on a pool or on Dask.

    Parameters
    ----------
    task : str or callable
        A built-in task (below) or any callable ``f(**params, rng) -> Mapping`` of names to
        scalars or arrays, where ``rng`` is the cell's :class:`numpy.random.Generator`.  A
        callable run on a process pool or on Dask must be picklable (a module-level
        function; Dask also takes lambdas and closures).
    grid : dict or list of dict
        Name -> list of values (the cells are the Cartesian product, the last name varying
        fastest), or a list of dicts (explicit cells, which may name different parameters).
    client : dask.distributed.Client, optional
        Run the cells as Dask futures on this client's cluster.
    scheduler : str, optional
        Address of a Dask scheduler (``"tcp://host:8786"``) to connect to, instead of
        ``client``; the connection waits at most ``distributed.comm.timeouts.connect``
        (Dask's configuration), then raises ValueError.
    n_workers : int, optional
        Local processes; 1 runs the cells in this process (and so does a sweep with one
        piece of work).  Default: one per core (``os.cpu_count()``).
    seed : int, default 0
        Root of every cell's random stream (a non-negative integer).
    checkpoint : str or path, optional
        A parquet file recording finished cells as they complete; a re-run with the same
        task and seed computes only the cells it lacks (the grid may change: cells are
        found by their parameters).  A file written by a different sweep (another task,
        seed or format) is a ValueError.  A task is the same task when it is the same
        built-in, a function of the same module and name (``__main__`` included, so a
        fixed version of a script's or notebook's function resumes its sweep), a
        ``functools.partial`` of the same function with arguments that pickle to the same
        bytes, or anything else (a lambda, a local function, a callable object) that
        pickles to the same bytes.
    progress : bool, optional
        Progress on stderr: a tqdm bar on a terminal when tqdm is installed, otherwise a
        line every 5 s and one at the end (with Dask, the dashboard address first).
        False: silent.  Default: on.

    Returns
    -------
    pandas.DataFrame
        One row per cell in grid order: the cell's parameters, then its results (scalars as
        columns; arrays as object cells holding a NumPy array; a result a cell lacks is
        missing; a result named like a parameter is the column ``<name>_result``).  The row
        order does not depend on the order of completion.

    Raises
    ------
    ValueError, TypeError
        Before any cell runs: an unknown task, a grid key that is not a parameter of a
        built-in task, a missing required parameter, a value of the wrong type (the message
        names the grid key), an unpicklable ``task`` for a pool or Dask, an unreachable
        ``scheduler``, a bad ``seed``, ``n_workers`` or ``checkpoint``.  An error raised by
        a cell is re-raised with a note naming the cell, after the finished cells have been
        written to the checkpoint.

    Notes
    -----
    **Random streams.**  Cell ``c`` draws from
    ``Generator(PCG64(SeedSequence(seed, spawn_key=k(c))))`` where ``k(c)`` is 8 words of
    the SHA-256 of a canonical, type-tagged encoding of the cell's parameters (sorted by
    name).  Numbers are keyed by exact value: ``n=4`` and ``n=4.0`` are the same cell (the
    task receives the value as given; the built-in tasks convert integral floats to int);
    ``True`` is not ``1``.  A ``model`` of a built-in task is keyed by its name (a built-in
    model), by the contents of its ``.npz`` file (a path), or by its arrays and step (a
    :class:`tiltlab.Model`).  So the stream depends on ``seed`` and the parameters only,
    never on the position in the grid, the worker or the order of completion; the table is
    bitwise the same serially, on a pool, on Dask and when resumed.  Two tasks with the
    same parameters share a stream.

    **Backends.**  The pool uses the ``forkserver`` start method (``spawn`` where there is
    none): workers are forked from a clean server process, never from this one, so no
    OpenMP state is inherited through fork.  Its ``n_workers`` processes run
    single-threaded kernels (``n_threads=1`` in the built-in tasks, a ``threadpoolctl``
    limit of 1 for user tasks when threadpoolctl is installed, ``OMP_NUM_THREADS=1`` for
    their children).  Cells are sent in batches (about 8 per worker, at most 256 cells
    each) to amortise the messages.  When a pool worker process dies (killed, out of
    memory, a crash), the batches without a result are rerun on a new pool, at most
    ``POOL_RESTARTS`` (3) times, then RuntimeError.  On Dask each batch is a future (``pure=False``,
    ``retries=1``); when a worker dies, the scheduler runs its batches on other workers
    (up to ``distributed.scheduler.allowed-failures`` times).  Dask's nanny starts its
    workers with ``OMP_NUM_THREADS=1``.

    **Split cells.**  A ``simulate_best_of_n`` cell of more than ``SHARD_DRAWS`` (2^24)
    candidate draws (``n * size``) or ``SHARD_SAMPLES`` (2^21) samples is split into
    ``ceil(size / per)`` shards of ``per = max(1, min(2^21, 2^24 // n))`` samples (the last
    one shorter).  Shard ``i`` draws from the ``i``-th child of the cell's SeedSequence
    (``spawn_key=k(c) + (i,)``) and returns its counts per outcome; the counts are added
    in shard order and every derived sum is an exactly rounded sum over outcomes, so the
    result is the same on any backend.  The plan depends on the cell only.  (The draws
    differ from one unsplit ``tiltlab.simulate_best_of_n`` call of the same size, whose
    stream no shard can continue.)  The shards of one cell run in parallel on the pool or
    cluster.  ``estimator_study`` cells are not split.

    **Checkpoint.**  Columns ``key`` (the cell's spawn key in hex), ``params`` (text) and
    ``result`` (JSON: floats as exact hex strings, arrays as base64 ``.npy``, so arrays and
    every bit survive the round trip); the file's metadata holds the signature
    ``{"format", "task", "seed", "shard_draws", "shard_samples"}``.  The file is rewritten
    at most once a second while cells finish, and at the end or when a cell fails,
    through a temporary file and ``os.replace``.  A split cell is recorded once all its
    shards are in.

    **Built-in tasks.**  Each takes ``model`` (a built-in model name such as
    ``"ternary"``, an ``.npz`` path, or a :class:`tiltlab.Model`) and the parameters of the
    function it wraps, one value each:

    ``best_of_n``
        :func:`tiltlab.best_of_n`; ``n`` or ``log_n``.  Results ``kl``,
        ``expected_reward``, ``win_rate``, ``kl_bound``, ``win_rate_bound``, ``log_n``.
    ``frontier``
        :func:`tiltlab.frontier` and :func:`tiltlab.solve_lambda`; ``kl``.  Results
        ``lam``, ``expected_reward``.
    ``policy_frontier``
        :func:`tiltlab.policy_frontier`; ``method``, ``parameter`` (one grid point:
        scalar results) or ``grid`` (a list: array results), optional ``n`` or
        ``temperature`` (soft best-of-n).  Results ``kl``, ``expected_reward``,
        ``win_rate``.
    ``sequence_best_of_n``
        :meth:`tiltlab.Memoryless.best_of_n`; ``length``, ``n`` or ``log_n``, optional
        ``step`` (default: the model's).  Results as ``best_of_n`` plus ``theta`` and
        ``unresolved_weight``.
    ``simulate_best_of_n``
        :func:`tiltlab.simulate_best_of_n`; integers ``n`` and ``size`` (samples).  Results
        ``draws`` (``n * size``), ``counts`` (int64 array: samples per outcome),
        ``mean_reward`` and its standard error ``se_reward``, and the exact
        ``expected_reward`` to compare with.
    ``estimator_study``
        :func:`tiltlab.estimator_study`; ``policy`` (``best_of_n``, ``worst_of_n``,
        ``soft_best_of_n`` with ``temperature``, ``best_of_poisson``,
        ``rewind_and_repeat``, ``calibrated_tilt``; with ``length``: ``best_of_n`` over
        sequences, or ``tilted`` with ``parameter`` the tilt lam), ``parameter`` (the
        policy's N, mu, eps, c or lam), ``n_samples``, ``repeats``, optional ``length``
        and ``step``.  Results ``exact_kl`` and, per estimator ``k1``, ``k2``, ``k3``,
        ``rb`` (per-token, sequences) and ``bound`` (``log N - (N-1)/N``, best-of-N),
        the columns ``<estimator>_mean``, ``_bias``, ``_std``, ``_rmse``.

    Examples
    --------
    >>> import tiltlab
    >>> t = tiltlab.sweep("best_of_n", {"model": ["ternary"], "n": [1, 4, 16]},
    ...                   n_workers=1, progress=False)
    >>> t[["n", "kl", "win_rate"]].round(4).values.tolist()
    [[1.0, 0.0, 0.5], [4.0, 0.5598, 0.7726], [16.0, 1.4696, 0.893]]
    >>> mc = tiltlab.sweep("simulate_best_of_n", {"model": ["ternary"], "n": [4],
    ...                    "size": [10, 1000]}, n_workers=1, seed=1, progress=False)
    >>> [int(c.sum()) for c in mc["counts"]], list(mc.columns[3:])
    ([10, 1000], ['draws', 'counts', 'mean_reward', 'se_reward', 'expected_reward'])
    """
    # ---- arguments (nothing runs before they are all checked) ----
    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)} or a callable; got "
                             f"{task!r}")
        spec = TASKS[task]
    elif callable(task):
        spec = None
    else:
        raise TypeError(f"task must be a built-in task name or a callable; got {task!r:.80}")
    seed = _check_int(seed, "seed", 0)
    if n_workers is not None:
        n_workers = _check_int(n_workers, "n_workers", 1)
    if client is not None and scheduler is not None:
        raise ValueError("give client or scheduler, not both")
    if (client is not None or scheduler is not None) and n_workers is not None:
        raise ValueError("n_workers is for the local pool; with client or scheduler the "
                         "cluster's workers run the cells")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None; got {progress!r}")
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a file path; got {checkpoint!r}")
        folder = os.path.dirname(os.path.abspath(os.fspath(checkpoint)))
        if os.path.isdir(os.fspath(checkpoint)):
            raise ValueError(f"checkpoint {os.fspath(checkpoint)!r} is a folder; give a file")
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"checkpoint {os.fspath(checkpoint)!r}: its folder {folder!r} "
                             f"does not exist or is not writable")
    cells = _cells(grid)
    models: dict = {}
    args, keys = [], []
    for cell in cells:
        if spec is not None:
            a, mkeys = spec.check(cell, models)
        else:
            if "rng" in cell:
                raise ValueError("grid must not name 'rng': the task receives the cell's "
                                 "random generator as rng")
            a, mkeys = cell, None
        args.append(a)
        keys.append(cell_key(cell, model_keys=mkeys))
    use_dask = client is not None or scheduler is not None
    _require("pandas", *(("pyarrow",) if checkpoint is not None else ()),
             *(("dask", "distributed") if use_dask else ()))
    import pandas as pd

    ckpt = None
    if checkpoint is not None:
        signature = {"format": _FORMAT, "task": _task_id(task), "seed": seed,
                     "shard_draws": SHARD_DRAWS, "shard_samples": SHARD_SAMPLES}
        ckpt = _Checkpoint(checkpoint, signature)

    # ---- the work: unique cells not in the checkpoint, split into units ----
    hexkeys = ["".join(f"{w:08x}" for w in k) for k in keys]
    results: dict = {}
    todo: dict = {}   # hex key -> index of its first cell
    for i, hk in enumerate(hexkeys):
        if hk in results or hk in todo:
            continue
        got = ckpt.get(hk) if ckpt is not None else None
        if got is not None:
            results[hk] = got
        else:
            todo[hk] = i
    units = []       # (uid, words, args, shard)
    n_shards: dict = {}
    for hk, i in todo.items():
        k = spec.shards(args[i]) if spec is not None else 1
        if k > 1:
            n_shards[hk] = k
            units.extend(((hk, s), keys[i], args[i], s) for s in range(k))
        else:
            units.append(((hk, None), keys[i], args[i], None))

    local = not use_dask and (n_workers == 1 or len(units) <= 1)
    if not local:
        if not use_dask and n_workers is None:
            n_workers = os.cpu_count() or 1
            local = n_workers == 1
    if not local:
        try:
            if use_dask:
                from distributed.protocol.pickle import dumps as pdumps
            else:
                from pickle import dumps as pdumps
            if spec is None:
                # the pool gets a function of __main__, a lambda or a closure by value
                # (cloudpickle): its workers could not import it by name
                shipped = _dumps(task)
                if not use_dask:
                    task = shipped
                else:
                    pdumps(task)
        except Exception as exc:  # noqa: BLE001 - any pickling failure is the same error
            raise TypeError(f"task must be picklable to run on a process pool or on Dask "
                            f"(n_workers=1 runs it in this process): {type(exc).__name__}: "
                            f"{exc}") from None
        try:
            pdumps([u[2] for u in units])
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"grid values must be picklable to run on a process pool or on "
                            f"Dask: {type(exc).__name__}: {exc}") from None
    own_client = None
    if scheduler is not None:
        client = own_client = _connect(scheduler)

    # ---- run ----
    shard_parts: dict = {}
    what = "piece" if n_shards else "cell"
    note = None
    if use_dask:
        note = f"Dask dashboard at {client.dashboard_link}"
    bar = _Progress(len(units), progress is not False, what, note)

    def record(uid, res):
        hk, shard = uid
        i = todo[hk]
        if shard is not None:
            parts = shard_parts.setdefault(hk, {})
            parts[shard] = res
            if len(parts) < n_shards[hk]:
                return
            counts = parts[0].copy()
            for s in range(1, n_shards[hk]):
                counts += parts[s]
            del shard_parts[hk]
            res = _normalise_result(_simulate_finish(args[i], counts, None), spec.name)
        results[hk] = res
        if ckpt is not None:
            ckpt.add(hk, cells[i], res)

    def consume(batch_result):
        for uid, res in batch_result:
            record(uid, res)
        bar.update(len(batch_result))

    try:
        if local:
            for u in units:
                try:
                    consume(_run_units(task, seed, [u], None))
                except Exception as exc:
                    _note(exc, cells[todo[u[0][0]]])
                    raise
        else:
            workers = (sum(client.nthreads().values()) if use_dask else n_workers) or 1
            batches = _batches(units, workers)
            if use_dask:
                _run_dask(client, task, seed, batches, consume, cells, todo)
            else:
                _run_pool(n_workers, task, seed, batches, consume, cells, todo)
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.flush()
        if own_client is not None:
            own_client.close()

    # ---- the table, in grid order ----
    pcols = list(dict.fromkeys(k for c in cells for k in c))
    rows = [results[hk] for hk in hexkeys]
    rcols = list(dict.fromkeys(k for r in rows for k in r))
    data = {}
    for name in pcols:
        data[name] = _column([c.get(name) for c in cells], pd)
    for name in rcols:   # a result named like a parameter is kept as <name>_result
        col = name if name not in pcols else f"{name}_result"
        while col in data:
            col += "_"
        data[col] = _column([r.get(name) for r in rows], pd)
    return pd.DataFrame(data)


def _column(values: list, pd):
    if any(isinstance(v, (np.ndarray, tiltlab.Model)) or (isinstance(v, (list, tuple, dict)))
           for v in values):
        col = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            col[i] = v
        return pd.Series(col, dtype=object)
    return pd.Series(values)


def _note(exc: BaseException, cell: Mapping) -> None:
    if hasattr(exc, "add_note"):
        exc.add_note(f"tiltlab.sweep: in the cell {dict(cell)!r:.300}")


def _batch_cells(batch: list, cells: list, todo: dict):
    """The cell of a one-unit batch, or the first cells of a larger one (for messages)."""
    if len(batch) == 1:
        return cells[todo[batch[0][0][0]]]
    return {"batch of cells": [cells[todo[u[0][0]]] for u in batch][:5]}


def _batches(units: list, workers: int) -> list:
    """Shards (all of about the same cost) in a multiple of ``workers`` batches of at most
    about 4 consecutive shards: every worker gets the same share without a scheduler round
    trip per shard; whole cells in grid-order batches of about len / (8 workers).  Batches
    only group the work: the results do not depend on them."""
    shards = [u for u in units if u[3] is not None]
    plain = [u for u in units if u[3] is None]
    out = []
    if shards:
        k = min(len(shards), workers * max(1, round(len(shards) / (4 * workers))))
        bounds = [len(shards) * i // k for i in range(k + 1)]
        out += [shards[bounds[i]:bounds[i + 1]] for i in range(k)]
    size = max(1, min(256, -(-len(plain) // (8 * workers))))
    return out + [plain[i:i + size] for i in range(0, len(plain), size)]


def _run_pool(n_workers, task, seed, batches, consume, cells, todo) -> None:
    """The batches on a local process pool.  A worker process that dies (killed, out of
    memory, a crash in a task) breaks the pool: the batches without a result are rerun on a
    new pool, at most ``POOL_RESTARTS`` times; finished batches are kept."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")

    left, restarts = list(batches), 0
    while left:
        pending: dict = {}
        lost: list = []
        with ProcessPoolExecutor(max_workers=min(n_workers, len(left)), mp_context=ctx,
                                 initializer=_pool_init) as pool:
            try:
                pending = {pool.submit(_run_units, task, seed, b, 1): b for b in left}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        b = pending.pop(fut)
                        try:
                            res = fut.result()
                        except BrokenProcessPool:
                            lost.append(b)
                            continue
                        except Exception as exc:
                            _note(exc, _batch_cells(b, cells, todo))
                            raise
                        consume(res)
                    if lost:   # the pool is broken: every other future fails the same way
                        for fut, b in list(pending.items()):
                            if fut.done() and not fut.cancelled() and fut.exception() is None:
                                consume(fut.result())
                            else:
                                lost.append(b)
                        pending = {}
            finally:
                for fut in pending:
                    fut.cancel()
        left = lost
        if left:
            restarts += 1
            if restarts > POOL_RESTARTS:
                raise RuntimeError(
                    f"a worker process of the local pool died {restarts} times running "
                    f"{len(left)} batch(es) of cells (first: "
                    f"{_batch_cells(left[0], cells, todo)}); the finished cells are kept (and "
                    f"in the checkpoint, if any)")
            print(f"sweep: a pool worker process died; rerunning {len(left)} batch(es) on a "
                  f"new pool ({restarts}/{POOL_RESTARTS})", file=sys.stderr, flush=True)


def _run_dask(client, task, seed, batches, consume, cells, todo) -> None:
    from distributed import as_completed

    # no retries: a cell that raises raises again; the batches of a worker that dies are
    # rerun by the scheduler itself (distributed.scheduler.allowed-failures)
    futures = [client.submit(_run_units, task, seed, b, 1, pure=False) for b in batches]
    owner = {f.key: b for f, b in zip(futures, batches, strict=True)}
    try:
        # the client's own loop: a client made from scheduler= is not the default client
        for fut, res in as_completed(futures, with_results=True, raise_errors=False,
                                     loop=client.loop):
            if fut.status == "error":
                b = owner[fut.key]
                try:
                    fut.result()
                except Exception as exc:
                    _note(exc, _batch_cells(b, cells, todo))
                    raise
            consume(res)
    finally:
        for f in futures:
            if not f.done():
                f.cancel()
