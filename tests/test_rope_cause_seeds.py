"""Claim (5) across seeds: the statistics (empirical p, McNemar, paired interval) and the rule
fixed in docs/rope-cause-seeds/RULE.md, on synthetic runs whose verdicts are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mvjax.analysis.claims import FAILS, HOLDS, NOT_TESTED
from mvjax.analysis.experiments.rope_cause.results import ArmAccuracy, counted
from mvjax.analysis.experiments.rope_cause_seeds.claims import arm_verdict, seed_outcome
from mvjax.analysis.experiments.rope_cause_seeds.results import SeedsDecision
from mvjax.analysis.experiments.rope_cause_seeds.run import run
from mvjax.analysis.massive import top_share
from mvjax.analysis.statistics import discordant, empirical_p, mcnemar_exact, paired_difference


def test_empirical_p_counts_ties_and_has_a_floor():
    assert empirical_p(1, [2] * 50) == pytest.approx(1 / 51)
    assert empirical_p(2, [2] * 50) == 1.0
    assert empirical_p(5, [1, 9, 9, 9]) == pytest.approx(2 / 5)


def test_mcnemar_and_paired_interval():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # all six discordant pairs one way
    assert mcnemar_exact(3, 3) == 1.0
    assert discordant("1100", "1010") == (1, 1)
    d = paired_difference("1111111100", "0000000011")
    assert (d["lost"], d["gained"], d["difference"]) == (8, 2, pytest.approx(-0.6))
    assert d["ci95"][0] < -0.6 < d["ci95"][1] < 0
    with pytest.raises(ValueError, match="same items"):
        paired_difference("11", "1")


def test_top_share_means_the_same_at_every_head_size():
    for D in (32, 64, 128):
        flat = np.ones((2, D))
        assert top_share(flat) == pytest.approx([1 / D] * 2)
        one = np.zeros((1, D)); one[0, 3] = 5
        assert top_share(one) == pytest.approx([1.0])


def _acc(orig=200, massive=20, null=range(100, 150), energy=(90, 95, 99), lowest=190, par=(10, 9),
         n=300):
    def e(k, nn=n):
        return counted(k, nn)
    acc = {"original": {"contextual": e(orig) | {"hits": "1" * orig + "0" * (n - orig)},
                        "parametric": e(par[0], 10)},
           "massive": {"contextual": e(massive) | {"hits": "1" * massive + "0" * (n - massive)},
                       "parametric": e(par[1], 10)},
           "lowest_norm": {"contextual": e(lowest), "parametric": e(10, 10)}}
    acc |= {f"random_s{i}": {"contextual": e(k), "parametric": e(10, 10)} for i, k in enumerate(null)}
    acc |= {f"energy_matched_s{i}": {"contextual": e(k), "parametric": e(10, 10)} for i, k in enumerate(energy)}
    return acc


@pytest.mark.parametrize("change, verdict", [
    ({}, HOLDS),
    ({"null": [20] + list(range(100, 149))}, HOLDS),  # one tie among 50: p = 2/51 ≤ 0.05
    ({"null": [10, 15, 19] + list(range(100, 147))}, FAILS),  # p = 4/51 > 0.05
    ({"energy": (90, 20, 99)}, FAILS),  # not strictly below one energy-matched seed
    ({"par": (10, 1)}, FAILS),  # parametric kept less than contextual
    ({"orig": 19}, NOT_TESTED),  # too few episodes solved
    ({"null": range(100, 149)}, NOT_TESTED),  # 49 controls: no null distribution by the rule
])
def test_seed_rule(change, verdict):
    o = seed_outcome(ArmAccuracy.from_json(_acc(**change)))
    assert o.verdict == verdict
    pr = o.paired_massive_vs_original  # hits are prefixes of 1s: lost/gained follow the counts
    assert (pr["lost"], pr["gained"]) == (max(o.original - o.massive, 0), max(o.massive - o.original, 0))


@pytest.mark.parametrize("seeds, verdict", [
    ([HOLDS] * 3, HOLDS), ([HOLDS, HOLDS], NOT_TESTED), ([HOLDS, HOLDS, NOT_TESTED], NOT_TESTED),
    ([HOLDS, FAILS, FAILS], FAILS), ([HOLDS, HOLDS, FAILS], NOT_TESTED), ([FAILS, NOT_TESTED], NOT_TESTED),
    ([FAILS, FAILS, NOT_TESTED], FAILS)])
def test_across_seeds(seeds, verdict):
    assert arm_verdict(seeds)[0] == verdict


def test_run_writes_verdicts_report_and_figure(tmp_path):
    for arm, seeds in (("rope", (0, 1, 2)), ("nope", (0,))):
        for s in seeds:
            d = tmp_path / arm / f"seed{s}"
            d.mkdir(parents=True)
            rec = {"head_dim": 4, "final_M": {"k_rot": [[[1, 1, 1, 3]]]},
                   "final_counts": {"k_rot": {"n_massive": 1}},
                   "disruption": {"accuracy": _acc(massive=20 if arm == "rope" else 180)}}
            (d / "results.json").write_text(json.dumps({"arms": {arm: rec}}))
    out = run(tmp_path)
    assert out.arms["rope"].verdict == HOLDS and out.claim_5 == HOLDS
    assert out.arms["nope"].verdict == NOT_TESTED  # one seed only
    assert out.arms["nope"].seeds[0].verdict == FAILS
    assert json.loads((tmp_path / "seeds.json").read_text())["claim_5"] == HOLDS
    assert "| rope | 0 | 67 | 7 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "null.png").stat().st_size > 0
    assert out.arms["rope"].seeds[0].concentration["k_rot"]["top_share_max"] == pytest.approx(0.75)
    assert SeedsDecision.from_json(json.loads((tmp_path / "seeds.json").read_text())) == out


def test_an_untested_seed_is_said_apart_from_disagreement():
    assert arm_verdict([HOLDS, HOLDS, NOT_TESTED])[1].startswith("holds in all 2 tested seeds")
    assert arm_verdict([HOLDS, FAILS, HOLDS])[1] == "seeds disagree"


@pytest.mark.parametrize("verdicts, verdict, seeds", [
    ({0: HOLDS, 1: HOLDS, 2: NOT_TESTED}, NOT_TESTED, [0, 1, 2]),  # no replacement run yet
    ({0: HOLDS, 1: HOLDS, 2: NOT_TESTED, 3: HOLDS}, HOLDS, [0, 1, 3]),
    ({0: HOLDS, 1: HOLDS, 2: NOT_TESTED, 3: FAILS}, NOT_TESTED, [0, 1, 3]),  # disagree
    ({0: HOLDS, 1: HOLDS, 2: NOT_TESTED, 3: NOT_TESTED, 4: HOLDS}, HOLDS, [0, 1, 4]),
    ({0: FAILS, 1: NOT_TESTED, 2: NOT_TESTED, 3: FAILS}, NOT_TESTED, [0, 1, 2]),  # 2 tested: 0-2 read
    ({0: HOLDS, 1: HOLDS, 2: HOLDS, 3: FAILS}, HOLDS, [0, 1, 2]),  # an unneeded seed decides nothing
    ({0: HOLDS, 1: NOT_TESTED, 2: HOLDS, 3: HOLDS, 4: HOLDS, 5: FAILS}, HOLDS, [0, 2, 3]),
])
def test_replacement_seeds_decide_only_in_place_of_an_untested_seed(verdicts, verdict, seeds):
    from mvjax.analysis.experiments.rope_cause_seeds.claims import arm_outcome

    got, detail, deciding = arm_outcome(verdicts)
    assert (got, deciding) == (verdict, seeds)
    assert ("replaced" in detail) == (deciding != [0, 1, 2])
