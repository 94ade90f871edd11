"""The scoring engine: choice log-likelihoods equal a full forward over prompt + choice, the greedy
flag equals what ``generate`` emits (left padding, mixed lengths), and an intervention applied
through the engine edits the prompt as ``generate`` would."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvjax.analysis.evaluate import Encoded, Scorer, perplexity, score_task
from mvjax.config import ModelConfig
from mvjax.generate import generate
from mvjax.interventions import intervention, masks_from_entries
from mvjax.model import init_model

CFG = ModelConfig(vocab_size=40, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  mlp_hidden=48, head_dim=8, max_seq_len=128, init_std=0.3)


@pytest.fixture(scope="module")
def model():
    return init_model(CFG, seed=5)


def _logits(model, seq):
    """Full-recomputation logits of ``seq`` (right-padded to 16 tokens: causal, so the padding
    changes nothing before it; one compilation for every length)."""
    from flax import nnx

    g, s = nnx.split(model)
    f = _logits.__dict__.setdefault("f", jax.jit(lambda s, x: nnx.merge(g, s)(x).logits[0]))
    return f(s, jnp.asarray([list(seq) + [0] * (16 - len(seq))]))[: len(seq)]


def _items(model, rng):
    items = []
    for n in (5, 9, 3):
        prompt = tuple(int(x) for x in rng.integers(0, 40, n))
        seq = list(prompt)
        for _ in range(3):  # greedy by full recomputation
            seq.append(int(jnp.argmax(_logits(model, seq)[-1])))
        greedy = tuple(seq[n:])
        wrong = (greedy[0], greedy[1], (greedy[2] + 1) % 40)
        items.append(Encoded(prompt, (wrong, greedy, (7,)), 3, 1, 1))
    return items


def test_loglik_and_greedy_match_direct_computation(model):
    items = _items(model, np.random.default_rng(0))
    ll, hits = Scorer(model, batch_size=4).run(items)
    for e, l, h in zip(items, ll, hits):
        for j, cont in enumerate(e.conts):
            lp = jax.nn.log_softmax(_logits(model, e.prompt + cont), axis=-1)
            want = sum(float(lp[len(e.prompt) - 1 + i, t]) for i, t in enumerate(cont))
            assert abs(l[j] - want) < 1e-3 * max(1, abs(want))
        assert h[1] and not h[0]  # the model's own greedy continuation, and a one-token change
    s = score_task(items, ll, hits, 1 / 3)
    assert s["exact"]["accuracy"] == 1.0 and s["rank"]["n"] == 3


def test_intervention_through_engine_matches_generate(model):
    """prefill-only mean replacement: the engine's greedy flag agrees with generate under the
    same intervention (the prompt is edited, continuation tokens are not)."""
    masks = masks_from_entries(CFG, [(l, s, h, 3) for l in range(2) for s, H in (("q_rot", 4), ("k_rot", 2))
                                     for h in range(H)])
    probe = intervention(CFG, masks)
    rng = np.random.default_rng(1)
    items = []
    for n in (6, 4):
        prompt = tuple(int(x) for x in rng.integers(0, 40, n))
        out = generate(model, jnp.asarray([prompt]), 3, probe=probe)
        cont = tuple(int(x) for x in np.asarray(out.tokens[0, n:]))
        items.append(Encoded(prompt, (cont,), 0, None, 0))
    _, hits = Scorer(model, batch_size=2).run(items, probe)
    assert all(h[0] for h in hits)


def test_perplexity_and_sink(model):
    rows = np.random.default_rng(2).integers(0, 40, (3, 16)).astype(np.int32)
    probe = intervention(CFG, masks_from_entries(CFG, [], sites=["k_rot"]), sink=True)
    ppl, sink = perplexity(model, rows, probe)
    lp = jax.nn.log_softmax(model(jnp.asarray(rows)).logits[:, :-1], axis=-1)
    nll = -np.take_along_axis(np.asarray(lp), rows[:, 1:, None], axis=-1).mean()
    assert abs(ppl - np.exp(nll)) < 1e-3 * ppl
    assert len(sink) == CFG.num_layers and all(0 < s < 1 for s in sink)


def test_known_items_are_what_the_unmodified_model_gets_right_per_metric():
    """known_items: ranked right (choices) and answered by greedy exact match (targets), per
    metric, for every kind of task — the 'items the original gets right' reading of the claims."""
    from mvjax.analysis.experiments.disrupt.run import known_items

    ranked = Encoded((1,), ((2,), (3,)), 2, 0, None)
    targeted = Encoded((1,), ((4,),), 0, None, 0)
    items = [ranked, ranked, targeted, targeted]
    ll = [[-1.0, -2.0], [-3.0, -2.0], [-1.0], [-1.0]]
    hits = [[False, False], [False, False], [True], [False]]
    assert known_items(items, ll, hits) == {"rank": [0], "exact": [2]}


def test_per_token_ranking_undoes_the_short_choice_bias():
    """A two-token right answer with a higher per-token log-likelihood loses by the sum and wins
    per token; both readings are returned, ``rank`` is the chosen one."""
    item = Encoded((1,), ((2, 3), (4,)), 2, 0, 0)
    ll, hits = [[-3.0, -2.0]], [[False, False]]
    s = score_task([item], ll, hits, 0.5, ranking="per_token", exact_chance=0.25)
    assert s["rank_sum"]["correct"] == 0 and s["rank_per_token"]["correct"] == 1
    assert s["rank"] == s["rank_per_token"] and s["exact"]["chance"] == 0.25
