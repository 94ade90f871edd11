"""The pair-aware control draw keeps its promises: it never draws a selected dim, its RoPE partner
or a marked dim; it shares units between Q and K exactly where the edit does; it keeps the edit's
dim count; and the dims a run records re-create the condition's numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mvjax.analysis.controls import (excluded_dims, masks_from_entries, model_pairs, pair_aware_random,
                               units_of)
from mvjax.analysis.experiments.disrupt.run import DisruptConfig, disrupt
from mvjax.analysis.dims import select_massive
from mvjax.analysis.evaluate import Scorer, encode_task, longest_continuation, score_task
from mvjax.config import ModelConfig, PositionalConfig
from mvjax.data.tasks import Item, Task
from mvjax.interventions import intervention
from mvjax.model import init_model
from mvjax.positional import pair_index
from mvjax.tokenizers import ByteTokenizer


def _draw_inputs(seed: int, L=3, H=4, G=2, D=16, rotary=16):
    """Selections that share units between Q and K in some heads, plus marked dims."""
    rng = np.random.default_rng(seed)
    pairs = [pair_index(D, rotary, "half")] * L
    M_q, M_k = rng.gamma(1.0, 1.0, (L, H, D)), rng.gamma(1.0, 1.0, (L, G, D))
    M_k[:, :, 7] += 20  # K's massive dim
    M_q[:, ::2, 7] += 20  # the same dim in half the Q heads: a shared pair there
    M_q[:, 1::2, 7 + D // 2 if 7 + D // 2 < rotary else 7] += 20  # its partner in the others
    sel_q, sel_k = select_massive(M_q, "topk", 1), select_massive(M_k, "topk", 1)
    marked_q, marked_k = np.zeros_like(sel_q), np.zeros_like(sel_k)
    marked_q[:, :, 2] = marked_k[:, :, 3] = True  # dims the λ rule marks elsewhere
    return sel_q, sel_k, marked_q, marked_k, pairs


def _shared(mask_q, mask_k, pairs, l, h, g) -> set[int]:
    units, unit_of = units_of(pairs[l])
    return {int(unit_of[d]) for d in np.flatnonzero(mask_q[l, h])} & \
        {int(unit_of[d]) for d in np.flatnonzero(mask_k[l, g])}


@pytest.mark.parametrize("rotary", [16, 4])  # full RoPE; partial (12 dims drawn singly)
@pytest.mark.parametrize("seed", range(6))
def test_pair_aware_draw_avoids_selected_pairs_and_marked_dims(seed, rotary):
    sel_q, sel_k, mq, mk, _ = _draw_inputs(seed)
    pairs = [pair_index(16, rotary, "half")] * 3
    rq, rk = pair_aware_random(sel_q, sel_k, mq, mk, pairs, seed)
    G = sel_k.shape[1]
    for site_sel, site_rand, marked, _other_sel in ((sel_q, rq, mq, sel_k), (sel_k, rk, mk, sel_q)):
        assert (site_rand.sum(-1) == site_sel.sum(-1)).all()  # the edit's count per head
        assert not (site_rand & excluded_dims(site_sel, marked, pairs)).any()
    for l, h in np.ndindex(3, 4):  # nor the other site's selected units in the same group
        g = h // (4 // G)
        units, unit_of = units_of(pairs[l])
        edit_units = {int(unit_of[d]) for d in np.flatnonzero(sel_q[l, h])} | \
            {int(unit_of[d]) for d in np.flatnonzero(sel_k[l, g])}
        assert not edit_units & {int(unit_of[d]) for d in np.flatnonzero(rq[l, h])}
        assert not edit_units & {int(unit_of[d]) for d in np.flatnonzero(rk[l, g])}


@pytest.mark.parametrize("seed", range(6))
def test_q_and_k_share_a_drawn_pair_exactly_where_the_edit_does(seed):
    sel_q, sel_k, mq, mk, pairs = _draw_inputs(seed)
    rq, rk = pair_aware_random(sel_q, sel_k, mq, mk, pairs, seed)
    for l, h in np.ndindex(3, 4):
        g = h // 2
        edit = _shared(sel_q, sel_k, pairs, l, h, g)
        control = _shared(rq, rk, pairs, l, h, g)
        assert len(control) == len(edit)
        if edit:  # and the members relate as the edit's do: same dim iff the edit's is the same
            same_edit = bool((sel_q[l, h] & sel_k[l, g]).any())
            assert bool((rq[l, h] & rk[l, g]).any()) == same_edit


def test_the_draw_is_seeded_and_varies_with_the_seed():
    sel_q, sel_k, mq, mk, pairs = _draw_inputs(0)
    a = pair_aware_random(sel_q, sel_k, mq, mk, pairs, 3)
    b = pair_aware_random(sel_q, sel_k, mq, mk, pairs, 3)
    c = pair_aware_random(sel_q, sel_k, mq, mk, pairs, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_units_pair_rotated_dims_and_keep_unrotated_ones_single():
    units, unit_of = units_of(pair_index(8, 4, "half"))
    assert units == [(0, 2), (1, 3), (4,), (5,), (6,), (7,)]
    units, _ = units_of(pair_index(4, 4, "interleaved"))
    assert units == [(0, 1), (2, 3)]
    units, _ = units_of([None] * 3)  # NoPE / ALiBi
    assert units == [(0,), (1,), (2,)]


CFG = ModelConfig(vocab_size=257, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  mlp_hidden=48, head_dim=8, max_seq_len=128, init_std=0.2)
TASKS = [Task("ctx", "contextual", tuple(Item(f"key {i}{i} is", (f" {i}", " x"), f" {i}", f" {i}")
                                         for i in range(4))),
         Task("par", "parametric", (Item("sky is", (" blue", " red"), " blue"),))]


@pytest.mark.parametrize("positional", [PositionalConfig(), PositionalConfig(scheme="nope")])
def test_recorded_control_dims_recreate_the_condition(positional):
    model = init_model(dataclasses.replace(CFG, positional=positional), seed=0)
    config = DisruptConfig(seeds=(0, 1), energy_seeds=(0,), ablations=False, batch_size=4)
    r = disrupt(model, ByteTokenizer(), TASKS, config, progress=False)
    draws = r["dims"]["control_draws"]
    assert draws["random_s1"]["draw"] == "pair-aware" and draws["random_s1"]["seed"] == 1
    assert set(draws) == {"lowest_norm", "random_s0", "random_s1", "energy_matched_s0"}
    encoded = {t.name: encode_task(ByteTokenizer(), t) for t in TASKS}
    scorer = Scorer(model, 4, longest_continuation(encoded))
    pairs = model_pairs(model.cfg)
    for name, drawn in draws.items():
        masks = {s: masks_from_entries(drawn["dims"][s], (CFG.num_layers, n, CFG.head_dim))
                 for s, n in (("q_rot", CFG.num_heads), ("k_rot", CFG.num_kv_heads))}
        assert drawn["n_dims"] == {s: int(m.sum()) for s, m in masks.items()}
        share = np.asarray(drawn["head_energy_share"]["k_rot"])
        assert share.shape == (CFG.num_layers, CFG.num_kv_heads) and (0 <= share).all() and (share <= 1).all()
        if name.startswith("random"):
            assert not (masks["k_rot"] & excluded_dims(
                masks_from_entries(r["dims"]["massive_dims"]["k_rot"], masks["k_rot"].shape),
                np.zeros_like(masks["k_rot"]), pairs)).any()
        probe = intervention(model.cfg, masks, "mean")
        for t in TASKS:
            ll, hits = scorer.run(encoded[t.name], probe)
            again = score_task(encoded[t.name], ll, hits, t.rank_chance, exact_chance=t.exact_chance)
            recorded = r["conditions"][name]["tasks"][t.name]
            assert {m: again[m]["correct"] for m in again} == {m: recorded[m]["correct"] for m in recorded}


def test_per_prompt_statistics_say_their_random_draw_is_uniform():
    """The per-prompt protocol draws its random dims inside the forward, uniformly per head
    (mvjax.prompt_selection): its config must say so, never claim the pair-aware draw."""
    assert DisruptConfig(statistics="prompt").control_draw == "uniform"
    assert DisruptConfig().control_draw == "pair-aware"
    with pytest.raises(ValueError, match="statistics='pooled'"):
        DisruptConfig(statistics="prompt", control_draw="pair-aware")
