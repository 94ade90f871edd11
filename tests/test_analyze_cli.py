"""``mvjax analyze`` end to end on a tiny random model directory, and its one-line errors."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from mvjax.analysis.analyze import Analysis, make_sequences
from mvjax.analysis.sample import sample_texts
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
    prov = res["provenance"]
    assert prov["command"].startswith("mvjax analyze --model") and "--bar-layer 1" in prov["command"]
    assert prov["model_source"].startswith("mvjax model directory") and prov["date_utc"][:2] == "20"
    assert f"`{prov['command']}`" in report

    # the per-layer first-token mass: in the JSON (layers × heads), the report, the printed
    # headline and compare's first-token column (mean over heads, then layers)
    mass = np.array(res["first_token_mass"])
    assert mass.shape == (2, 4) and ((0 < mass) & (mass < 1)).all()
    by_layer = mass.mean(axis=1)
    assert ("layer 0 onward: " + ", ".join(f"{m:.3f}" for m in by_layer) + ".") in report
    printed = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(printed["first_token_mass"], by_layer, atol=1e-4)
    from mvjax.analysis.compare import load_entries, render_table, table_row

    entry, = load_entries(out)
    np.testing.assert_allclose(entry.first_token_mass, by_layer, rtol=1e-12)
    assert table_row(entry)["first_token_mass"] == pytest.approx(by_layer.mean(), rel=1e-12)
    assert render_table([entry]).splitlines()[-1].endswith(f"| {by_layer.mean():.3f} |")

    # a re-run with other settings replaces the whole set: no stale report or figures beside it
    assert main(["analyze", "--model", str(model_dir), "--out", str(out), "--tokens", "128",
                 "--seq-len", "64", "--no-figures"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["massive_values.json"]
    assert json.loads((out / "massive_values.json").read_text())["data"]["n_sequences"] == 2
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_results_set_is_written_whole_or_not_at_all(model_dir, tmp_path, monkeypatch):
    """A failure while drawing figures leaves the earlier complete set untouched and no partial."""
    out = tmp_path / "out"
    argv = ["analyze", "--model", str(model_dir), "--out", str(out), "--tokens", "128",
            "--seq-len", "64"]
    assert main(argv + ["--no-figures"]) == 0
    before = (out / "massive_values.json").read_text()
    import mvjax.analysis.plots

    def crash(*a, **k):
        raise RuntimeError("killed while drawing")
    monkeypatch.setattr(mvjax.analysis.plots, "all_figures", crash)
    with pytest.raises(RuntimeError):
        main(argv + ["--lambda", "3"])
    assert (out / "massive_values.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_is_checked_before_any_work(model_dir, tmp_path, capsys, monkeypatch):
    """An --out holding a user's other files, or one that cannot be written, is refused in one line
    before statistics are computed."""
    import mvjax.analysis.analyze

    monkeypatch.setattr(mvjax.analysis.analyze, "collect_stats", lambda *a, **k: pytest.fail("computed"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for out, needle in ((mine, "not a results set"), ("/sys/mvjax-results", "cannot write into")):
        assert main(["analyze", "--model", str(model_dir), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert (mine / "notes.txt").read_text() == "keep me"


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


def test_heatmap_ticks_name_real_dims_and_wavelengths():
    """Ticks on the frequency-ordered axis give the dim index used in the JSON's [h, d] and its
    RoPE wavelength, so an entry seen in a figure can be found in the data."""
    from mvjax.analysis.massive import frequency_order
    from mvjax.analysis.plots import dim_ticks

    theta = [1e4 ** (-2 * i / 8) for i in range(4)]
    freqs = theta + theta[:3] + [None]  # half layout, the last dim left unrotated
    order = frequency_order(freqs)
    positions, labels = dim_ticks(freqs, order, n_ticks=8)
    assert positions == list(range(8))
    assert [int(lab.split("\n")[0]) for lab in labels] == [int(d) for d in order]
    by_dim = {int(lab.split("\n")[0]): lab.split("\n")[1] for lab in labels}
    assert by_dim[3] == "6.3k" and by_dim[0] == "6.28" and by_dim[7] == "—"


def test_figures_share_one_scale(model_dir, tmp_path, monkeypatch):
    """All heatmaps of a run use one colour scale (the run's largest ratio), so V is not stretched
    to look as massive as Q/K."""
    import mvjax.analysis.plots as plots

    out = tmp_path / "out"
    assert main(["analyze", "--model", str(model_dir), "--out", str(out), "--tokens", "128",
                 "--seq-len", "64", "--no-figures"]) == 0
    res = Analysis.from_json(json.loads((out / "massive_values.json").read_text()))
    seen = {}
    monkeypatch.setattr(plots, "heatmaps", lambda r, site, d, name="", vmax=None: seen.update(
        {site: vmax}) or [])
    monkeypatch.setattr(plots, "bars3d", lambda *a, **k: [])
    plots.all_figures(res, tmp_path / "figs", 1)
    top = plots.shared_ratio_max(res)
    assert set(seen) == set(res.sites) and set(seen.values()) == {top}
    ratios = [np.array(m["M"]) / np.array(m["M"]).mean(axis=1, keepdims=True)
              for layers in res.sites.values() for m in layers]
    assert top == pytest.approx(max(10.0, max(float(r.max()) for r in ratios)))


class AttnProbs:
    """Returns each layer's attention probabilities as its record (the plain forward's reference)."""

    sites = frozenset({"attn"})

    def __call__(self, site, layer, x, ctx):
        return x, x


def test_first_token_mass_is_the_attention_on_bos_over_every_counted_query(model_dir):
    """``analyze`` records, per layer and head, the attention probability on the first token (BOS)
    averaged over every query after it in every window — not a mean of batch means: 5 windows in
    batches of 2 leave a last batch of one real row and one padded row."""
    from mvjax.analysis.analyze import analyze
    from mvjax.checkpoint import load_model

    model, tok = load_model(model_dir), ByteTokenizer()
    rows = make_sequences(tok, sample_texts(), 48, 5 * 48)
    assert rows.shape == (5, 48) and (rows[:, 0] == tok.bos_id).all()
    res = analyze(model, tok, rows, sites=("q",), batch_size=2, progress=False)
    probs = model(jnp.asarray(rows), probe=AttnProbs(), logits=False).records["attn"]
    want = [np.asarray(probs[layer], np.float64)[:, :, 1:, 0].mean(axis=(0, 2))  # B×H×T×S
            for layer in range(model.cfg.num_layers)]
    got = np.asarray(res.first_token_mass)
    assert got.shape == (model.cfg.num_layers, model.cfg.num_heads)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert res.to_json()["first_token_mass"] == res.first_token_mass
    assert Analysis.from_json(res.to_json()).first_token_mass == res.first_token_mass
