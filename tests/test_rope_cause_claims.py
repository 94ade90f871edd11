"""The claim rules of rope-cause on the committed cpu-preset results: (1) compares RoPE with the
non-RoPE arms, (4) pools Q and K, needs enough entries and locates them in tokens."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mvjax.analysis.experiments.rope_cause.claims import MIN_ENTRIES_4, claims, massive_entries
from mvjax.analysis.experiments.rope_cause.results import ArmAccuracy, ExactScore, RopeCauseResults

CPU = Path(__file__).resolve().parents[1] / "docs" / "rope-cause-cpu" / "results.json"


@pytest.fixture(scope="module")
def data():
    return json.loads(CPU.read_text())


def _zero_counts(arm):
    for site in ("q_rot", "k_rot"):
        for layer in arm["final"][site]["layers"]:
            layer["n_massive"] = 0


def test_claim_1_needs_more_than_the_non_rope_arms(data):
    c = claims(RopeCauseResults.from_json(data))["1"]
    assert c.numbers["rope_qk_massive"] == 2 and c.numbers["nope_qk_massive"] == 11
    assert c.verdict == "does not hold"  # NoPE concentrates more: not "with RoPE"
    quiet = copy.deepcopy(data)
    _zero_counts(quiet["arms"]["nope"]), _zero_counts(quiet["arms"]["alibi"])
    assert claims(RopeCauseResults.from_json(quiet))["1"].verdict == "holds"
    alone = copy.deepcopy(data)
    del alone["arms"]["nope"], alone["arms"]["alibi"]
    assert claims(RopeCauseResults.from_json(alone))["1"].verdict == "not tested"


def test_claim_4_pools_q_and_k_and_locates_entries_in_tokens(data):
    c = claims(RopeCauseResults.from_json(data))["4"]
    rope = c.numbers["rope"]
    assert rope["n_entries"] == 2 < MIN_ENTRIES_4 and c.verdict == "not tested"
    # both RoPE θ put their entries at about 2-2.5 contexts, whatever their band labels say
    assert 2.4 < rope["wavelength_over_context_median"] < 2.5 and rope["low_band_share"] == 1.0
    t6 = c.numbers["rope-theta1e6"]
    assert t6["low_band_share"] == 0.0 and 1.8 < t6["wavelength_over_context_median"] < 2.9
    assert c.numbers["partial_massive_unrotated"] == 0


def test_massive_entries_band_and_wavelength(data):
    arm = RopeCauseResults.from_json(data).arms["rope"]
    D = arm.head_dim
    M = np.ones((arm.num_heads, D))
    M[0, D // 2 - 1] = 100.0  # the slowest pair of the half layout: low band
    M[1, 0] = 100.0  # the fastest: high band, wavelength 2π tokens
    arm = dataclasses.replace(arm, final_M={"q_rot": [M.tolist()] + [np.ones_like(M).tolist()] * 3,
                                            "k_rot": []})
    es = massive_entries(arm)
    assert [(e["head"], e["dim"], e["band"]) for e in es] == [(0, D // 2 - 1, "low"), (1, 0, "high")]
    assert es[1]["wavelength"] == pytest.approx(2 * np.pi)
    assert es[0]["wavelength_over_context"] == pytest.approx(es[0]["wavelength"] / 256)


@pytest.mark.parametrize("name", ["rope-cause-cpu", "rope-cause-retrieval"])
def test_committed_accuracies_load_typed_and_write_back_the_same_json(name):
    """Every arm's claim-(5) accuracies (older ones without counts or intervals among them) read
    into ``ArmAccuracy`` and write back the same keys in the same order."""
    data = json.loads((CPU.parent.parent / name / "results.json").read_text())
    for arm in data["arms"].values():
        acc = arm["disruption"]["accuracy"]
        assert json.dumps(ArmAccuracy.from_json(acc).to_json()) == json.dumps(acc)
    old = ExactScore.from_json({"n": 8, "accuracy": 0.25})
    assert old.solved == 2 and old.to_json() == {"n": 8, "accuracy": 0.25}
