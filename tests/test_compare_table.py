"""compare.md (``analysis.compare.render_table``): every cell checked against its inputs, computed
here independently — a committed rope-cause result and a tiny synthetic analyze dir. Fast (no model)."""

import json
from pathlib import Path

import numpy as np
import pytest

from mvjax.analysis.compare import load_entries, render_table
from mvjax.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
SEED0 = ROOT / "docs" / "rope-cause-seeds" / "rope" / "seed0"


def rows(table: str) -> dict[str, list[str]]:
    """{label: cells} of the table's data rows."""
    out = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| model"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0]] = cells[1:]
    return out


def split(cell: str) -> list[str]:
    return [c.strip() for c in cell.split(" / ")]


def share(M_HxD) -> np.ndarray:
    E = np.asarray(M_HxD, np.float64) ** 2
    return E.max(axis=1) / E.sum(axis=1)


def test_header_names_the_definition():
    table = render_table(load_entries(SEED0))
    assert "λ = 5.0, per-head mean" in table.splitlines()[0]


def test_rope_cause_row_matches_results_json():
    res = json.loads((SEED0 / "results.json").read_text())
    arm = res["arms"]["rope"]
    row = rows(render_table(load_entries(SEED0)))["rope-cause-seeds/rope/seed0/rope"]
    shape, count, smax, smed, band, first, agree, mass = row
    assert shape.startswith(f"{arm['num_layers']} × {arm['num_heads']} × {arm['head_dim']}")
    final = arm["final"]
    for cell, site in zip(split(count), ("q_rot", "k_rot", "v")):
        assert int(cell) == sum(layer["n_massive"] for layer in final[site]["layers"])
    for cell, site in zip(split(first), ("q_rot", "k_rot", "v")):
        counts = [layer["n_massive"] for layer in final[site]["layers"]]
        assert cell == str(next((i for i, n in enumerate(counts) if n), "–"))
    for cell, site in zip(split(band), ("q_rot", "k_rot", "v")):
        bands = [layer["band_low_share_median"] for layer in final[site]["layers"]]
        assert float(cell) == round(float(np.median(bands)), 2)
    for cell, site in zip(split(agree), ("q_rot", "k_rot", "v")):
        a = final[site]["agreement"]
        assert cell == f"{a['share']:.2f} ({a['chance']:.2f})"
    shares = {s: np.array([share(M) for M in arm["final_M"][s]]) for s in ("q_rot", "k_rot")}
    assert split(smax) == [f"{shares['q_rot'].max():.3f}", f"{shares['k_rot'].max():.3f}", "–"]
    assert split(smed) == [f"{np.median(shares['q_rot']):.3f}",
                           f"{np.median(shares['k_rot']):.3f}", "–"]  # results hold no V norms
    assert mass == f"{np.mean(arm['final_first_token_mass']):.3f}"


def test_analyze_row_matches_planted_norms(tmp_path):
    cfg = ModelConfig(vocab_size=8, hidden_size=16, num_layers=2, num_heads=2, head_dim=8,
                      max_seq_len=16)
    rng = np.random.default_rng(0)
    norms = {s: 1 + 0.1 * rng.random((2, 2, 8)) for s in ("q", "k", "v", "q_rot", "k_rot")}
    norms["k_rot"][1, 0, 7] = 50.0  # one massive entry: K, layer 1, head 0
    norms["q_rot"][0, 1, 6] = 30.0  # and one in Q, layer 0
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "massive_values.json").write_text(json.dumps({
        "model": {"name": "tiny", "config": cfg.to_dict()},
        "sites": {s: [{"M": M.tolist()} for M in v] for s, v in norms.items()}}))
    row = rows(render_table(load_entries(d)))["tiny"]
    shape, count, smax, smed, band, first, agree, mass = row
    assert shape == "2 × 2 × 8 (0.125)"
    expect = [int((v > 5 * v.mean(axis=2, keepdims=True)).sum())
              for v in (norms["q_rot"], norms["k_rot"], norms["v"])]
    assert split(count) == [str(n) for n in expect] == ["1", "1", "0"]
    assert split(first) == ["0", "1", "–"]
    for cell, site in zip(split(smax), ("q_rot", "k_rot", "v")):
        assert cell == f"{max(share(M).max() for M in norms[site]):.3f}"
    for cell, site in zip(split(smed), ("q_rot", "k_rot", "v")):
        assert cell == f"{np.median([share(M) for M in norms[site]]):.3f}"
    assert mass == "–"  # an analyze result written before it recorded attention

    # one that records it: per layer, per head; the cell is the mean over heads, then layers
    heads = [[0.9, 0.5], [0.2, 0.1]]
    res = json.loads((d / "massive_values.json").read_text())
    (d / "massive_values.json").write_text(json.dumps({**res, "first_token_mass": heads}))
    entry, = load_entries(d)
    assert entry.first_token_mass == pytest.approx([0.7, 0.15])
    assert rows(render_table([entry]))["tiny"][-1] == f"{np.mean(heads):.3f}" == "0.425"
