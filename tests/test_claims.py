"""Claims and typed results: one ``Claim`` type decides a rule and renders it; the committed
rope-cause and emergence results load into typed records, write back the same JSON, give the same
claims and render the same report and table; a new claim over a saved results.json is one object."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvjax.analysis.claims import Claim, Outcome, claim_lines, claims_json
from mvjax.analysis.experiments.rope_cause.claims import claims
from mvjax.analysis.experiments.rope_cause.results import RopeCauseResults

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_claim_applies_its_rule_and_renders_it():
    claim = Claim("bigger", "a is bigger than b", "holds iff a > b",
                  lambda d: Outcome({"a": d["a"], "b": d["b"]}, None if d["b"] is None
                                    else d["a"] > d["b"]))
    assert claim.verdict == "not tested"  # not yet applied
    assert claim.apply({"a": 2, "b": 1}).verdict == "holds"
    assert claim.apply({"a": 1, "b": 2}).held is False
    assert claim.apply({"a": 1, "b": None}).verdict == "not tested"
    done = claim.apply({"a": 2, "b": 1})
    assert done.sentence() == 'a is bigger than b: holds — {"a": 2, "b": 1} (rule: holds iff a > b).'
    recorded = claims_json([done])
    assert recorded[0]["name"] == "bigger" and recorded[0]["rule"] == "holds iff a > b"
    assert claim_lines(recorded) == [f"- {done.sentence()}"]
    with pytest.raises(ValueError, match="no check function"):
        Claim.from_json("bigger", recorded[0]).apply({})


@pytest.fixture(scope="module")
def committed():
    raw = json.loads((DOCS / "rope-cause-cpu" / "results.json").read_text())
    return raw, RopeCauseResults.from_json(raw)


def test_committed_rope_cause_results_load_and_write_back(committed):
    raw, res = committed
    back = res.to_json()
    assert {k: v for k, v in back.items() if k != "claims"} == {
        k: v for k, v in raw.items() if k != "claims"}
    for key, c in raw["claims"].items():  # each claim now also carries its rule
        assert back["claims"][key] == c | {"rule": raw["claim_rules"][key]}
    assert res.arms["rope"].totals("k_rot").n_massive == 2


def test_claims_recomputed_from_typed_results_match_the_recorded_ones(committed):
    raw, res = committed
    again = claims(res)
    assert list(again) == list(raw["claims"])
    for key, c in again.items():
        assert (c.verdict, c.numbers) == (raw["claims"][key]["verdict"], raw["claims"][key]["numbers"])


def test_committed_report_renders_the_same(committed, tmp_path):
    from mvjax.analysis.experiments.rope_cause.plots import FIGURES
    from mvjax.analysis.experiments.rope_cause.report import write_report

    _, res = committed
    figures = {n: [tmp_path / "figures" / f"{n}.png"] for n in FIGURES
               if n != "retrieval_episodes"}  # drawn only for runs that logged episode curves
    report = write_report(res, figures, tmp_path).read_text()
    assert report == (DOCS / "rope-cause-cpu" / "report.md").read_text()


def test_committed_emergence_loads_and_renders_the_same():
    from mvjax.analysis.experiments.emergence.report import table, totals
    from mvjax.analysis.experiments.emergence.run import load_runs

    path = DOCS / "rope-emergence" / "emergence.json"
    saved = json.loads(path.read_text())
    runs = load_runs([str(path)])
    assert [r.to_json() for r in runs] == saved["runs"]
    assert {r.run: totals(r) for r in runs} == saved["totals"]
    assert table(runs) + "\n" == (DOCS / "rope-emergence" / "emergence.md").read_text()


def test_a_new_claim_over_a_saved_results_json_is_one_object():
    res = RopeCauseResults.load(DOCS / "rope-cause-cpu")
    k_over_q = Claim("6", "RoPE's K concentrates more than its Q", "holds iff K's λ=5 count > Q's",
                     lambda r: Outcome({s: r.arms["rope"].totals(s).n_massive
                                        for s in ("q_rot", "k_rot")},
                                       r.arms["rope"].totals("k_rot").n_massive
                                       > r.arms["rope"].totals("q_rot").n_massive))
    done = k_over_q.apply(res)
    assert done.verdict == "holds" and done.numbers == {"q_rot": 0, "k_rot": 2}


def _scored(acc: float, lo: float, hi: float, n: int = 20) -> dict:
    return {"rank": {"n": n, "correct": round(acc * n), "accuracy": acc, "chance": 0.25,
                     "ci95": [lo, hi]}}


def test_disrupt_claims_decide_by_their_rules():
    from mvjax.analysis.experiments.disrupt.report import disrupt_claims

    tasks = {"ctx": {"kind": "contextual", "rank_chance": 0.25},
             "par": {"kind": "parametric", "rank_chance": 0.25}}
    conditions = {
        "original": {"group": "original", "tasks": {"ctx": _scored(0.9, 0.7, 0.97),
                                                    "par": _scored(1.0, 0.84, 1.0)}},
        "massive": {"group": "massive", "tasks": {"ctx": _scored(0.3, 0.15, 0.5),
                                                  "par": _scored(0.95, 0.76, 0.99)}},
        "lowest_norm": {"group": "control", "tasks": {"ctx": _scored(0.9, 0.7, 0.97),
                                                      "par": _scored(0.95, 0.76, 0.99)}}}
    from mvjax.analysis.records import ScoredRun

    got = {c.name: c for c in disrupt_claims(ScoredRun.from_json({"tasks": tasks, "conditions": conditions,
                                                                  "dims": {}, "model_layers": 2}))}
    assert got["massive_breaks_ctx_rank"].verdict == "holds"  # CIs 0.15–0.5 vs 0.7–0.97
    # every item: contextual drop 60 points vs parametric 5, the difference's interval above 0
    assert got["parametric_survives_all"].verdict == "holds"
    assert got["parametric_survives_known"].verdict == "not tested"  # no per-item record
    # the control (0.9) costs less than the massive edit (0.3), with intervals, where massive hurts
    assert got["control_lowest_norm"].verdict == "holds"
    assert "rule: the 95% CIs do not overlap" in got["massive_breaks_ctx_rank"].sentence()


def test_readme_new_claim_snippet_runs(monkeypatch, capsys):
    """The README's five-line example of a new claim runs as written, from the repository root."""
    readme = (DOCS.parent / "README.md").read_text()
    code = readme.split("**A new claim over saved results**", 1)[1].split("```python\n", 1)[1]
    code = code.split("```", 1)[0]
    monkeypatch.chdir(DOCS.parent)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith("RoPE's K concentrates more than its Q: holds")


def test_curves_as_a_tidy_table(committed):
    """arm, site, layer, step, metric → value: one row per number of the curves."""
    raw, res = committed
    rows = res.curve_rows()
    arm = raw["arms"]["nope"]["curves"]
    n = sum(len(v) * len(v[0]) for a in raw["arms"].values()
            for metrics in a["curves"]["sites"].values() for v in metrics.values())
    assert len(rows) == n
    hit = [r for r in rows if (r["arm"], r["site"], r["layer"], r["metric"]) == (
        "nope", "k_rot", 3, "n_massive") and r["step"] == arm["steps"][-1]]
    assert [r["value"] for r in hit] == [arm["sites"]["k_rot"]["n_massive"][3][-1]]
    assert hit[0]["tokens"] == arm["tokens"][-1]
