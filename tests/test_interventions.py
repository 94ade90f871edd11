"""Interventions edit exactly the entries they name (checked on captured activations), keep
position 0 when asked, follow the KV-cache rule at decode, and leave the model bit-identical when
they name nothing."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mvjax.config import ModelConfig
from mvjax.generate import generate
from mvjax.interventions import (Intervention, QuantSpec, empty_masks, intervention,
                                 masks_from_entries)
from mvjax.model import KVCache, init_model

CFG = ModelConfig(vocab_size=50, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2,
                  mlp_hidden=48, head_dim=8, max_seq_len=64)


@dataclasses.dataclass(frozen=True)
class Watch:
    """Runs ``inner`` and records (activation before, activation after) at every site."""

    inner: Intervention

    @property
    def sites(self):
        return self.inner.sites

    def __call__(self, site, layer, x, ctx):
        y, _ = self.inner(site, layer, x, ctx)
        return y, (x, y)


@pytest.fixture(scope="module")
def setup():
    model = init_model(CFG, seed=3)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, CFG.vocab_size, (3, 10)), jnp.int32)
    mask = np.ones((3, 10), bool)
    mask[2, 7:] = False
    return model, tokens, jnp.asarray(mask)


ENTRIES = [(1, "k_rot", 1, 5), (1, "k_rot", 0, 2), (2, "q_rot", 3, 7)]


def _watch(model, tokens, mask, inter):
    return model(tokens, attention_mask_BxT=mask, probe=Watch(inter)).records


def test_empty_intervention_is_bit_identical(setup):
    model, tokens, mask = setup
    plain = model(tokens, attention_mask_BxT=mask)
    for method, quant in (("mean", None), ("zero", None), ("quant", QuantSpec(4, "channel"))):
        inter = intervention(CFG, empty_masks(CFG, ["q", "k", "q_rot", "k_rot"]), method, quant=quant)
        out = model(tokens, attention_mask_BxT=mask, probe=inter)
        assert np.array_equal(np.asarray(plain.logits), np.asarray(out.logits))
    # also as a traced (dynamic) argument of a jitted forward
    g, s = nnx.split(model)
    f = jax.jit(lambda s, p: nnx.merge(g, s)(tokens, attention_mask_BxT=mask, probe=p).logits)
    inter = intervention(CFG, empty_masks(CFG, ["q_rot", "k_rot"]))
    assert np.array_equal(np.asarray(f(s, None)), np.asarray(f(s, inter)))


def test_mean_replacement_changes_exactly_the_named_entries(setup):
    model, tokens, mask = setup
    inter = intervention(CFG, masks_from_entries(CFG, ENTRIES))
    rec = _watch(model, tokens, mask, inter)
    valid = np.asarray(mask)
    for site in ("q_rot", "k_rot"):
        for layer in range(CFG.num_layers):
            before, after = (np.asarray(a) for a in rec[site][layer])
            named = {(h, d) for l, s, h, d in ENTRIES if s == site and l == layer}
            changed = before != after
            want = np.zeros(changed.shape, bool)
            for h, d in named:
                want[:, :, h, d] = valid
                mean = (before[:, :, h, d] * valid).sum(1) / valid.sum(1)
                np.testing.assert_allclose(after[:, :, h, d][valid],
                                           np.broadcast_to(mean[:, None], valid.shape)[valid], rtol=1e-5)
            # every named entry on a valid token moved (they are not already at their mean) …
            assert np.array_equal(changed, want), (site, layer)


def test_earlier_layers_and_other_sites_untouched(setup):
    model, tokens, mask = setup
    plain = model(tokens, attention_mask_BxT=mask, probe=Watch(intervention(CFG, empty_masks(
        CFG, ["q", "k", "q_rot", "k_rot"])))).records
    inter = intervention(CFG, masks_from_entries(CFG, ENTRIES, sites=["q", "k"]))
    rec = _watch(model, tokens, mask, inter)
    for site in ("q", "k", "q_rot", "k_rot"):  # layer 0 is before any edit: all equal plain
        assert np.array_equal(np.asarray(rec[site][0][1]), np.asarray(plain[site][0][1]))
    for layer in range(CFG.num_layers):  # pre-RoPE sites are not named: never edited
        b, a = rec["k"][layer]
        assert np.array_equal(np.asarray(b), np.asarray(a))


def test_zero_and_keep_first(setup):
    model, tokens, mask = setup
    inter = intervention(CFG, masks_from_entries(CFG, ENTRIES), "zero", keep_first=True)
    rec = _watch(model, tokens, mask, inter)
    before, after = (np.asarray(a) for a in rec["k_rot"][1])
    assert np.array_equal(after[:, 0], before[:, 0])  # position 0 untouched
    assert before[:, 0, 1, 5].any()
    valid = np.asarray(mask)
    assert np.all(after[:, 1:, 1, 5][valid[:, 1:]] == 0)
    other = np.ones(before.shape, bool)
    other[:, :, 1, 5] = other[:, :, 0, 2] = False
    assert np.array_equal(after[other], before[other])


def test_keep_first_uses_positions_not_slots(setup):
    """With left padding the first real token (position 0) is kept, whatever its slot."""
    model, tokens, _ = setup
    mask = jnp.asarray(np.arange(10)[None].repeat(3, 0) >= 2)
    pos = jnp.asarray(np.arange(10)[None].repeat(3, 0) - 2, jnp.int32)
    inter = intervention(CFG, masks_from_entries(CFG, ENTRIES), "zero", keep_first=True)
    rec = model(tokens, pos, attention_mask_BxT=mask, probe=Watch(inter)).records
    before, after = (np.asarray(a) for a in rec["k_rot"][1])
    assert np.array_equal(after[:, 2], before[:, 2]) and np.all(after[:, 3:, 1, 5] == 0)


def test_fake_quantization_protects_unnamed_entries(setup):
    model, tokens, mask = setup
    masks = {"k_rot": np.ones((CFG.num_layers, CFG.num_kv_heads, CFG.head_dim), bool)}
    masks["k_rot"][:, 0, 3] = False  # kept in full precision
    spec = QuantSpec(4, "token")
    rec = _watch(model, tokens, mask, intervention(CFG, masks, "quant", quant=spec))
    before, after = (np.asarray(a, np.float64) for a in rec["k_rot"][1])
    valid = np.asarray(mask)
    assert np.array_equal(after[:, :, 0, 3], before[:, :, 0, 3])
    sel = masks["k_rot"][1][None, None] & valid[:, :, None, None]
    scale = np.where(sel, np.abs(before), 0).max(-1, keepdims=True) / spec.qmax
    err = np.abs(after - before)
    assert np.all(err[sel] <= (np.broadcast_to(scale, err.shape)[sel] / 2) * (1 + 1e-5))
    levels = after / np.where(scale > 0, scale, 1)
    np.testing.assert_allclose(levels[sel], np.round(levels[sel]), atol=1e-3)
    assert (err[sel] > 0).any()


def test_kv_cache_rule_prefill_only_vs_all(setup):
    model, tokens, _ = setup
    prompt, nxt = tokens[:, :6], tokens[:, 6:7]
    masks = masks_from_entries(CFG, [(l, "k_rot", 0, 1) for l in range(3)] + [(1, "q_rot", 2, 4)])
    pre = intervention(CFG, masks, phases="prefill")
    both = intervention(CFG, masks, phases="all")
    cache0 = KVCache.empty(CFG, 3, 8)
    plain = model(prompt, cache=cache0)
    outs = {n: model(prompt, cache=cache0, probe=p) for n, p in (("pre", pre), ("all", both))}
    # prefill is the same rule for both: the prompt's keys are edited when written
    for l in range(3):
        k = np.asarray(outs["pre"].cache.k[l])
        assert np.array_equal(k, np.asarray(outs["all"].cache.k[l]))
        np.testing.assert_allclose(k[:, :6, 0, 1], np.broadcast_to(k[:, :6, 0, 1].mean(1, keepdims=True),
                                                                   (3, 6)), rtol=1e-5, atol=1e-6)
        assert not np.array_equal(k[:, :6, 0, 1], np.asarray(plain.cache.k[l])[:, :6, 0, 1])
    # prefill-only: a decode step equals the plain model on the same (edited) cache
    cache = outs["pre"].cache
    dec_pre = model(nxt, cache=cache, probe=pre, phase="decode", probe_state=outs["pre"].records)
    dec_plain = model(nxt, cache=cache, phase="decode")
    assert np.array_equal(np.asarray(dec_pre.logits), np.asarray(dec_plain.logits))
    # prefill+decode: the new key gets the prompt's mean; cached prompt keys are not edited again
    dec_all = model(nxt, cache=outs["all"].cache, probe=both, phase="decode",
                    probe_state=outs["all"].records)
    for l in range(3):
        k = np.asarray(dec_all.cache.k[l])
        mean = np.asarray(outs["all"].records["k_rot"][l])[:, 0, 1]
        np.testing.assert_allclose(k[:, 6, 0, 1], mean, rtol=1e-6)
        assert np.array_equal(k[:, :6], np.asarray(outs["all"].cache.k[l])[:, :6])
    assert not np.array_equal(np.asarray(dec_all.logits), np.asarray(dec_pre.logits))
    # generate applies the same rule end to end
    g_pre = generate(model, prompt, 3, probe=pre, return_logits=True)
    g_all = generate(model, prompt, 3, probe=both, return_logits=True)
    np.testing.assert_array_equal(np.asarray(g_pre.logits[:, 0]), np.asarray(g_all.logits[:, 0]))
    assert not np.allclose(np.asarray(g_pre.logits[:, 1]), np.asarray(g_all.logits[:, 1]))


def test_hashable_by_content():
    a = intervention(CFG, masks_from_entries(CFG, ENTRIES))
    b = intervention(CFG, masks_from_entries(CFG, list(reversed(ENTRIES))))
    c = intervention(CFG, masks_from_entries(CFG, ENTRIES[:2]))
    assert a == b and hash(a) == hash(b) and a != c
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.method = "zero"


@pytest.mark.parametrize("call, msg", [
    (lambda: masks_from_entries(CFG, [(0, "v", 0, 0)]), "unknown site"),
    (lambda: masks_from_entries(CFG, [(0, "k", 0, 8)]), "dim 8 is out of range"),
    (lambda: masks_from_entries(CFG, [(0, "k", 2, 0)]), "head 2 is out of range"),
    (lambda: masks_from_entries(CFG, [(3, "q", 0, 0)]), "layer 3 is out of range"),
    (lambda: intervention(CFG, {"k": np.zeros((3, 4, 8), bool)}), "expected layers×heads×dims"),
    (lambda: intervention(CFG, empty_masks(CFG, ["k"]), "scramble"), "method='scramble'"),
    (lambda: intervention(CFG, empty_masks(CFG, ["k"]), "quant"), "QuantSpec"),
    (lambda: QuantSpec(1), "bits=1"),
    (lambda: QuantSpec(8, "row"), "granularity='row'"),
])
def test_bad_inputs_one_line_errors(call, msg):
    with pytest.raises(ValueError, match=msg) as e:
        call()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("granularity", ["tensor", "token", "channel"])
def test_traced_granularity_equals_the_static_one(granularity):
    """Quantization probes carry their granularity as a traced index (all granularities share
    one compilation); the result equals the static-granularity function, prompt scale included."""
    from mvjax.interventions import GRANULARITIES, fake_quantize, fake_quantize_traced

    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(2, 5, 3, 8)) * rng.uniform(0.1, 20, size=(1, 1, 3, 8)), jnp.float32)
    sel = jnp.asarray(rng.random((2, 5, 3, 8)) < 0.8)
    want, want_scale = fake_quantize(x, sel, granularity, 7.0)
    got, scale = fake_quantize_traced(x, sel, jnp.int32(GRANULARITIES.index(granularity)), 7.0)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
    later = x[:, :2] * 1.5  # decode: tensor / channel reuse the prompt's scale, token is fresh
    want2, _ = fake_quantize(later, sel[:, :2], granularity, 7.0, want_scale)
    got2, _ = fake_quantize_traced(later, sel[:, :2], jnp.int32(GRANULARITIES.index(granularity)), 7.0, scale)
    np.testing.assert_allclose(np.asarray(got2), np.asarray(want2), rtol=1e-6, atol=1e-6)
