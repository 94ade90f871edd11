"""The typed records of disrupt and quantize results: they write back the JSON they were read from
byte for byte (the committed results re-render through them), and the structure once parsed out of
condition names — a control's seed, a setting's kept twin — is in fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvjax.analysis.records import ConditionResult, Score, ScoredRun, TaskScore

DOCS = Path(__file__).resolve().parents[1] / "docs"
COMMITTED = ["disrupt-smollm2/full-pooled", "disrupt-smollm2/full-prompt", "quantize-smollm2/full"]


@pytest.mark.parametrize("run", COMMITTED)
def test_committed_results_round_trip_byte_for_byte(run):
    text = (DOCS / run / "results.json").read_text()
    assert json.dumps(ScoredRun.load(DOCS / run / "results.json").to_json(), indent=1) == text


def test_seed_and_twin_are_fields():
    run = ScoredRun.load(DOCS / "disrupt-smollm2" / "full-pooled" / "results.json")
    seeds = run.seeded("random")
    assert [(c.name, c.column, c.seed) for c in seeds] == [(f"random_s{s}", "random", s) for s in range(3)]
    assert run.columns()[:5] == ["original", "massive", "lowest_norm", "random", "energy_matched"]
    assert run.conditions["massive"].seed is None and run.conditions["massive"].kept is None
    quant = ScoredRun.load(DOCS / "quantize-smollm2" / "full" / "results.json")
    kept = quant.twin("act_int4_token_post", "massive")
    assert kept is not None and kept.name == "act_int4_token_post_keep_massive" and kept.keep_massive
    assert quant.twin("w_int8", "massive").name == "w_int8_protect"
    assert ConditionResult("keep0_random_s3").twin_of == "random_s3"
    assert ConditionResult("keep0_random_s3").column == "keep0_random"
    assert ConditionResult("w_int4_protect_random").kept == "random"


def test_a_record_built_in_code_writes_its_set_fields_in_order():
    s = Score(n=4, correct=3, accuracy=0.75, chance=0.25, ci95=(0.3, 0.95))
    assert list(s.to_json()) == ["n", "correct", "accuracy", "chance", "ci95"]
    assert TaskScore(rank=s).to_json() == {"rank": s.to_json()}
    loaded = Score.from_json({"n": 1, "correct": 0, "accuracy": 0.0, "odd": [1]})
    assert loaded.extra == {"odd": [1]} and loaded.to_json() == {"n": 1, "correct": 0, "accuracy": 0.0, "odd": [1]}


def test_claims_and_notes_are_recorded_after_the_rest():
    run = ScoredRun.from_json({"tasks": {}, "conditions": {}, "notes": ["old"]})
    again = run.with_claims([{"name": "c"}], ["new"])
    assert list(again.to_json()) == ["tasks", "conditions", "notes", "claims"]
    assert again.to_json()["notes"] == ["new"]
