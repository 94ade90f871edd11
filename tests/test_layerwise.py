"""The layer-at-a-time statistics pass: weights read from a model directory one layer at a time give
the same statistics as the whole model's forward pass, however the batches are grouped; a damaged
directory is a one-line error."""

from __future__ import annotations

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from mvjax.checkpoint import save_model
from mvjax.config import ModelConfig, PositionalConfig
from mvjax.layerwise import CheckpointWeights, ModelWeights
from mvjax.load import load_layerwise
from mvjax.model import init_model
from mvjax.analysis.analyze import analyze
from mvjax.probe import STAT_SITES, SinkMass, collect_stats

# mixed positional schemes: blocks of different structure must each compile and stay in order
CFG = ModelConfig(vocab_size=60, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2,
                  mlp_hidden=48, head_dim=8,
                  positional=(PositionalConfig(), PositionalConfig(scheme="nope"),
                              PositionalConfig(scheme="alibi")))


class Raw:
    """Returns each site's activation as its record: the whole-model reference."""

    sites = frozenset(STAT_SITES)

    def __call__(self, site, layer, x, ctx):
        return x, x


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = init_model(CFG, seed=3)
    return model, save_model(tmp_path_factory.mktemp("m") / "mixed", model)


def _batches(n: int = 6, T: int = 10):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, CFG.vocab_size, (n, T)).astype(np.int32)
    mask = np.ones(tokens.shape, bool)
    mask[4, 6:] = False  # a padded row in the last batch
    return [(tokens[i: i + 2], mask[i: i + 2]) for i in range(0, n, 2)], tokens, mask


@pytest.mark.parametrize("max_hidden_mb", [256.0, 1e-6])  # one group; one batch per group
def test_checkpoint_layers_equal_whole_forward(saved, max_hidden_mb):
    model, directory = saved
    batches, tokens, mask = _batches()
    raw = model(jnp.asarray(tokens), attention_mask_BxT=jnp.asarray(mask), probe=Raw(),
                logits=False).records
    recs = collect_stats(CheckpointWeights(directory), batches, STAT_SITES, progress=False,
                         max_hidden_mb=max_hidden_mb)
    for site in STAT_SITES:
        for layer in range(CFG.num_layers):
            x = np.asarray(raw[site][layer], np.float64)[mask]
            got = recs[site][layer]
            assert got.count == mask.sum()
            np.testing.assert_allclose(got.sumsq, (x ** 2).sum(0), rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(got.absmax, np.abs(x).max(0), rtol=1e-5, atol=1e-9)
    # the NoPE layer's rotated sites are its plain ones; the RoPE layer's are not
    np.testing.assert_array_equal(recs["q_rot"][1].sumsq, recs["q"][1].sumsq)
    assert not np.allclose(recs["q_rot"][0].sumsq, recs["q"][0].sumsq)


class RawAttn:
    """Returns each layer's attention probabilities B×H×T×S as its record."""

    sites = frozenset({"attn"})

    def __call__(self, site, layer, x, ctx):
        return x, x


@pytest.mark.parametrize("max_hidden_mb", [256.0, 1e-6])
def test_checkpoint_layers_give_the_whole_forwards_first_token_mass(saved, max_hidden_mb):
    """The sink record of the layer-at-a-time pass is the whole forward's attention on each row's
    first token, summed over the valid queries after it (row 4 is padded at its end)."""
    model, directory = saved
    batches, tokens, mask = _batches()
    probs = model(jnp.asarray(tokens), attention_mask_BxT=jnp.asarray(mask), probe=RawAttn(),
                  logits=False).records["attn"]
    recs = collect_stats(CheckpointWeights(directory), batches, ("q",), progress=False,
                         max_hidden_mb=max_hidden_mb, sink=True)
    assert set(recs) == {"q", "attn"}
    queries = mask & (np.arange(mask.shape[1]) > 0)  # every row starts with a real token
    for layer in range(CFG.num_layers):
        got = recs["attn"][layer]
        assert isinstance(got, SinkMass) and got.count == queries.sum()
        p = np.asarray(probs[layer], np.float64)[..., 0]  # B×H×T on key 0
        want = np.where(queries[:, None], p, 0).sum(axis=(0, 2))
        np.testing.assert_allclose(got.sum, want, rtol=1e-5, atol=1e-7)


def test_analyze_layer_by_layer_equals_whole_model(saved):
    """``analyze`` on a model directory read one layer at a time and on the model in memory give
    the same first-token mass (and norms), over windows whose last batch is padded."""
    model, directory = saved
    rows = np.random.default_rng(2).integers(1, CFG.vocab_size, (5, 12)).astype(np.int32)
    rows[:, 0] = 0  # a BOS-like first token
    disk = analyze(CheckpointWeights(directory), None, rows, batch_size=2, progress=False)
    mem = analyze(model, None, rows, batch_size=2, progress=False)
    assert np.shape(disk.first_token_mass) == (CFG.num_layers, CFG.num_heads)
    np.testing.assert_allclose(disk.first_token_mass, mem.first_token_mass, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(disk.sites["k"][2]["M"], mem.sites["k"][2]["M"], rtol=1e-5)
    assert 0 < np.min(disk.first_token_mass) and np.max(disk.first_token_mass) < 1


def test_checkpoint_weights_are_the_models(saved):
    model, directory = saved
    disk, mem = CheckpointWeights(directory), ModelWeights(model)
    assert disk.cfg == model.cfg
    for layer in (0, 2):
        a, b = disk.block(layer), mem.block(layer)
        np.testing.assert_array_equal(a["attn"]["q_proj"]["kernel"], b["attn"]["q_proj"]["kernel"])
        np.testing.assert_array_equal(a["mlp"]["down_proj"]["kernel"], b["mlp"]["down_proj"]["kernel"])
    tokens = [np.array([[1, 5, 59]], np.int32)]
    np.testing.assert_array_equal(disk.embed(tokens)[0], mem.embed(tokens)[0])
    weights, tok = load_layerwise(str(directory))
    assert isinstance(weights, CheckpointWeights) and tok is None


def test_embedding_rows_read_from_chunks(monkeypatch, tmp_path):
    """A table stored in row chunks is read row by row; both ways give the model's embeddings."""
    import mvjax.checkpoint

    model = init_model(CFG, seed=4)
    whole = CheckpointWeights(save_model(tmp_path / "whole", model))
    monkeypatch.setattr(mvjax.checkpoint, "CHUNK_BYTES", 1024)  # 8 rows of 32 floats per chunk
    chunked = CheckpointWeights(save_model(tmp_path / "chunked", model))
    ids = np.array([[0, 59, 7, 7], [33, 1, 2, 58]], np.int32)
    assert whole._read_rows(("embed", "embedding"), np.unique(ids)) is None
    rows = chunked._read_rows(("embed", "embedding"), np.unique(ids))
    assert rows is not None and rows.shape == (7, CFG.hidden_size)
    want = ModelWeights(model).embed([ids])[0]
    for weights in (whole, chunked):
        np.testing.assert_array_equal(weights.embed([ids, ids[:1]])[0], want)
    np.testing.assert_array_equal(chunked.block(1)["mlp"]["up_proj"]["kernel"],
                                  ModelWeights(model).block(1)["mlp"]["up_proj"]["kernel"])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax, on the error path
def test_damaged_directories_are_one_line_errors(saved, tmp_path):
    _, directory = saved
    with pytest.raises(FileNotFoundError, match="not an mvjax model directory"):
        CheckpointWeights(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    (broken / "config.json").write_text(CFG.__class__(**{**CFG.__dict__, "num_layers": 4,
                                                         "positional": PositionalConfig()}).to_json())
    with pytest.raises(ValueError, match="holds 3 layers, config.json says 4"):
        CheckpointWeights(broken)
    gone = tmp_path / "gone"
    shutil.copytree(directory, gone)
    for f in (gone / "params").rglob("*"):
        if f.is_file() and f.name != "_METADATA" and "metadata" not in f.name.lower():
            f.write_bytes(b"")
    with pytest.raises(ValueError, match="corrupt"):
        CheckpointWeights(gone).block(0)


@pytest.mark.parametrize("field,value", [("mlp_hidden", 40), ("hidden_size", 16), ("num_kv_heads", 4)])
def test_config_disagreeing_with_params_is_refused(saved, tmp_path, field, value):
    """A config.json edited after saving names the first parameter whose shape differs, in every
    loader (whole model, layer by layer, the CLI) instead of running on kernels of another shape."""
    from mvjax.checkpoint import load_model
    from mvjax.cli import main

    _, directory = saved
    edited = tmp_path / "edited"
    shutil.copytree(directory, edited)
    config = json.loads((edited / "config.json").read_text())
    assert config[field] != value
    config[field] = value
    (edited / "config.json").write_text(json.dumps(config))
    for load in (load_model, CheckpointWeights):
        with pytest.raises(ValueError, match=r"parameter \S+ is stored with shape .* config.json "
                                             r"implies .*: config.json and params/ disagree"):
            load(edited)
    assert main(["analyze", "--model", str(edited), "--seq-len", "16", "--out",
                 str(tmp_path / "out")]) == 2
