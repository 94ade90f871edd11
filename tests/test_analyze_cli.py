"""``mvjax analyze`` end to end on a tiny random model directory, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.cli import make_sequences
from analysis.sample import sample_texts
from mvjax.checkpoint import save_model
from mvjax.cli import main
from mvjax.config import ModelConfig, PositionalConfig
from mvjax.model import init_model
from mvjax.probe import collect_stats
from mvjax.tokenizers import ByteTokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = ByteTokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=4,
                      num_kv_heads=2, mlp_hidden=48, head_dim=8, bos_id=tok.bos_id,
                      positional=PositionalConfig(layout="interleaved"))
    return save_model(tmp_path_factory.mktemp("m") / "tiny", init_model(cfg, seed=0), tok)


def test_end_to_end_json_figures_report(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["analyze", "--model", str(model_dir), "--out", str(out), "--tokens", "320",
               "--seq-len", "64", "--batch-size", "2", "--sites", "q,k,v,q_rot",
               "--bar-layer", "1"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "massive_values.json").read_text())
    assert res["definition"]["lam"] == 5.0 and res["definition"]["mean_over"] == "head"
    assert res["model"]["config"]["num_layers"] == 2 and res["model"]["layout"] == "interleaved"
    assert res["data"]["n_sequences"] == 5 and res["data"]["seq_len"] == 64 and res["data"]["bos"]
    assert list(res["sites"]) == ["q", "k", "v", "q_rot"]
    assert np.array(res["sites"]["k"][1]["M"]).shape == (2, 8)

    # the JSON's M equals an independent streaming pass over the same BOS-first windows
    rows = make_sequences(ByteTokenizer(), sample_texts(), 64, 320)
    assert rows.shape == (5, 64) and (rows[:, 0] == 256).all()
    from mvjax.checkpoint import load_model

    recs = collect_stats(load_model(model_dir), [rows], ("q",), progress=False)
    np.testing.assert_allclose(np.array(res["sites"]["q"][1]["M"]),
                               np.sqrt(recs["q"][1].sumsq), rtol=1e-5)

    names = ["heatmap_q", "heatmap_k", "heatmap_v", "heatmap_q_rot", "band_map", "ratio_curves",
             "bars3d_layer1"]
    for n in names:
        for ext in ("png", "svg"):
            assert (out / f"{n}.{ext}").stat().st_size > 1000, n
    report = (out / "report.md").read_text()
    assert "5.0 * mean of M over the head dims" in report
    for n in names:
        assert f"({n}.png)" in report


@pytest.mark.parametrize("extra, needle", [
    (["--data", "EMPTY"], "empty"),
    (["--seq-len", "100000"], "longer than the data"),
    (["--sites", "q,attn"], "unknown site"),
    (["--model", "/nonexistent/model"], "/nonexistent/model"),
    (["--bar-layer", "2"], "out of range"),
    (["--lambda", "0"], "lambda"),
])
def test_one_line_errors(model_dir, tmp_path, capsys, extra, needle):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    extra = [str(empty) if x == "EMPTY" else x for x in extra]
    argv = ["analyze", "--model", str(model_dir), "--out", str(tmp_path / "o"), "--no-figures"]
    rc = main(argv + extra)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and needle in err, err
