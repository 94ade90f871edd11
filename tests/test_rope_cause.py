"""``mvjax experiment rope-cause --preset test``: the whole pipeline in seconds — results.json
schema, every figure, the report's claims, refusal without --resume, and resume after a stop
continuing the same arms."""

from __future__ import annotations

import json
import os

import jax
import pytest

from mvjax.analysis.experiments.rope_cause.presets import PRESETS
from mvjax.analysis.experiments.rope_cause.results import ArmAccuracy
from mvjax.analysis.experiments.rope_cause.run import run
from mvjax.analysis.experiments.rope_cause.plots import FIGURES
from mvjax.cli import main as cli_main
from mvjax.train.metrics import read_metrics

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/mvjax-test-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("rope_cause")
    preset = PRESETS["test"]
    assert run(preset, out, stop_at=2) is None  # a "kill" after step 2 of the first arm
    first = preset.arms[0]
    assert (out / "arms" / first / "checkpoints" / "2").is_dir()
    assert not (out / "arms" / preset.arms[1]).exists()
    with pytest.raises(FileExistsError, match="--resume"):
        run(preset, out)
    results = run(preset, out, resume=True)
    return out, preset, results


def test_results_schema(finished):
    out, preset, results = finished
    layers = preset.shared.model.num_layers
    saved = json.loads((out / "results.json").read_text())
    assert saved["experiment"] == "rope-cause" and set(saved["arms"]) == set(preset.arms)
    assert saved["definitions"]["massive"]["lam"] == 5.0
    assert saved["preset"]["name"] == "test" and "git_sha" in saved
    for arm in saved["arms"].values():
        cur = arm["curves"]
        assert cur["steps"] == [2, 4] and len(cur["tokens"]) == 2
        for site in ("q", "k", "v", "q_rot", "k_rot"):
            for key, LxS in cur["sites"][site].items():
                assert len(LxS) == layers and all(len(s) == 2 for s in LxS), key
        assert len(cur["first_token_mass"]) == layers
        assert all(0 < m < 1 for per in cur["first_token_mass"] for m in per)
        assert set(arm["tasks"]["kinds"]) == {"contextual", "parametric"}
        assert len(arm["final"]["k_rot"]["layers"]) == layers
        r = arm["retrieval"]  # the held-out retrieval probe, logged at every eval step
        assert [p["step"] for p in r["points"]] == [2, 4] and r["level"] == 0.8
        assert all(0 <= p["all_exact"] <= 1 and p["all_answer_nll"] > 0 for p in r["points"])
        assert {"passkey_exact", "kv_recall_exact"} <= set(r["points"][0])
    assert saved["arms"]["nope"]["final_counts"]["k_rot"]["n_massive_unrotated"] is None
    assert saved["arms"]["partial-rope"]["final"]["k"]["layers"][0]["rotated_energy_share"] < 1
    assert set(saved["claims"]) == {"1", "2", "3", "4", "5"}
    for arm in saved["arms"].values():  # claim (5): every arm's own dims disrupted
        d = arm["disruption"]
        assert {"original", "massive", "lambda_massive", "lowest_norm", "random_s2",
                "energy_matched_s2"} <= set(d["accuracy"])
        assert d["accuracy"]["original"]["contextual"]["ci95"][0] >= 0
        assert d["accuracy"]["original"]["contextual"]["n"] == sum(
            v for k, v in d["n_items"].items() if k != "fact")
        assert set(d["massive_dims"]) == {"q_rot", "k_rot"}
        ctx = d["accuracy"]["massive"]["contextual"]  # per item, for paired statistics
        assert len(ctx["hits"]) == ctx["n"] and ctx["hits"].count("1") == ctx["correct"]
        assert d["control_draws"]["random_s0"]["draw"] == "pair-aware"
    five = saved["claims"]["5"]
    assert five["verdict"] in ("holds", "does not hold", "not tested")
    assert set(five["numbers"]) == set(preset.arms)


def _acc(contextual, parametric, n=100):
    from mvjax.data.tasks.base import wilson_interval

    def one(a):
        if a is None:
            return None
        k = round(a * n)
        return {"n": n, "correct": k, "accuracy": k / n,
                                       "ci95": list(wilson_interval(k, n))}
    return {"contextual": one(contextual), "parametric": one(parametric)}


@pytest.mark.parametrize("original, massive, control, verdict", [
    (0.8, (0.2, 0.9), 0.7, "holds"),          # contextual loses more, CIs below every control
    (0.8, (0.2, 0.1), 0.7, "does not hold"),  # parametric loses more
    (0.8, (0.6, 0.9), 0.7, "does not hold"),  # overlaps the controls' intervals
    (0.1, (0.0, 0.9), 0.1, "not tested"),     # 10 solved episodes: under the minimum
    (0.8, (0.0, None), 0.7, "not tested"),    # parametric not scored
])
def test_claim_5_rule(original, massive, control, verdict):
    from mvjax.analysis.experiments.rope_cause.claims import claim_disruption

    acc = {"original": _acc(original, 1.0), "massive": _acc(*massive),
           "lowest_norm": _acc(control, 1.0),
           **{f"{f}_s{i}": _acc(control, 1.0) for f in ("random", "energy_matched") for i in range(3)}}
    if massive[1] is None:
        acc["original"]["parametric"] = None
    out = claim_disruption({"rope": ArmAccuracy.from_json(acc), "nope": ArmAccuracy.from_json(acc)})
    assert out.verdict == verdict and out.numbers["nope"]["verdict"] == verdict
    if verdict != "not tested":
        assert out.numbers["rope"]["contextual_retention_massive"] == pytest.approx(massive[0] / 0.8)
        assert out.numbers["rope"]["controls"]["random"]["n"] == 300  # 3 seeds pooled


def test_claim_5_reports_each_seed_beside_the_pooled_rule():
    """Seeds far apart (0.1 / 0.5 / 0.9, pooled 0.5): the pooled rule puts a massive 0.2 below the
    controls, the per-seed reading does not (seed 0 is lower) — the verdict stays the rule's."""
    from mvjax.analysis.experiments.rope_cause.claims import claim_disruption

    acc = {"original": _acc(0.8, 1.0), "massive": _acc(0.2, 0.9), "lowest_norm": _acc(0.7, 1.0),
           **{f"random_s{i}": _acc(a, 1.0) for i, a in enumerate((0.1, 0.5, 0.9))},
           **{f"energy_matched_s{i}": _acc(0.7, 1.0) for i in range(3)}}
    rope = claim_disruption({"rope": ArmAccuracy.from_json(acc)}).numbers["rope"]
    assert rope["verdict"] == "holds"
    assert rope["massive_below_every_seed"] is False
    assert [v["accuracy"] for v in rope["controls_per_seed"]["random"].values()] == [0.1, 0.5, 0.9]
    acc["random_s0"] = _acc(0.7, 1.0)
    assert claim_disruption({"rope": ArmAccuracy.from_json(acc)}).numbers["rope"]["massive_below_every_seed"] is True


def test_resume_continued_the_same_arms(finished):
    out, preset, _ = finished
    for arm in preset.arms:
        steps = [r["step"] for r in read_metrics(out / "arms" / arm / "metrics.jsonl")
                 if "norms" in r]
        assert steps == [2, 4], (arm, steps)  # no step logged twice, none missing
        assert (out / "arms" / arm / "model").is_dir()


def test_every_figure_and_report(finished):
    out, _, _ = finished
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "What this preset can and cannot show" in report
    assert "(4)" in report and "(5)" in report and "| rope | contextual (n=" in report
    assert all(f"figures/{name}.png" in report for name in FIGURES)


def test_cli_refuses_a_different_preset_on_resume(finished, capsys):
    out, _, _ = finished
    code = cli_main(["experiment", "rope-cause", "--preset", "quick", "--out", str(out), "--resume"])
    assert code == 2 and "same --preset" in capsys.readouterr().err


def test_compare_draws_experiment_and_analyze_results(finished, tmp_path, capsys):
    out, preset, _ = finished
    code = cli_main(["compare", str(out), str(out / "arms" / "rope" / "analyze"),
                     "--out", str(tmp_path / "cmp")])
    assert code == 0
    table = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert len(table) == len(preset.arms) + 1
    analyze_entry = next(v for k, v in table.items() if k.startswith("analyze"))
    arm_entry = table[f"{out.name}/rope"]
    assert analyze_entry["k_rot"] == arm_entry["k_rot"]  # same model, same numbers either way
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    assert cli_main(["compare", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "neither results.json" in capsys.readouterr().err


def test_emergence_reads_training_runs(finished, tmp_path):
    out, preset, _ = finished
    runs = [str(out / "arms" / a) for a in ("rope", "nope")]
    assert cli_main(["experiment", "emergence", *runs, "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "emergence.json").read_text())
    assert set(saved["totals"]) == {"rope", "nope"}
    t = saved["totals"]["rope"]
    data = preset.shared.data
    assert t["tokens"] == [2 * data.batch_size * data.seq_len, 4 * data.batch_size * data.seq_len]
    assert all(len(t[k]) == 2 for k in ("q_massive", "k_max_mean", "first_token_mass"))
    assert (tmp_path / "emergence.png").stat().st_size > 1000
    rows = (tmp_path / "emergence.md").read_text().splitlines()
    assert len(rows) == 4 and rows[2].startswith("| rope | rope | ")
    assert rows[3].split(" | ")[11] == "n/a / n/a"  # NoPE: no wavelengths of its own
    from mvjax.analysis.experiments.emergence.run import load_runs, run_curves

    with pytest.raises(FileNotFoundError, match="not a training run"):
        run_curves(tmp_path)
    # a saved emergence.json joins new runs, as recorded; a name twice is refused
    grown = tmp_path / "grown"
    assert cli_main(["experiment", "emergence", str(tmp_path / "emergence.json"),
                     str(out / "arms" / "partial-rope"), "--out", str(grown)]) == 0
    again = json.loads((grown / "emergence.json").read_text())
    assert list(again["totals"]) == ["rope", "nope", "partial-rope"]
    assert again["totals"]["rope"] == saved["totals"]["rope"]
    with pytest.raises(ValueError, match="given twice"):
        load_runs([str(tmp_path / "emergence.json"), runs[0]])


@pytest.mark.slow
def test_sigkill_then_resume_finishes_the_same_arms(tmp_path):
    """A real kill (SIGKILL once the first arm has a checkpoint), then --resume."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mvjax.cli", "experiment", "rope-cause", "--preset", "test",
           "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = out / "arms" / "rope" / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline and not (ckpts.is_dir() and any(ckpts.iterdir())):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    done = subprocess.run(cmd + ["--resume"], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert list(results["arms"]) == list(PRESETS["test"].arms)
    for arm in PRESETS["test"].arms:
        steps = {r["step"] for r in read_metrics(out / "arms" / arm / "metrics.jsonl") if "norms" in r}
        assert steps == {2, 4}, (arm, steps)


def test_presets_are_overrides_on_one_base_config():
    """A preset names the config's own fields; every arm shares them but ``model.positional``."""
    from mvjax.analysis.experiments.rope_cause.presets import Preset

    cfg = PRESETS["test"].config("partial-rope")
    assert (cfg.model.hidden_size, cfg.model.num_layers, cfg.data.batch_size, cfg.data.seq_len,
            cfg.train.steps, cfg.train.optim.warmup_steps, cfg.train.checkpoint_every) == (
        32, 2, 4, 48, 4, 1, 2)
    assert cfg.model.positional.rotary_fraction == 0.25 and cfg.data.mixture.n_facts == 4
    rope, nope = (PRESETS["cpu"].config(a).to_dict() for a in ("rope", "nope"))
    assert {k: v for k, v in rope["model"].items() if k != "positional"} == {
        k: v for k, v in nope["model"].items() if k != "positional"}
    assert rope["data"] == nope["data"] and rope["train"] == nope["train"]
    assert rope["train"]["steps"] * rope["data"]["batch_size"] * rope["data"]["seq_len"] == 9830400
    with pytest.raises(ValueError, match="not a section"):
        Preset("typo", ("modle.hidden_size=8",)).config("rope")
def test_retrieval_preset_builds_and_logs_retrieval(tmp_path):
    """The retrieval preset at reduced steps: its arms' configs build, and one arm's training
    logs held-out retrieval at every eval step."""
    import dataclasses

    from mvjax.analysis.experiments.rope_cause.run import train_arms

    full = PRESETS["retrieval"]
    assert full.retrieval_every_eval and full.arms[:3] == ("rope", "nope", "alibi")
    for arm in full.arms:
        exp = full.config(arm)
        assert exp.model.head_dim == 32 and exp.data.mixture.question == "lead_in"
        assert exp.train.steps == 6500 and exp.train.optim.schedule == "wsd"
    small = dataclasses.replace(full, arms=("rope",), eval_episodes=4, overrides=(
        *full.overrides, "model.hidden_size=32", "model.num_layers=1", "model.num_heads=1",
        "model.mlp_hidden=64", "train.steps=2", "train.eval_every=1", "train.log_every=1",
        "train.concentration_every=1", "train.checkpoint_every=1", "data.batch_size=2",
        "data.eval_rows=2"))  # compiles in seconds
    assert train_arms(small, tmp_path, resume=False)
    probes = [r for r in read_metrics(tmp_path / "arms" / "rope" / "metrics.jsonl") if "probe" in r]
    assert [r["step"] for r in probes] == [1, 2]
    assert probes[0]["probe"]["all"]["n"] == 4


def test_a_seed_varies_init_data_order_and_the_mixture_alone():
    import dataclasses

    base = PRESETS["retrieval"]
    a, b = base.config("rope"), dataclasses.replace(base, seed=2).config("rope")
    assert (b.train.seed, b.data.seed, b.data.mixture.seed) == (2, 2, 2)
    assert (a.train.seed, a.data.seed, a.data.mixture.seed) == (0, 0, 0)
    assert dataclasses.replace(b, train=a.train, data=a.data) == a  # nothing else moves
    assert base.heldout_seed == 2 and base.control_seeds >= 50  # fresh held-out set, a null distribution


def test_resuming_one_arm_keeps_every_finished_arm_in_the_results(finished):
    import dataclasses

    out, preset, _ = finished
    again = run(dataclasses.replace(preset, arms=(preset.arms[-1],)), out, resume=True)
    assert list(again.arms) == list(preset.arms)
    assert list(json.loads((out / "results.json").read_text())["arms"]) == list(preset.arms)


def test_the_episode_curves_do_not_change_training(tmp_path):
    """The gap probe and the episode norms read the model: the same arm trained with and without
    them has the same losses, step for step (so replacement seeds compare with seeds 0-2)."""
    import dataclasses

    from mvjax.analysis.experiments.rope_cause.run import train_arms

    losses = {}
    for gap in (0, 2):
        preset = dataclasses.replace(PRESETS["test"], arms=("rope",), gap_every=gap)
        assert train_arms(preset, tmp_path / str(gap), resume=False)
        logs = read_metrics(tmp_path / str(gap) / "arms" / "rope" / "metrics.jsonl")
        losses[gap] = [(r["step"], r["loss"]) for r in logs if "loss" in r]
        gaps = [r for r in logs if "probe" in r and "gap" in r["probe"]]
        assert len(gaps) == (0 if gap == 0 else 2)
    assert losses[0] == losses[2] and len(losses[0]) >= 2
