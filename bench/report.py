"""Run the benchmarks and print one markdown table of medians and same-run ratios.

    python bench/report.py            # the issue's sizes (several minutes)
    python bench/report.py --quick    # small sizes, under a minute (what CI runs)
    python bench/report.py --save     # also write bench/results/<date>-<label>.json
    python bench/report.py -k logsumexp
    python bench/report.py --compare bench/results/A.json bench/results/B.json   # history

The ratio columns divide another implementation's median (same run, same data) by this
one: "× reference" is how many times faster than tiltlab.reference, "× numpy-simple"
than the few-line NumPy a researcher writes (bench/baselines.py), "× numpy-tiled" than
NumPy tiled to L2-sized blocks with out= buffers (the honest fast-NumPy bar), "× torch"
than torch CPU with 2 threads (skipped when torch is not installed), "× scipy" than
scipy.special.logsumexp, "× numba" than a plain numba @njit(parallel=True) loop on 2
threads (skipped when numba is not installed).  "compiled-2t-portable" and
"compiled-2t-avx2" force the portable (SSE2) and the avx2 kernels, so the gain of the
SIMD variant in use is measured in the same run, and the avx2 variant (the product's
target machines have no AVX-512) is shown on any CPU that runs it.  ns/elem = median /
elements.

"× limit" goes the other way: this row's median divided by the group's limit row,
measured in the same run over the same arrays: "stream-add" (np.add(L, R, out=o), for
the kernels that read two arrays), "stream-sum" (L.sum(axis=-1), for logsumexp),
"stream-copy" (np.multiply(L, 1.0, out=o), for softmax and log_softmax) or
"rng-random" (Generator.random, one uniform per draw, for the samplers).  1.0 is the
machine's limit; the targets of issue 16 are <= 2 for tilt_stats, cumulants and the KL
kernel and <= 2.5 for logsumexp.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_benchmarks(quick: bool, select: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "pytest", str(HERE), "-q", "-p", "no:cacheprovider",
               "--benchmark-only", f"--benchmark-json={out}", "--benchmark-disable-gc",
               "-o", "python_files=bench_*.py", "--rootdir", str(HERE)]
        if quick:
            cmd.append("--quick")
        if select:
            cmd += ["-k", select]
        proc = subprocess.run(cmd, cwd=HERE)
        if proc.returncode != 0:
            sys.exit(proc.returncode)
        return json.loads(out.read_text())


def table(data: dict) -> str:
    groups: dict[str, list] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b["group"], []).append(b)
    lines = ["| benchmark | implementation | median | ns/elem | × limit | × reference "
             "| × numpy-simple | × numpy-tiled | × torch | × numba | × scipy | notes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for group in sorted(groups, key=_group_key):
        rows = groups[group]
        med = {b["extra_info"]["impl"]: b["stats"]["median"] for b in rows}
        limit = next((med[k] for k in LIMIT_ROWS if k in med), None)

        def faster(other, m, med=med):
            return f"{med[other] / m:.1f}" if other in med else ""

        for b in sorted(rows, key=lambda b: _impl_key(b["extra_info"]["impl"])):
            impl = b["extra_info"]["impl"]
            m = b["stats"]["median"]
            n = b["extra_info"]["n_elements"]
            vs_limit = f"{m / limit:.2f}" if limit else ""
            info = b["extra_info"]
            passes = f"{info['passes']} passes" if info.get("passes") else ""
            if "kl_error" in info:
                passes = f"KL rel. error {info['kl_error']:.1e}"
            lines.append(f"| {group} | {impl} | {_fmt_time(m)} | {m / n * 1e9:.2f} "
                         f"| {vs_limit} | {faster('reference', m)} "
                         f"| {faster('numpy-simple', m)} | {faster('numpy-tiled', m)} "
                         f"| {faster('torch-2t', m)} | {faster('numba-2t', m)} "
                         f"| {faster('scipy', m)} | {passes} |")
    return "\n".join(lines)


# the machine-limit rows (bench_limits.py), at most one per group
LIMIT_ROWS = ("stream-add", "stream-sum", "stream-copy", "rng-random")


def _group_key(g: str):
    name, shape, rest = (g.split(maxsplit=2) + ["", "", ""])[:3]
    rows, _, cols = shape.partition("x")
    if rows.isdigit() and cols.isdigit():
        return (name, int(rows), int(cols), rest)
    return (name, 0, 0, shape + " " + rest)


def _impl_key(impl: str):
    order = ["compiled-1t", "compiled-2t", "compiled-2t-avx2", "compiled-2t-portable",
             "reference", "numpy-simple", "numpy-tiled", "torch-2t", "numba-2t", "scipy",
             "stream-add", "stream-sum", "stream-copy", "rng-random"]
    return order.index(impl) if impl in order else len(order)


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def machine() -> str:
    import numpy as np

    import tiltlab

    info = tiltlab.build_info()
    others = "".join(f", {name} {_version(name)}" for name in ("torch", "numba")
                     if _version(name))
    return (f"{_cpu_name()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, NumPy {np.__version__}{others}, tiltlab "
            f"{info['version']} (OpenMP {info['openmp']}, {info['max_threads']} threads, "
            f"SIMD variant {info['simd']}; compiled {'/'.join(info['simd_compiled'])}; "
            f"this CPU runs {'/'.join(info['simd_supported'])})")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def compare(before: dict, after: dict) -> str:
    """Markdown table of the compiled medians of two saved runs (same group and impl)."""
    def medians(d):
        return {(b["group"], b["extra_info"]["impl"]): (b["stats"]["median"],
                                                       b["extra_info"]["n_elements"])
                for b in d["benchmarks"]}
    mb, ma = medians(before), medians(after)
    lines = ["| benchmark | implementation | before | after | before ns/elem | after ns/elem "
             "| speed-up |", "|---|---|---:|---:|---:|---:|---:|"]
    for key in sorted(set(mb) & set(ma), key=lambda k: (_group_key(k[0]), _impl_key(k[1]))):
        if not key[1].startswith("compiled"):
            continue
        (tb, n), (ta, _) = mb[key], ma[key]
        lines.append(f"| {key[0]} | {key[1]} | {_fmt_time(tb)} | {_fmt_time(ta)} "
                     f"| {tb / n * 1e9:.2f} | {ta / n * 1e9:.2f} | {tb / ta:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    parser.add_argument("--save", action="store_true", help="write bench/results/*.json")
    parser.add_argument("--label", default="", help="label for --save")
    parser.add_argument("-k", dest="select", default=None, help="pytest -k expression")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                        help="print the before/after table of two saved JSON files and exit")
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(Path(f).read_text()) for f in args.compare)
        print(compare(before, after))
        return 0
    data = run_benchmarks(args.quick, args.select)
    print()
    print(f"machine: {machine()}")
    print(f"sizes: {'quick' if args.quick else 'full'}; medians over pedantic rounds\n")
    print(table(data))
    if args.save:
        results = HERE / "results"
        results.mkdir(exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = results / f"{stamp}{'-' + args.label if args.label else ''}.json"
        slim = {"machine": machine(), "quick": args.quick,
                "benchmarks": [{"group": b["group"], "extra_info": b["extra_info"],
                                "stats": {k: b["stats"][k] for k in ("median", "min", "max",
                                                                     "rounds")}}
                               for b in data["benchmarks"]]}
        path.write_text(json.dumps(slim, indent=1))
        print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
