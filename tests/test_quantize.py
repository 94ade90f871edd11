"""Round-to-nearest weight quantization: per-output-row scales, protected rows untouched, the
source model left as it was."""

from __future__ import annotations

import numpy as np
import pytest

from mvjax.analysis.experiments.quantize.run import QuantizeConfig, quantized_weights, rtn_rows
from mvjax.config import ModelConfig
from mvjax.model import init_model


def test_rtn_rows_levels_error_and_protection():
    w = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    q = rtn_rows(w, 4, keep_cols=np.array([2]))
    assert np.array_equal(q[:, 2], w[:, 2])
    for c in (0, 1, 3, 4, 5):
        scale = np.abs(w[:, c]).max() / 7
        assert np.all(np.abs(q[:, c] - w[:, c]) <= scale / 2 + 1e-6)
        assert len(np.unique(np.round(q[:, c] / scale))) <= 15
    assert np.abs(rtn_rows(w, 8) - w).max() < np.abs(rtn_rows(w, 4) - w).max()


def test_quantized_weights_copies_and_protects():
    cfg = ModelConfig(vocab_size=57, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      mlp_hidden=48, head_dim=8)
    model = init_model(cfg)
    before = np.asarray(model.layers[1].attn.k_proj.kernel[...]).copy()
    protect = {"q": np.zeros((2, 4, 8), bool), "k": np.zeros((2, 2, 8), bool)}
    protect["k"][1, 1, 5] = True  # output unit 1*8+5 of layer 1's W_k
    q = quantized_weights(model, 4, protect)
    assert np.array_equal(np.asarray(model.layers[1].attn.k_proj.kernel[...]), before)
    after = np.asarray(q.layers[1].attn.k_proj.kernel[...])
    assert np.array_equal(after[:, 13], before[:, 13])
    assert not np.array_equal(np.delete(after, 13, 1), np.delete(before, 13, 1))
    v = np.asarray(q.layers[1].attn.v_proj.kernel[...])  # only W_q / W_k are rounded
    assert np.array_equal(v, np.asarray(model.layers[1].attn.v_proj.kernel[...]))


def test_quantize_config_validation():
    with pytest.raises(ValueError, match="bits=1"):
        QuantizeConfig(bits=(1,))
    with pytest.raises(ValueError, match="granularity='row'"):
        QuantizeConfig(granularities=("row",))
    with pytest.raises(ValueError, match="side"):
        QuantizeConfig(sides=("middle",))


def test_quantize_scores_fewest_bits_first_and_a_helper_only_its_own(tmp_path):
    from mvjax.analysis.experiments.quantize.run import quantize
    from mvjax.analysis.resume import Checkpoint
    from mvjax.data.tasks import Item, Task
    from mvjax.tokenizers import ByteTokenizer

    cfg = ModelConfig(vocab_size=257, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      mlp_hidden=48, head_dim=8, max_seq_len=128, init_std=0.2)
    model = init_model(cfg)
    tasks = [Task("ctx", "contextual", (Item("key 7 is", (" 7", " x"), " 7", " 7"),))]
    config = QuantizeConfig(bits=(8, 4), granularities=("token",), sides=("post",), weight_bits=(8, 4),
                            batch_size=1)
    Checkpoint(tmp_path / "ck", "key")  # the main run, started
    helped = quantize(model, ByteTokenizer(), tasks, config, progress=False,
                      checkpoint=Checkpoint(tmp_path / "ck", "key", only=["w_int8", "w_int8_protect"]))
    assert set(helped["conditions"]) == {"w_int8", "w_int8_protect"}
    r = quantize(model, ByteTokenizer(), tasks, config, progress=False,
                 checkpoint=Checkpoint(tmp_path / "ck", "key"))
    assert list(r["conditions"]) == ["original", "act_int4_token_post", "act_int4_token_post_keep_massive",
                                     "act_int4_token_post_keep_random", "w_int4", "w_int4_protect",
                                     "w_int4_protect_random", "act_int8_token_post",
                                     "act_int8_token_post_keep_massive", "act_int8_token_post_keep_random",
                                     "w_int8", "w_int8_protect", "w_int8_protect_random"]
    assert r["dims"]["random_kept"]["q_rot"] != r["dims"]["massive_kept"]["q_rot"]
    assert r["conditions"]["w_int8"] == helped["conditions"]["w_int8"]
