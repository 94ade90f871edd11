"""Per-prompt selection (the authors' protocol): each batch row edits the dims its own statistics
pick — identical to a fixed-mask edit built from that row alone — and every condition (rule, k,
layers, Q/K, first token) is a traced value that reuses one compilation."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvjax.analysis.dims import lowest_norm, select_massive
from mvjax.config import ModelConfig
from mvjax.interventions import intervention
from mvjax.model import init_model
from mvjax.prompt_selection import energy_matched_rows, prompt_selected, random_scores, ranks

CFG = ModelConfig(vocab_size=50, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2,
                  mlp_hidden=48, head_dim=8, max_seq_len=64)
SITES = ("q_rot", "k_rot")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Capture:
    """Records the unedited activations at the Q/K sites (a pytree without leaves)."""

    sites: frozenset = dataclasses.field(default=frozenset(SITES), metadata=dict(static=True))

    def __call__(self, site, layer, x, ctx):
        return x, x


class Jitted:
    """The model's forward, jitted with the probe as a traced argument (fast eager-free tests)."""

    def __init__(self, model):
        from flax import nnx

        graphdef, self.state = nnx.split(model)
        self.fn = jax.jit(lambda st, t, m, p: nnx.merge(graphdef, st)(t, attention_mask_BxT=m, probe=p))

    def __call__(self, tokens, attention_mask_BxT, probe=None):
        return self.fn(self.state, tokens, attention_mask_BxT, probe)


@pytest.fixture(scope="module")
def setup():
    model = Jitted(init_model(CFG, seed=5))
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, CFG.vocab_size, (3, 12)), jnp.int32)
    mask = np.ones((3, 12), bool)
    mask[1, 9:] = False
    return model, tokens, jnp.asarray(mask)


def _row_stats(x_TxHxD):
    x = np.asarray(x_TxHxD, np.float64)
    return np.sqrt((x ** 2).sum(0)), ((x - x.mean(0)) ** 2).sum(0)


def _row_masks(model, tokens, mask, row, rule, k=1, seed=0):
    """Fixed masks built on the host from one row's own statistics (the reference)."""
    recs = model(tokens[row:row + 1], attention_mask_BxT=mask[row:row + 1], probe=Capture()).records
    n = int(mask[row].sum())
    out = {}
    for _i, s in enumerate(SITES):
        stats = [_row_stats(recs[s][l][0, :n]) for l in range(CFG.num_layers)]
        M, E = np.stack([a for a, _ in stats]), np.stack([b for _, b in stats])
        sel = select_massive(M, "topk", k)
        out[s] = {"massive": sel, "lowest": lowest_norm(M, sel)}.get(rule)
        if rule == "energy":
            out[s] = (M, E, sel)
    return out


@pytest.mark.parametrize("rule,k", [("massive", 1), ("massive", 2), ("lowest", 2)])
def test_each_row_edits_its_own_dims(setup, rule, k):
    model, tokens, mask = setup
    probe = prompt_selected(CFG, SITES, rule, top_k=k)
    got = model(tokens, attention_mask_BxT=mask, probe=probe).logits
    for row in range(3):
        fixed = intervention(CFG, _row_masks(model, tokens, mask, row, rule, k))
        want = model(tokens[row:row + 1], attention_mask_BxT=mask[row:row + 1], probe=fixed).logits
        v = np.asarray(mask[row])
        np.testing.assert_allclose(np.asarray(got[row])[v], np.asarray(want[0])[v], atol=2e-5)
    plain = model(tokens, attention_mask_BxT=mask).logits
    assert np.abs(np.asarray(plain) - np.asarray(got)).max() > 1e-5  # it edits something


def test_rows_differ_from_one_pooled_selection(setup):
    """A batch of three prompts: the per-prompt edit of row 0 equals row 0 edited alone, whatever
    the other rows are (no statistics leak across rows)."""
    model, tokens, mask = setup
    probe = prompt_selected(CFG, SITES, "massive")
    a = model(tokens, attention_mask_BxT=mask, probe=probe).logits[0]
    other = tokens.at[1:].set((tokens[1:] * 7 + 3) % CFG.vocab_size)
    b = model(other, attention_mask_BxT=mask, probe=probe).logits[0]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_random_control_avoids_massive_and_counts_match():
    M = jnp.asarray(np.random.default_rng(0).random((2, 3, 8)))
    massive = ranks(M) < 2
    score = jnp.asarray(np.random.default_rng(1).random((3, 8)))
    rnd = ranks(jnp.where(massive, -jnp.inf, score[None])) < 2
    assert not bool(jnp.any(rnd & massive))
    assert np.all(np.asarray(rnd.sum(-1)) == 2)


def test_energy_matched_rows_agree_with_the_host_version():
    rng = np.random.default_rng(2)
    E = rng.random((1, 5, 16)) ** 3
    sel = select_massive(np.sqrt(E), "topk", 1)
    score = rng.random((5, 16))
    got = np.asarray(energy_matched_rows(jnp.asarray(E), jnp.asarray(sel), jnp.asarray(score)))
    ratio = (E * got).sum(-1) / (E * sel).sum(-1)
    assert not np.any(got & sel)
    assert np.all(got.sum(-1) >= 1)
    # same greedy as analysis.dims.energy_matched, given the same visiting order
    for h in range(5):
        order = np.argsort(-np.where(sel[0, h], -np.inf, score[h]), kind="stable")
        target, total, taken = (E[0, h] * sel[0, h]).sum(), 0.0, []
        for d in order:
            if sel[0, h, d] or total >= 0.95 * target:
                continue
            if total + E[0, h, d] <= 1.05 * target:
                taken.append(d)
                total += E[0, h, d]
        if taken:
            assert sorted(np.flatnonzero(got[0, h])) == sorted(taken)
            assert 0 < ratio[0, h] <= 1.05 + 1e-9


def test_conditions_share_one_compilation(setup):
    from flax import nnx

    graphdef, state = nnx.split(init_model(CFG, seed=5))
    _, tokens, mask = setup
    traces = []

    @jax.jit
    def run(state, probe):
        traces.append(1)
        return nnx.merge(graphdef, state)(tokens, attention_mask_BxT=mask, probe=probe).logits

    outs = [run(state, prompt_selected(CFG, SITES, rule, top_k=k, layers=layers, edit=edit,
                                       keep_first=kf, seed=seed))
            for rule, k, layers, edit, kf, seed in [("massive", 1, None, (True, True), False, 0),
                                                    ("lowest", 2, (0,), (True, False), True, 1),
                                                    ("random", 4, (1, 2), (False, True), False, 2),
                                                    ("energy", 1, None, (True, True), False, 3)]]
    assert len(traces) == 1
    assert len({np.asarray(o).tobytes() for o in outs}) == 4


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="rule"):
        prompt_selected(CFG, SITES, "biggest")
    with pytest.raises(ValueError, match="top-k"):
        prompt_selected(CFG, SITES, "massive", top_k=9)
    assert random_scores(CFG, SITES, 0)["q_rot"].shape == (3, 4, 8)
