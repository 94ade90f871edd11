"""The disruption experiment as a library call: both statistics modes run every condition (with
the sweeps) and say which they used, and a killed run resumes without redoing finished
conditions."""

from __future__ import annotations

import argparse
import json

import pytest

import mvjax.analysis.experiments.disrupt.run as D
from mvjax.analysis.experiments.disrupt.report import disrupt_claims, disrupt_notes, write_disrupt_report
from mvjax.analysis.experiments.common import write_partial
from mvjax.analysis.experiments.registry import FRAMED
from mvjax.analysis.experiments.spec import RunSpec, legacy_vars, plan_flags
from mvjax.analysis.resume import resume_dir
from mvjax.analysis.experiments.disrupt.run import DisruptConfig, disrupt, thirds
from mvjax.analysis.resume import Checkpoint
from mvjax.config import ModelConfig
from mvjax.data.tasks import Item, Task
from mvjax.model import init_model
from mvjax.tokenizers import ByteTokenizer

CFG = ModelConfig(vocab_size=257, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2,
                  mlp_hidden=48, head_dim=8, max_seq_len=256, init_std=0.2)
TASKS = [Task("ctx", "contextual", tuple(Item(f"key {i}{i} is", (f" {i}", " x"), f" {i}", f" {i}")
                                         for i in range(3))),
         Task("par", "parametric", (Item("sky is", (" blue", " red"), " blue"),))]
SMALL = dict(seeds=(0,), energy_seeds=(0,), batch_size=2)


@pytest.fixture(scope="module")
def model():
    return init_model(CFG, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("stats", ["pooled", "prompt"])
def test_both_statistics_run_every_condition_and_say_which(model, stats, tmp_path):
    config = DisruptConfig(statistics=stats, sweep_k=(1, 2), sweep_layers=True, **SMALL)
    r = disrupt(model, ByteTokenizer(), TASKS, config, progress=False)
    assert r["statistics"] == stats and r["definition"]["statistics"] == D.STATISTICS_TEXT[stats]
    names = set(r["conditions"])
    assert {"original", "massive", "lowest_norm", "random_s0", "energy_matched_s0",
            "sweep_top2_massive", "sweep_top2_lowest", "sweep_layers_early",
            "sweep_layers_late"} <= names
    assert "sweep_top1_massive" not in names  # k = 1 is 'massive' itself
    assert r["conditions"]["sweep_layers_middle"]["layers"] == (1,)
    assert 0 <= r["dims"]["prompt_top1_is_pooled_top1"]["k_rot"] <= 1
    assert ("energy_ratio_to_massive" in r["dims"]) == (stats == "pooled")
    par = r["conditions"]["original"]
    assert par["tasks"]["par"]["rank"]["n"] == 1  # every item, and separately the known ones
    assert par["tasks_known"].get("par", {}).get("rank", {"accuracy": 1.0})["accuracy"] == 1.0
    from mvjax.analysis.claims import claims_json
    from mvjax.analysis.experiments.disrupt.report import disrupt_claims, write_disrupt_report
    from mvjax.analysis.records import ScoredRun

    run = ScoredRun.from_json(r)
    report = write_disrupt_report(run.with_claims(claims_json(disrupt_claims(run))), tmp_path, "t").read_text()
    assert f"Statistics: **{stats}**" in report
    assert (tmp_path / "topk_sweep.png").is_file() and (tmp_path / "layer_sweep.png").is_file()


def test_thirds_cover_every_layer_once():
    parts = thirds(30)
    assert parts["early"] == tuple(range(10)) and parts["late"] == tuple(range(20, 30))
    assert sorted(sum(parts.values(), ())) == list(range(30))


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_conditions(model, tmp_path, monkeypatch):
    config = DisruptConfig(**SMALL)
    real, calls, killed = D.evaluate_condition, [], []

    def counting(*a, **k):
        calls.append(a[6])
        if len(calls) == 4 and not killed:
            killed.append(a[6])
            raise KeyboardInterrupt  # a kill after three finished conditions
        return real(*a, **k)

    monkeypatch.setattr(D, "evaluate_condition", counting)
    ck_dir = resume_dir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        disrupt(model, ByteTokenizer(), TASKS, config, progress=False, checkpoint=Checkpoint(ck_dir, "key"))
    done = list(calls[:3])
    partial = json.loads((ck_dir / "partial.json").read_text())
    assert list(partial["conditions"]) == done  # the result so far, readable mid-run
    Checkpoint(ck_dir, "key").note("header.json", {"experiment": "disrupt", "model": {"name": "tiny"}})
    args = argparse.Namespace(out=str(tmp_path / "run"), partial_to=str(tmp_path / "part"))
    assert write_partial(args, disrupt_claims, lambda r, out: write_disrupt_report(r, out, "t"),
                         disrupt_notes) == 0
    written = json.loads((tmp_path / "part" / "results.json").read_text())
    assert list(written["conditions"]) == done and "3 condition(s) finished" in written["partial"]
    assert (tmp_path / "part" / "report.md").is_file()
    calls.clear()
    r = disrupt(model, ByteTokenizer(), TASKS, config, progress=False, checkpoint=Checkpoint(ck_dir, "key"))
    assert not set(done) & set(calls)  # finished conditions come from disk
    scored = {c for c, e in r["conditions"].items() if "same_as" not in e}
    assert set(done) | set(calls) == scored
    pieces = sorted(p.name for p in ck_dir.glob("*.pkl"))
    with pytest.raises(ValueError, match="other settings"):  # a different run never discards them
        Checkpoint(ck_dir, "another key")
    assert sorted(p.name for p in ck_dir.glob("*.pkl")) == pieces


def test_plan_scores_the_table_first_and_the_table_preset_only_that():
    full = DisruptConfig(sweep_k=(1, 2, 4), sweep_layers=True)
    names = [c.name for c in D.plan_conditions(full, tuple(range(30)), 30, "top-1")]
    table = ["original", "massive", "lowest_norm", "random_s0", "random_s1", "random_s2",
             "energy_matched_s0", "energy_matched_s1", "energy_matched_s2"]
    assert names[:len(table)] == table
    # sweeps of the massive dims before their lowest-norm twins, the ablations last
    assert names.index("sweep_layers_late") < names.index("sweep_top2_lowest") < names.index("q_only")
    only = DisruptConfig(sweep_k=(), sweep_layers=False, ablations=False)
    assert [c.name for c in D.plan_conditions(only, (0,), 30, "top-1")] == table


def test_the_condition_subset_does_not_change_the_resume_fingerprint():
    def spec(**flags):
        return RunSpec.from_args(argparse.Namespace(**flags), FRAMED["disrupt"])
    a = spec(model="m", n=100, conditions="all", out="x")
    b = spec(model="m", n=100, conditions="table", out="y")
    c = spec(model="m", n=50, conditions="all")
    for key in (legacy_vars, plan_flags):
        assert key(a) == key(b) != key(c)


def test_a_helper_scores_its_conditions_into_the_run_under_way(model, tmp_path, monkeypatch):
    config = DisruptConfig(**SMALL)
    real, calls = D.evaluate_condition, []
    monkeypatch.setattr(D, "evaluate_condition", lambda *a, **k: calls.append(a[6]) or real(*a, **k))
    ck_dir = resume_dir(tmp_path / "run")
    Checkpoint(ck_dir, "key")  # the main run, started
    with pytest.raises(ValueError, match="other settings"):
        Checkpoint(ck_dir, "other key", only=["q_only"])  # a helper never discards the run's pieces
    assert json.loads((ck_dir / "plan.json").read_text()) == {"key": "key"}
    with pytest.raises(ValueError, match="unknown condition"):
        disrupt(model, ByteTokenizer(), TASKS, config, progress=False,
                checkpoint=Checkpoint(ck_dir, "key", only=["q_olny"]))
    helped = disrupt(model, ByteTokenizer(), TASKS, config, progress=False,
                     checkpoint=Checkpoint(ck_dir, "key", only=["q_only", "k_only"]))
    assert calls == ["q_only", "k_only"] and set(helped["conditions"]) == {"q_only", "k_only"}
    assert not (ck_dir / "partial.json").exists()  # the main run's notes are its own
    calls.clear()
    r = disrupt(model, ByteTokenizer(), TASKS, config, progress=False, checkpoint=Checkpoint(ck_dir, "key"))
    assert "q_only" not in calls and "k_only" not in calls and calls[0] == "original"
    assert r["conditions"]["q_only"]["tasks"] == helped["conditions"]["q_only"]["tasks"]
