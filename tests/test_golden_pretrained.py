"""Golden tests for the committed results of the pretrained models and the band sweep: the quick
disrupt runs (Gemma 3, Qwen 0.5B), the analyze reports behind the cross-model table, the table
itself, and the band law's band.json — each re-rendered by today's code from its committed JSON.

Why: test_golden.py pins the SmolLM2 and from-scratch results; these pages quote numbers too, and
a refactor must not move them silently. The analyze figures are left out of the figure data (their
heatmaps would put megabytes of matrices in tests/golden); their report.md and the JSON they are
drawn from are pinned.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from test_golden import DOCS, ROOT, check_figures, read, record_figures, redraw_experiment

from mvjax.analysis.massive import Analysis
from mvjax.analysis.plots import all_figures
from mvjax.analysis.report import write_report
from mvjax.cli import main

QUICK_RUNS = {"gemma3": "gemma3/disrupt-quick", "qwen2.5-coder-0.5b": "qwen/disrupt-quick-0.5b"}
ANALYZED = ("cross-model/analyze/smollm2", "cross-model/analyze/gemma3",
            "cross-model/analyze/qwen2.5-coder-0.5b", "qwen/qwen2.5-coder-1.5b")
COMPARED = (*ANALYZED, "rope-cause-seeds/rope/seed0", "rope-cause-retrieval")
BAND_RESULTS = ("rope-band/sweep2",)


@pytest.fixture
def figures(monkeypatch):
    return record_figures(monkeypatch)


def _cli(*args: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(list(args)) == 0


@pytest.mark.parametrize("model", QUICK_RUNS)
def test_quick_disrupt_runs_redraw_to_the_committed_files(model, tmp_path, figures):
    """``--partial-to`` on a finished run redraws it from results.json alone (no weights read)."""
    committed = DOCS / QUICK_RUNS[model]
    out = redraw_experiment("disrupt", committed, tmp_path, ["--quick"], model=model)
    assert read(out / "results.json") == read(committed / "results.json")
    assert read(out / "report.md") == read(committed / "report.md")
    check_figures(QUICK_RUNS[model], figures)


@pytest.mark.parametrize("where", ANALYZED)
def test_analyze_report_is_rendered_from_the_committed_json(where, tmp_path, figures):
    committed = DOCS / where
    result = Analysis.from_json(json.loads(read(committed / "massive_values.json")))
    name = Path(str(result.model["name"])).name
    write_report(result, all_figures(result, tmp_path, result.bar_layer(), name), tmp_path)
    assert read(tmp_path / "report.md") == read(committed / "report.md")


def test_cross_model_table_is_built_from_the_committed_results(tmp_path, figures, monkeypatch):
    monkeypatch.chdir(ROOT)  # the rows are named after the paths as given
    _cli("compare", *(f"docs/{d}" for d in COMPARED), "--out", str(tmp_path / "cm"))
    for name in ("compare.md", "compare.json"):
        assert read(tmp_path / "cm" / name) == read(DOCS / "cross-model" / name), name
    check_figures("cross-model", figures)


@pytest.mark.parametrize("where", BAND_RESULTS)
def test_band_table_and_verdicts_are_reproduced_from_band_json(where, tmp_path, figures):
    """band.json's runs and references re-ruled by today's code: the same verdicts, table and
    figure (only the recorded command names the other output directory)."""
    committed = DOCS / where
    _cli("experiment", "band", str(committed / "band.json"), "--out", str(tmp_path / "band"))
    new, old = (json.loads(read(d / "band.json")) for d in (tmp_path / "band", committed))
    assert {k: v for k, v in new.items() if k != "command"} == {k: v for k, v in old.items() if k != "command"}
    assert read(tmp_path / "band" / "band.md") == read(committed / "band.md")
    check_figures(where, figures)
