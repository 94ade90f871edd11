"""Golden tests: every committed experiment result under docs/ re-rendered from its committed JSON
by today's code must equal what is committed — results.json (claims and notes recomputed), the
report markdown, the side outputs (exact_reading.json, emergence.json / .md), the tables the docs
scripts print (in docs/disrupt-smollm2/README.md and docs/quantize-smollm2/README.md), and the data
each figure is drawn from.

Why: a refactor of the analysis code must not silently move a number or a verdict that the docs
pages and the committed reports state. Rendering only: no model is loaded.

Figures: PNG bytes depend on the matplotlib build, so ``savefig`` is replaced by a recorder of what
each figure shows (line, bar, image and scatter data, titles, labels, legends), compared with
``tests/golden/figure_data.json``. That file was made by this code from the committed results (the
reports above prove this code reproduces them); regenerate it with ``MVJAX_UPDATE_GOLDEN=1 pytest
tests/test_golden.py`` (without -n: one process writes the file) only for an intended figure
change, and say so in the commit.

Results without committed data are not covered: docs/gemma3 (figures only; its massive_values.json
lives in the uncommitted results/gemma3). The pretrained models' and the band sweep's results are pinned in
test_golden_pretrained.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import runpy
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GOLDEN_FIGURES = ROOT / "tests" / "golden" / "figure_data.json"
UPDATE = os.environ.get("MVJAX_UPDATE_GOLDEN") == "1"

DISRUPT_RUNS = {  # committed run: the arguments run_full.sh gave `mvjax experiment disrupt`
    "full-pooled": ["--statistics", "pooled"],
    "full-prompt": ["--statistics", "prompt", "--seeds", "0", "--conditions", "table"],
}
CONFOUNDS_RUN = "disrupt-smollm2-confounds/disrupt"  # the whole disrupt run (31 conditions)
CONFOUNDS_QUANTIZE_RUN = "disrupt-smollm2-confounds/quantize"  # its int4 stage (rule 6)
ROPE_CAUSE_RUNS = ("rope-cause-cpu", "rope-cause-retrieval")


# ---------------------------------------------------------------- figure data


def _num(x) -> list | float | None:
    """Numbers as JSON: rounded to 12 significant digits (the last bits of a float sum depend on
    the BLAS / numpy build; 12 digits is far below what any figure or report shows), NaN and masked
    entries as None."""
    a = np.ma.filled(np.ma.asarray(x, dtype=np.float64), np.nan)
    flat = [None if not np.isfinite(v) else float(f"{v:.12g}") for v in a.ravel().tolist()]
    return {"shape": list(a.shape), "values": flat}


def _texts(items) -> list[str]:
    return [t.get_text() for t in items if t.get_text()]


def figure_data(fig) -> list[dict]:
    """What a figure shows, per axes: titles, labels, set tick labels, texts, legend, line data,
    bar rectangles, images (values and colour limits), collections (scatter points, error bars)."""
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FixedFormatter

    out = []
    for ax in fig.axes:
        d: dict = {"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel()}
        for name, axis in (("xticks", ax.xaxis), ("yticks", ax.yaxis)):
            if isinstance(axis.get_major_formatter(), FixedFormatter):
                d[name] = list(axis.get_major_formatter().seq)
        d["texts"] = _texts(ax.texts)
        legend = ax.get_legend()
        d["legend"] = _texts(legend.get_texts()) if legend else []
        d["lines"] = [_num(line.get_xydata()) for line in ax.lines]
        d["bars"] = [_num([p.get_x(), p.get_y(), p.get_width(), p.get_height()])
                     for p in ax.patches if isinstance(p, Rectangle)]
        d["images"] = [{"data": _num(im.get_array()), "clim": _num(im.get_clim())} for im in ax.images]
        d["collections"] = [_num(np.concatenate(c.get_segments()) if c.get_segments() else [])
                            if isinstance(c, LineCollection) else _num(c.get_offsets())
                            for c in ax.collections]
        out.append(d)
    return out


@pytest.fixture
def figures(monkeypatch):
    return record_figures(monkeypatch)


def record_figures(monkeypatch) -> list:
    """Record every figure saved while rendering (its data, not its pixels; once per figure, which
    ``analysis.plots`` saves as PNG and SVG); the file written is empty, so the code's atomic
    rename still finds it."""
    seen: list = []
    last: list = [None]

    def record(fig, fname, *args, **kwargs):
        if fig is not last[0]:
            seen.append(figure_data(fig))
            last[0] = fig
        if isinstance(fname, (str, os.PathLike)):
            Path(fname).write_bytes(b"")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return seen


def golden_figures() -> dict:
    return json.loads(GOLDEN_FIGURES.read_text()) if GOLDEN_FIGURES.is_file() else {}


def check_figures(key: str, seen: list) -> None:
    """The recorded figures equal the golden data under ``key`` (or replace it when updating)."""
    assert seen, f"{key}: no figure was drawn"
    seen = json.loads(json.dumps(seen))
    golden = golden_figures()
    if UPDATE:
        golden[key] = seen
        GOLDEN_FIGURES.parent.mkdir(exist_ok=True)
        GOLDEN_FIGURES.write_text(json.dumps(golden, sort_keys=True, separators=(",", ":")) + "\n")
    assert key in golden, f"no golden figure data for {key}: run with MVJAX_UPDATE_GOLDEN=1 once"
    assert len(seen) == len(golden[key]), f"{key}: {len(seen)} figures drawn, golden has {len(golden[key])}"
    for i, (new, old) in enumerate(zip(seen, golden[key])):
        assert new == old, f"{key}: figure {i} shows other data than the golden one"


# ---------------------------------------------------------------- helpers


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def script_output(script: Path, *args: str) -> str:
    """stdout of ``python SCRIPT ARGS`` run in this process (as the docs say to run it)."""
    buf = io.StringIO()
    old = sys.argv
    sys.argv = [str(script), *args]
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = old
    return buf.getvalue()


DISRUPT_PAGE = DOCS / "disrupt-smollm2" / "README.md"
QUANTIZE_PAGE = DOCS / "quantize-smollm2" / "README.md"


def page_block(page: Path, marker: str) -> str:
    """The text of docs page ``page`` between ``<!-- MARKER: begin -->`` and ``<!-- MARKER: end -->``
    (the experiment tables moved there from README.md, markers and all)."""
    m = re.search(rf"<!-- {re.escape(marker)}: begin -->\n(.*?)<!-- {re.escape(marker)}: end -->",
                  read(page), re.S)
    assert m, f"{page.relative_to(ROOT)} has no '{marker}' block"
    return m.group(1)


def redraw_experiment(experiment: str, committed: Path, tmp_path: Path, extra: list[str],
                      model: str = "smollm2") -> Path:
    """``mvjax experiment EXPERIMENT --model MODEL ... --partial-to DIR`` on a copy of a committed
    run: the redraw of a finished run by today's code (claims, notes, figures, report from its
    numbers). Returns DIR."""
    from mvjax.cli import main

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(committed / "results.json", run / "results.json")
    out = tmp_path / "redrawn"
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["experiment", experiment, "--model", model, *extra, "--out", str(run),
                   "--partial-to", str(out)])
    assert rc == 0
    return out


# ---------------------------------------------------------------- disrupt and quantize (SmolLM2)


@pytest.mark.parametrize("run", DISRUPT_RUNS)
def test_disrupt_full_runs_redraw_to_the_committed_files(run, tmp_path, figures):
    """results.json (with today's claims and notes) and report.md byte for byte; figure data."""
    committed = DOCS / "disrupt-smollm2" / run
    out = redraw_experiment("disrupt", committed, tmp_path, DISRUPT_RUNS[run])
    assert read(out / "results.json") == read(committed / "results.json")
    assert read(out / "report.md") == read(committed / "report.md")
    check_figures(f"disrupt-smollm2/{run}", figures)


@pytest.mark.parametrize("experiment,run", [("disrupt", CONFOUNDS_RUN),
                                            ("quantize", CONFOUNDS_QUANTIZE_RUN)])
def test_confounds_run_redraws_to_the_committed_files(experiment, run, tmp_path, figures):
    """The confounds run (length bins, position 0 edited/kept, key depth, control seeds; then int4
    with keep-massive beside keep-random): its pre-registered verdicts, tables and figures
    re-rendered from results.json by today's code."""
    committed = DOCS / run
    out = redraw_experiment(experiment, committed, tmp_path, ["--preset", "confounds"])
    assert read(out / "results.json") == read(committed / "results.json")
    assert read(out / "report.md") == read(committed / "report.md")
    check_figures(run, figures)


@pytest.mark.parametrize("run", DISRUPT_RUNS)
def test_disrupt_exact_reading_matches_the_committed_json(run):
    """exact_reading.json beside each run is what exact_reading.py prints for it today."""
    committed = DOCS / "disrupt-smollm2" / run
    text = script_output(DOCS / "disrupt-smollm2" / "exact_reading.py", str(committed / "results.json"))
    assert text == read(committed / "exact_reading.json")


def test_disrupt_readme_table_is_what_readme_table_py_prints():
    """The disrupt tables of docs/disrupt-smollm2/README.md are exactly the script's output for the
    committed runs."""
    runs = [str(DOCS / "disrupt-smollm2" / r / "results.json") for r in ("full-pooled", "full-prompt")]
    text = script_output(DOCS / "disrupt-smollm2" / "readme_table.py", *runs)
    assert text == page_block(DISRUPT_PAGE, "readme_table.py")


def test_quantize_full_run_redraws_to_the_committed_files(tmp_path, figures):
    """results.json (with today's claims) and report.md byte for byte; figure data."""
    committed = DOCS / "quantize-smollm2" / "full"
    out = redraw_experiment("quantize", committed, tmp_path, [])
    assert read(out / "results.json") == read(committed / "results.json")
    assert read(out / "report.md") == read(committed / "report.md")
    check_figures("quantize-smollm2/full", figures)


def test_quantize_readme_table_is_what_readme_table_py_prints():
    """The quantization table of docs/quantize-smollm2/README.md (every verdict in it) is the
    script's output today."""
    text = script_output(DOCS / "quantize-smollm2" / "readme_table.py",
                         str(DOCS / "quantize-smollm2" / "full" / "results.json"))
    assert text == page_block(QUANTIZE_PAGE, "quantize readme_table.py")


# ---------------------------------------------------------------- rope-cause and emergence


@pytest.mark.parametrize("name", ROPE_CAUSE_RUNS)
def test_rope_cause_results_claims_and_report_are_reproduced(name, tmp_path, figures):
    """As ``rope_cause._measure`` writes them once the arms are collected: results.json with the
    claims recomputed by today's rules, the figures, report.md."""
    import dataclasses

    from mvjax.analysis.experiments.rope_cause.plots import all_figures
    from mvjax.analysis.experiments.rope_cause.report import write_report
    from mvjax.analysis.experiments.rope_cause.claims import claims
    from mvjax.analysis.experiments.rope_cause.results import RopeCauseResults
    from mvjax.atomic import write_json

    committed = DOCS / name
    loaded = RopeCauseResults.load(committed / "results.json")
    results = dataclasses.replace(loaded, claims=claims(loaded))
    write_json(tmp_path / "results.json", results.to_json())
    assert read(tmp_path / "results.json") == read(committed / "results.json")
    figs = all_figures(results, tmp_path / "figures")
    assert sorted(p.relative_to(tmp_path).as_posix() for ps in figs.values() for p in ps) == \
        sorted(p.relative_to(committed).as_posix() for p in (committed / "figures").glob("*.png"))
    write_report(results, figs, tmp_path)
    assert read(tmp_path / "report.md") == read(committed / "report.md")
    check_figures(name, figures)


def test_rope_emergence_json_table_and_figure_are_reproduced(tmp_path, figures):
    """``mvjax experiment emergence docs/rope-emergence/emergence.json --out DIR`` rewrites the
    committed emergence.json (runs and totals), emergence.md and the figure's data. The JSON's
    ``command`` names the sources and --out of the call, so it is taken from the committed file
    (the invocation, not a number)."""
    from mvjax.analysis.experiments.emergence.report import draw, table, totals
    from mvjax.analysis.experiments.emergence.run import load_runs
    from mvjax.atomic import write_json

    committed = DOCS / "rope-emergence"
    saved = json.loads(read(committed / "emergence.json"))
    runs = load_runs([str(committed / "emergence.json")])
    write_json(tmp_path / "emergence.json", {"command": saved["command"], "runs": [r.to_json() for r in runs],
                                             "totals": {r.run: totals(r) for r in runs}}, indent=None)
    assert read(tmp_path / "emergence.json") == read(committed / "emergence.json")
    assert table(runs) + "\n" == read(committed / "emergence.md")
    draw(runs, tmp_path / "emergence.png")
    check_figures("rope-emergence", figures)


def test_retrieval_probe_figure_draws_from_the_committed_curves(tmp_path, figures):
    """probes.png is ``benchmarks/retrieval_probe_plot.py`` over the six committed probe runs."""
    probes = sorted((DOCS / "rope-cause-retrieval" / "probes").glob("p*.jsonl"))
    assert [p.stem for p in probes] == [f"p{i}" for i in range(1, 7)]
    script_output(ROOT / "benchmarks" / "retrieval_probe_plot.py", str(tmp_path / "probes.png"),
                  *map(str, probes))
    check_figures("rope-cause-retrieval/probes", figures)


# ---------------------------------------------------------------- the check can fail


def test_a_moved_number_changes_the_rendering(tmp_path, figures):
    """The golden comparison is sensitive: one item fewer correct under 'massive' on arithmetic
    (pooled run) changes the redrawn report, a claim's numbers, the page's table and the figure."""
    committed = DOCS / "disrupt-smollm2" / "full-pooled"
    moved = tmp_path / "moved"
    moved.mkdir()
    result = json.loads(read(committed / "results.json"))
    entry = result["conditions"]["massive"]["tasks"]["arithmetic"]["rank"]
    entry["correct"] -= 1
    entry["accuracy"] = entry["correct"] / entry["n"]
    (moved / "results.json").write_text(json.dumps(result, indent=1))
    out = redraw_experiment("disrupt", moved, tmp_path, DISRUPT_RUNS["full-pooled"])
    assert read(out / "report.md") != read(committed / "report.md")
    new_claims = json.loads(read(out / "results.json"))["claims"]
    old_claims = json.loads(read(committed / "results.json"))["claims"]
    assert [c["numbers"] for c in new_claims] != [c["numbers"] for c in old_claims]
    table = script_output(DOCS / "disrupt-smollm2" / "readme_table.py", str(moved / "results.json"),
                          str(DOCS / "disrupt-smollm2" / "full-prompt" / "results.json"))
    assert table != page_block(DISRUPT_PAGE, "readme_table.py")
    assert json.loads(json.dumps(figures)) != golden_figures()["disrupt-smollm2/full-pooled"]


def test_rope_cause_seeds_verdicts_and_report_are_reproduced(tmp_path):
    """``mvjax experiment rope-cause-seeds --root docs/rope-cause-seeds`` rewrites the committed
    seeds.json and report.md from the committed per-seed results."""
    import shutil

    from mvjax.analysis.experiments.rope_cause_seeds.run import run

    committed = DOCS / "rope-cause-seeds"
    for path in committed.glob("*/seed*/results.json"):
        dest = tmp_path / path.relative_to(committed)
        dest.parent.mkdir(parents=True)
        shutil.copy(path, dest)
    run(tmp_path)
    for name in ("seeds.json", "report.md"):
        assert read(tmp_path / name) == read(committed / name), name
