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


def _setup(num_layers: int, max_len: int):
    """(tokenizer, config, untrained model, 40 held-out contextual episodes)."""
    tok = ByteTokenizer()
    cfg = ModelConfig(vocab_size=257, hidden_size=32, num_layers=num_layers, num_heads=2,
                      mlp_hidden=64, max_seq_len=max_len, bos_id=256)
    mix = MixtureConfig(kv_pairs=2, kv_value_digits=1, passkey_digits=1, question="lead_in")
    return tok, cfg, init_model(cfg, 0), [e for e in eval_episodes(mix, 40) if e.kind == "contextual"]


def test_probe_matches_the_task_scorer():
    tok, _, model, episodes = _setup(1, 256)
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


def test_probe_logs_episode_norms_and_the_gap_at_its_steps():
    """On the inputs retrieval runs on: Q/K norms of packed episode rows at every call, the
    caller's gap only at multiples of gap_every, and the curve reads both back."""
    from mvjax.analysis.experiments.rope_cause.measure import retrieval_curve
    from mvjax.analysis.retrieval_curve import EPISODE_KEY, GAP_KEY, packed_rows, top_dim_share

    tok, cfg, model, episodes = _setup(2, 64)
    rows = packed_rows(tok, episodes, 64, 3)
    assert rows.shape == (3, 64) and rows[0, 0] == tok.bos_id
    assert packed_rows(tok, episodes[:1], 10_000, 3).shape[0] == 1  # too few tokens: one short row
    calls = []
    graphdef, params = nnx.split(model, nnx.Param)
    probe = RetrievalProbe(graphdef, tok, episodes, 64, batch_size=16, concentration_rows=3,
                           gap=lambda m: calls.append(m) or {"gap": 0.5}, gap_every=20)
    params = nnx.to_pure_dict(params)
    logs = [{"step": s, "probe": probe(params, s)} for s in (10, 20, 30, 40)]
    assert len(calls) == 2 and [GAP_KEY in r["probe"] for r in logs] == [False, True, False, True]
    M = np.asarray(logs[0]["probe"][EPISODE_KEY]["k_rot"])
    assert M.shape == (2, cfg.num_kv_heads, cfg.head_dim)
    share = top_dim_share(M)
    assert np.all((share >= 1 / cfg.head_dim - 1e-9) & (share <= 1))
    curve = retrieval_curve(logs, tokens_per_step=100)
    assert [g["step"] for g in curve["gaps"]] == [20, 40] and curve["gaps"][0]["gap"] == 0.5
    assert curve["points"][0]["episode_k_rot_top_share_max"] == float(share.max())
    assert "kv_recall" in curve["chance"] and 0 < curve["chance"]["kv_recall"] < 1
    assert curve["first_step"] is None  # an untrained model retrieves nothing
