"""``mvjax experiment band``: the strongest K pair per head is found by pair energy under each
layer's own RoPE labels, and the fixed band-vs-context rule gives each of its three verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mvjax.analysis.experiments.band.claims import verdict
from mvjax.analysis.experiments.band.results import Band
from mvjax.analysis.experiments.band.run import run_band, strongest_pairs
from mvjax.cli import main as cli_main
from mvjax.train.config import ExperimentConfig

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
    v = verdict(follows_ctx).per_base["10000"]
    assert v.verdict == "follows the context" and v.ratio_spread <= 1.5
    assert verdict(follows_ctx).law == "undecided"  # the rule needs both bases to hold
    both = follows_ctx + [_band(c, p, 1e6) for c, p in ((128, 9), (256, 11), (512, 12))]
    assert verdict(both).per_base["1e+06"].verdict == "follows the context"
    assert verdict(both).law == "holds"
    fixed = [_band(128, 16), _band(256, 16), _band(512, 16)]
    assert verdict(fixed).per_base["10000"].verdict == "follows the pair index"
    assert verdict(fixed).law == "fails"
    mixed = [_band(128, 10), _band(256, 16), _band(512, 12)]
    assert verdict(mixed).per_base["10000"].verdict == "neither"
    assert verdict(mixed).law == "undecided"
    assert verdict(mixed).to_json()["per_base"]["10000"]["verdict"] == "neither"
    with pytest.raises(ValueError, match="two or more context"):
        verdict([_band(256, 16)])


def test_band_command_reads_runs_and_regrows_from_its_json(tmp_path):
    runs = [_fake_run(tmp_path / "runs", ctx, theta, pair)
            for theta, pairs in ((10000.0, (13, 16, 18)), (1000000.0, (8, 10, 12)))
            for ctx, pair in zip((128, 256, 512), pairs)]
    assert run_band(runs[1]).tokens == 8 * 16 * 256  # the last logged step, not the first
    assert run_band(runs[1]).first_massive_tokens == 4 * 16 * 256  # a λ=5 entry from the first log
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


# ---------------------------------------------------------------- faults (issue: band items 8, 9)


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """The command fails with exit 2 and one stderr line (no traceback) holding every needle."""
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _saved(path: Path, runs) -> Path:
    path.write_text(json.dumps({"runs": runs}))
    return path


def test_first_rule_reads_a_seeded_sweep_one_seed_at_a_time():
    """Three seeds per context: the first rule compares one run per context, so it is applied per
    seed; a seed with one context so far (a sweep in progress) is left out, none left is refused."""
    from dataclasses import replace

    seeded = [replace(_band(c, p), seed=s) for s, pairs in enumerate(((13, 16, 18), (16, 16, 16)))
              for c, p in zip((128, 256, 512), pairs)]
    first = verdict(seeded + [replace(_band(128, 13), name="c128b", seed=2)])
    assert list(first.per_base) == ["10000 seed 0", "10000 seed 1"]  # seed 2: one context, left out
    assert first.per_base["10000 seed 0"].verdict == "follows the context"
    assert first.per_base["10000 seed 1"].verdict == "follows the pair index"
    assert first.law == "fails"
    with pytest.raises(ValueError, match="two or more context"):
        verdict([replace(_band(128, 13), seed=s) for s in (0, 1)])


def _band_dict(ctx: int, pair: int, layers: int = 2, theta: float = 1e4) -> dict:
    wave = 2 * np.pi * theta ** (2 * pair / 64)
    return {"name": f"l{layers}-c{ctx}", "theta": [theta] * layers, "context": ctx,
            "window": [None] * layers, "pairs_LxH": [[pair] * 2] * layers,
            "wavelengths_LxH": [[wave] * 2] * layers, "n_pairs": 32, "tokens": 1000}


def test_band_runs_of_different_depth_are_drawn(tmp_path):
    """A 2-layer and a 4-layer run of one base: each run's own layers are plotted (the plot used
    to index the deeper run's layers into the shallower one: IndexError)."""
    src = _saved(tmp_path / "in.json", [_band_dict(128, 13, layers=4), _band_dict(256, 16, layers=2),
                                        _band_dict(512, 18, layers=3)])
    out = tmp_path / "out"
    assert cli_main(["experiment", "band", str(src), "--out", str(out)]) == 0
    saved = json.loads((out / "band.json").read_text())
    assert saved["per_base"]["10000"]["verdict"] == "follows the context"
    assert (out / "band.png").stat().st_size > 1000


BAD_BAND_JSON = {
    "runs not a list": ({"runs": 5}, "'runs'"),
    "run not an object": ({"runs": [3]}, "runs[0]"),
    "no context": ({"runs": [{k: v for k, v in _band_dict(128, 13).items() if k != "context"}]},
                   "'context'"),
    "context a string": ({"runs": [{**_band_dict(128, 13), "context": "128"}]}, "'context'"),
    "empty pairs": ({"runs": [{**_band_dict(128, 13), "pairs_LxH": [], "wavelengths_LxH": []}]},
                    "'pairs_LxH'"),
    "empty head row": ({"runs": [{**_band_dict(128, 13), "pairs_LxH": [[], []]}]}, "'pairs_LxH'"),
    "unknown field": ({"runs": [{**_band_dict(128, 13), "colour": 1}]}, "'colour'"),
    "references not a list": ({"runs": [_band_dict(128, 13)], "references": {}}, "'references'"),
}


@pytest.mark.parametrize("case", BAD_BAND_JSON)
def test_malformed_band_json_is_one_line_naming_the_file(tmp_path, capsys, case):
    content, needle = BAD_BAND_JSON[case]
    src = tmp_path / "band.json"
    src.write_text(json.dumps(content))
    _one_line_error(capsys, ["experiment", "band", str(src), "--out", str(tmp_path / "out")],
                    str(src), needle, "mvjax experiment band")
    assert not (tmp_path / "out").exists()


def test_cut_band_json_is_one_line_naming_the_file(tmp_path, capsys):
    good = _saved(tmp_path / "band.json", [_band_dict(128, 13), _band_dict(256, 16)])
    good.write_text(good.read_text()[:40])
    _one_line_error(capsys, ["experiment", "band", str(good), "--out", str(tmp_path / "out")],
                    str(good), "not valid JSON")


def test_band_refuses_a_run_given_twice(tmp_path, capsys):
    """The same run twice would be listed (and counted in the medians' comparison) twice."""
    runs = [_fake_run(tmp_path / "runs", ctx, 10000.0, pair) for ctx, pair in ((128, 13), (256, 16))]
    _one_line_error(capsys, ["experiment", "band", str(runs[0]), str(runs[1]), str(runs[0]) + "/",
                             "--out", str(tmp_path / "out")], runs[0].name, "twice")
    # also when one comes from a band.json written earlier
    out = tmp_path / "band"
    assert cli_main(["experiment", "band", *map(str, runs), "--out", str(out)]) == 0
    _one_line_error(capsys, ["experiment", "band", str(out / "band.json"), str(runs[1]),
                             "--out", str(tmp_path / "out2")], runs[1].name, "twice")


def _seeded(ctx: int, pair_of_head: list[int], seed: int, theta: float = 1e4, layers: int = 3) -> Band:
    """A run whose every layer has one head per entry of ``pair_of_head`` at that pair."""
    wave = lambda i: 2 * np.pi * theta ** (i / 32)  # noqa: E731  head_dim 64: 32 pairs
    return Band(f"t{theta:g}-c{ctx}-s{seed}", [theta] * layers, ctx, [None] * layers,
                [list(pair_of_head)] * layers, [[wave(i) for i in pair_of_head]] * layers, 32,
                seed=seed)


def test_slope_rule_gives_each_verdict():
    from mvjax.analysis.experiments.band.claims import slope_law

    # θ=1e4: W = 2π·1e4^(i/32), so doubling C moves a band that follows it by 32·log10(2)/4 ≈ 2.4 pairs
    follows = [_seeded(c, [p + j, p + 1 + j], s) for s in range(3)
               for c, p in ((128, 11), (256, 13), (512, 16)) for j in (s % 2,)]
    out = slope_law(follows, n_boot=300)
    v = out.per_base["10000"]
    assert v.verdict == "follows the context" and v.ci95[0] <= 1 <= v.ci95[1]
    assert out.claim.verdict == "holds" and out.to_json()["claim"]["verdict"] == "holds"
    assert list(v.to_json()) == ["contexts", "seeds", "runs", "pair_grid", "slope", "ci95", "n_points", "verdict"]
    fixed = [_seeded(c, [16 + s % 2, 15], s) for s in range(3) for c in (128, 256, 512)]
    out = slope_law(fixed, n_boot=300)
    assert out.per_base["10000"].verdict == "fixed in frequency"
    assert out.claim.verdict == "does not hold"
    one_seed = [_seeded(c, [16], 0) for c in (128, 256, 512)]
    unfit = slope_law(one_seed, n_boot=50).per_base["10000"]
    assert unfit.verdict == "undecided"
    assert list(unfit.to_json()) == ["contexts", "seeds", "runs", "pair_grid", "slope", "ci95", "verdict", "detail"]
    noisy = [_seeded(c, [4 + 7 * s, 24 - 5 * s], s) for s in range(3) for c in (128, 256, 512)]
    assert slope_law(noisy, n_boot=300).per_base["10000"].verdict == "undecided"
    assert slope_law(follows, n_boot=10).per_base["10000"].pair_grid[
        "pairs_per_context_doubling"] == pytest.approx(32 * np.log10(2) / 4)


def test_slope_skips_layer_zero():
    from mvjax.analysis.experiments.band.claims import slope_for_base

    runs = [_seeded(c, [p], s) for s in range(2) for c, p in ((128, 11), (512, 16))]
    wild = [Band(b.name, b.theta, b.context, b.window, [[0]] + b.pairs_LxH[1:],
                 [[1e9 if b.context == 512 else 1.0]] + b.wavelengths_LxH[1:], 32, seed=b.seed)
            for b in runs]
    assert slope_for_base(wild, 50).slope == pytest.approx(slope_for_base(runs, 50).slope)
