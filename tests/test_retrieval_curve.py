"""The held-out retrieval probe logged during training agrees with the task scorer, and a preset's
training run logs it at every eval step."""

from __future__ import annotations


import numpy as np
from flax import nnx

from mvjax.analysis.retrieval_curve import RetrievalProbe, first_step_at
from mvjax.analysis.task_accuracy import score
from mvjax.config import ModelConfig
from mvjax.data.mixture import MixtureConfig, eval_episodes
from mvjax.model import init_model
from mvjax.tokenizers import ByteTokenizer


def test_probe_matches_the_task_scorer():
    tok = ByteTokenizer()
    cfg = ModelConfig(vocab_size=257, hidden_size=32, num_layers=1, num_heads=2, mlp_hidden=64,
                      max_seq_len=256, bos_id=256)
    model = init_model(cfg, 0)
    mix = MixtureConfig(kv_pairs=2, kv_value_digits=1, passkey_digits=1, question="lead_in")
    episodes = [e for e in eval_episodes(mix, 40) if e.kind == "contextual"]
    graphdef, params = nnx.split(model, nnx.Param)
    out = RetrievalProbe(graphdef, tok, episodes, 256, batch_size=16)(nnx.to_pure_dict(params))
    ref = score(model, tok, episodes)
    for task in ("passkey", "kv_recall"):
        assert out[task]["n"] == ref["tasks"][task]["n"]
        assert out[task]["exact"] == ref["tasks"][task]["accuracy"]
        assert np.isclose(out[task]["answer_nll"], np.log(257), rtol=0.2)  # untrained: near uniform
    assert out["all"]["n"] == len(episodes)


def test_first_step_at():
    curve = [{"step": 100, "x": 0.1}, {"step": 200, "x": 0.85}, {"step": 300, "x": 0.7}]
    assert first_step_at(curve, "x", 0.8) == 200 and first_step_at(curve, "x", 0.9) is None
