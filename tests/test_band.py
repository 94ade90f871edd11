"""``mvjax experiment band``: the strongest K pair per head is found by pair energy under each
layer's own RoPE labels, and the fixed band-vs-context rule gives each of its three verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.experiments.band import Band, run_band, strongest_pairs, verdict
from mvjax.cli import main as cli_main
from train.config import ExperimentConfig

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-rope.yaml"


def _exp(ctx: int, theta: float) -> ExperimentConfig:
    return ExperimentConfig.load(CONFIG, [
        "model.num_heads=2", f"model.max_seq_len={ctx}", f"data.seq_len={ctx}",
        f"model.positional={{scheme: rope, theta: {theta}, layout: half, rotary_fraction: 1.0}}"])


def _norms(exp: ExperimentConfig, pair: int) -> np.ndarray:
    """L×H×D norms with most of every head's energy in RoPE pair ``pair`` (half layout: dims
    pair and pair + D/2)."""
    m = exp.model
    M = np.random.default_rng(0).uniform(0.5, 1.0, (m.num_layers, m.num_heads, m.head_dim))
    M[:, :, pair] = M[:, :, pair + m.head_dim // 2] = 6.0
    return M


def _fake_run(root: Path, ctx: int, theta: float, pair: int) -> Path:
    exp = _exp(ctx, theta)
    d = root / f"theta{theta:g}-ctx{ctx}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(exp.to_yaml())
    logs = [{"step": s, "norms": {"k": _norms(exp, pair if s == 8 else 0).tolist()}} for s in (4, 8)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logs))
    return d


def test_strongest_pair_by_pair_energy_and_its_wavelength():
    exp = _exp(256, 10000.0)
    pairs, waves, n_pairs = strongest_pairs(_norms(exp, 16), exp.model)
    assert n_pairs == 32 and all(p == 16 for row in pairs for p in row)
    assert waves[0][0] == pytest.approx(2 * np.pi * 10000.0 ** (32 / 64))  # ≈ 628 tokens


def _band(ctx: int, pair: int, theta: float = 1e4) -> Band:
    wave = 2 * np.pi * theta ** (2 * pair / 64)
    return Band(f"c{ctx}", [theta] * 2, ctx, [None] * 2, [[pair] * 2] * 2, [[wave] * 2] * 2, 32)


def test_rule_gives_each_verdict():
    # θ=1e4: pair i has wavelength 2π·1e4^(i/32); doubling the context is ~2.4 pairs
    follows_ctx = [_band(128, 13), _band(256, 16), _band(512, 18)]
    v = verdict(follows_ctx)["per_base"]["10000"]
    assert v["verdict"] == "follows the context" and v["ratio_spread"] <= 1.5
    fixed = [_band(128, 16), _band(256, 16), _band(512, 16)]
    assert verdict(fixed)["per_base"]["10000"]["verdict"] == "follows the pair index"
    assert verdict(fixed)["law"] == "fails"
    mixed = [_band(128, 10), _band(256, 16), _band(512, 12)]
    assert verdict(mixed)["per_base"]["10000"]["verdict"] == "neither"
    assert verdict(mixed)["law"] == "undecided"
    with pytest.raises(ValueError, match="two or more context"):
        verdict([_band(256, 16)])


def test_band_command_reads_runs_and_regrows_from_its_json(tmp_path):
    runs = [_fake_run(tmp_path / "runs", ctx, theta, pair)
            for theta, pairs in ((10000.0, (13, 16, 18)), (1000000.0, (8, 10, 12)))
            for ctx, pair in zip((128, 256, 512), pairs)]
    assert run_band(runs[1]).tokens == 8 * 16 * 256  # the last logged step, not the first
    out = tmp_path / "band"
    assert cli_main(["experiment", "band", *map(str, runs), "--out", str(out)]) == 0
    saved = json.loads((out / "band.json").read_text())
    assert set(saved["per_base"]) == {"10000", "1e+06"} and "rule" in saved
    assert saved["per_base"]["10000"]["verdict"] == "follows the context"
    assert (out / "band.png").stat().st_size > 1000
    assert "follows the context" in (out / "band.md").read_text()
    again = tmp_path / "again"
    assert cli_main(["experiment", "band", str(out / "band.json"), "--out", str(again)]) == 0
    assert json.loads((again / "band.json").read_text())["per_base"] == saved["per_base"]
