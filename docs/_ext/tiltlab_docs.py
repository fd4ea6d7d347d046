"""Pages the tiltlab documentation generates at build time (into ``docs/_generated/``).

- ``spec/``: docs/SPEC.md split into one page per numbered section (SPEC.md stays the one
  source; its headings move up one level so that each section is a page title).
- ``benchmarks.md``: the tables of every run stored in ``bench/results/*.json``, rendered by
  ``bench/report.py`` (newest first).
- ``gallery/``: ``tiltlab.reproduce`` at the quick sizes (a few seconds), each figure with
  its caption from the report and its CSV tables as downloads.

Files are rewritten only when their text changes, so an incremental build re-reads only
what changed.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from sphinx.util import logging

LOG = logging.getLogger(__name__)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def split_spec(spec: Path, out: Path) -> list[str]:
    """Write the preamble of SPEC.md as ``index.md`` and each ``## N. Title`` section as a
    page of its own; return the page names in order."""
    lines = spec.read_text(encoding="utf-8").splitlines()
    cuts = [i for i, line in enumerate(lines) if re.match(r"## \d+\. ", line)]
    pages = []
    for k, start in enumerate(cuts):
        stop = cuts[k + 1] if k + 1 < len(cuts) else len(lines)
        body = [line[1:] if line.startswith("##") else line for line in lines[start:stop]]
        name = "section-" + lines[start].split()[1].rstrip(".")
        pages.append(name)
        _write(out / f"{name}.md", "\n".join(body).rstrip() + "\n")
    preamble = lines[:cuts[0]]
    while preamble and preamble[-1].strip() in ("", "-" * len(preamble[-1].strip())):
        preamble.pop()
    intro = ["(spec)="] + preamble + [
        "",
        "The specification is the file `docs/SPEC.md` of the repository; these pages show it "
        "one section at a time.",
        "",
        "```{toctree}",
        ":maxdepth: 2",
        "",
        *pages,
        "```",
    ]
    _write(out / "index.md", "\n".join(intro) + "\n")
    return pages


def _load_bench_report(root: Path):
    spec = importlib.util.spec_from_file_location("tiltlab_bench_report",
                                                  root / "bench" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_page(root: Path, out: Path) -> None:
    report = _load_bench_report(root)
    runs = sorted((root / "bench" / "results").glob("*.json"), reverse=True)
    md = ["(benchmarks)=", "# Benchmark tables", "",
          "The runs of `python bench/report.py --save` stored in `bench/results/`, newest "
          "first: medians of pytest-benchmark and ratios measured in the same run (how the "
          "columns are defined is in `bench/report.py`). They were measured on the project's "
          "2-core development machine, which is shared and noisy: read the ratios, not the "
          "absolute times. To measure your machine, from a clone: "
          "`python bench/report.py --quick` (under a minute) or `python bench/report.py`.", ""]
    for path in runs:
        data = json.loads(path.read_text(encoding="utf-8"))
        stamp, _, label = path.stem.partition("-")
        clock, _, label = label.partition("-")
        when = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {clock[:2]}:{clock[2:4]}"
        md += [f"## {label or path.stem} ({when})", "",
               f"`bench/results/{path.name}`; {'quick' if data.get('quick') else 'full'} "
               f"sizes; machine: {data.get('machine', 'not recorded')}.", "",
               report.table(data), ""]
    _write(out / "benchmarks.md", "\n".join(md))


def gallery(out: Path) -> None:
    import tiltlab

    folder = out / "gallery"
    report = tiltlab.reproduce("ternary", folder, quiet=True, force=True)
    run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    text = report.read_text(encoding="utf-8")
    # the report's sections: "## Figure i. title", the image, the caption, the data line
    sections = re.split(r"^## ", text, flags=re.M)
    intro = sections[0].split("\n", 1)[1].strip()
    md = ["(gallery)=", "# Gallery: the figures of `tiltlab reproduce`", "",
          "Built with the documentation by `tiltlab.reproduce(\"ternary\", out)` at the quick "
          f"sizes ({run['total_seconds']:.1f} s on the machine that built these pages); "
          "`tiltlab reproduce --full` draws the same figures at the large sizes. The text "
          "below is the report's (`report.md`).", "", intro, ""]
    for sec in sections[1:]:
        head, _, body = sec.partition("\n")
        md += [f"## {head.strip()}", ""]
        for block in body.strip().split("\n\n"):
            img = re.fullmatch(r"!\[(.*)\]\((.*)\)", block.strip())
            if img:
                md += [":::{figure} gallery/" + img.group(2), f":alt: {img.group(1)}",
                       ":width: 100%", ":::", ""]
            elif block.startswith("Data: "):
                files = re.findall(r"\]\(([^)]+)\)", block)
                md += ["Data: " + ", ".join(f"{{download}}`{f} <gallery/{f}>`" for f in files),
                       ""]
            else:
                md += [block.strip(), ""]
    _write(out / "gallery.md", "\n".join(md))


def generate(app) -> None:
    src = Path(app.srcdir)
    root = src.parent
    out = src / "_generated"
    split_spec(src / "SPEC.md", out / "spec")
    bench_page(root, out)
    LOG.info("tiltlab_docs: running tiltlab.reproduce for the gallery (quick sizes)")
    gallery(out)


def setup(app):
    app.connect("builder-inited", generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
