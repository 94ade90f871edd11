"""The confounds run: length-matched families land in their bins (counted by the tokenizer), the
key depth is recorded and binned, every main condition has its position-0-kept twin, results carry
prompt-length ranges, the quantize keep-random control keeps k other dims, and the pre-registered
rules give known verdicts on synthetic results (and match RULES.md word for word)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mvjax.analysis.claims import FAILS, HOLDS, NOT_TESTED
from mvjax.analysis.experiments.disrupt.confound_claims import confound_rules
from mvjax.analysis.experiments.disrupt.run import KEEP0, DisruptConfig, disrupt, plan_conditions
from mvjax.analysis.experiments.quantize.run import QuantizeConfig, activation_conditions, random_kept
from mvjax.analysis.records import ScoredRun
from mvjax.config import ModelConfig
from mvjax.data.tasks import Item, Task, accuracy_summary
from mvjax.data.tasks.lengths import (
    bin_range,
    confound_tasks,
    depth_bin,
    length_bin,
    passkey_binned,
)
from mvjax.model import init_model
from mvjax.tokenizers import ByteTokenizer

TOK = ByteTokenizer()
COUNT = lambda s: len(TOK.encode(s))
BYTE_BINS = (128, 512, 1024)  # a byte per token: every family's first-bin question fits 128
RULES_MD = Path(__file__).resolve().parents[1] / "docs/disrupt-smollm2-confounds/RULES.md"


def test_families_land_in_their_bins_by_the_tokenizer():
    tasks = confound_tasks(COUNT, 5, bins=BYTE_BINS)
    names = {t.name for t in tasks}
    assert {"facts_L128", "world_L128", "arithmetic_L128", "passkey_L512", "kv_recall_L1024",
            "facts_L1024"} <= names and "passkey_L128" not in names
    for t in tasks:
        lo, hi = bin_range(int(t.name.rsplit("_L", 1)[1]), BYTE_BINS)
        n = [COUNT(it.prompt) + 1 for it in t.items]
        assert lo < min(n) and max(n) <= hi, (t.name, min(n), max(n))
    by = {t.name: t for t in tasks}  # the same questions at every length, after filler
    assert all(b.prompt.endswith(a.prompt) for a, b in zip(by["facts_L128"].items, by["facts_L1024"].items))


def test_bins_refuse_what_misses_them():
    with pytest.raises(ValueError, match=r"misses the bin \(0, 32\]"):
        confound_tasks(COUNT, 2, bins=(32, 128))  # a byte per token: questions exceed 32
    with pytest.raises(ValueError, match="add a bin edge"):
        length_bin(2000)
    assert length_bin(32) == 32 and length_bin(33) == 128


def test_passkey_depth_is_recorded_and_binned():
    t = passkey_binned(9, 512, COUNT)
    assert t.depths[0] == 0.0 and t.depths[-1] == 1.0 and list(t.depths) == sorted(t.depths)
    for it, d in zip(t.items, t.depths):  # the depth is where the key really sits in the filler
        key = it.answer.strip()
        before = it.prompt[:it.prompt.index(f"The pass key is {key}")].count("The grass is green")
        total = it.prompt.count("The grass is green")
        assert before / total == pytest.approx(d)
    assert [depth_bin(x) for x in (0.0, 0.24, 0.25, 0.74, 1.0)] == \
        ["0.00-0.25", "0.00-0.25", "0.25-0.50", "0.50-0.75", "0.75-1.00"]
    with pytest.raises(ValueError, match="outside"):
        depth_bin(1.5)


def test_every_main_condition_has_its_position0_twin():
    config = DisruptConfig(seeds=tuple(range(10)), energy_seeds=(0, 1, 2), position0=True, ablations=True)
    conds = {c.name: c for c in plan_conditions(config, (0,), 3, "t")}
    main = ["massive", "lowest_norm", *(f"random_s{s}" for s in range(10)),
            *(f"energy_matched_s{s}" for s in range(3))]
    for name in main:
        twin = conds[KEEP0 + name]
        assert not conds[name].keep_first and twin.keep_first
        assert (twin.rule, twin.seed, twin.group) == (conds[name].rule, conds[name].seed, conds[name].group)
    assert "first_token_kept" not in conds  # it is keep0_massive


CFG = ModelConfig(vocab_size=257, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  mlp_hidden=48, head_dim=8, max_seq_len=1024, init_std=0.2)


@pytest.mark.slow
def test_results_record_prompt_lengths_and_depths():
    pk = passkey_binned(4, 512, COUNT)
    tasks = [pk, Task("par", "parametric", (Item("sky is", (" blue", " red"), " blue", " blue"),))]
    config = DisruptConfig(seeds=(0,), energy_seeds=(), position0=True, ablations=False, batch_size=4)
    r = disrupt(init_model(CFG, seed=0), TOK, tasks, config, progress=False)
    rec = r["tasks"]["passkey_L512"]
    n = [COUNT(it.prompt) + 1 for it in pk.items]  # ByteTokenizer adds BOS
    assert (rec["min_prompt_tokens"], rec["max_prompt_tokens"]) == (min(n), max(n))
    assert rec["key_depth"] == [round(d, 4) for d in pk.depths] and rec["key_depth_bin"][-1] == "0.75-1.00"
    assert r["tasks"]["par"]["max_prompt_tokens"] == COUNT("sky is") + 1 and "key_depth" not in r["tasks"]["par"]
    assert r["conditions"]["keep0_random_s0"]["keep_first"] and not r["conditions"]["random_s0"]["keep_first"]


def test_keep_random_keeps_k_other_dims():
    rng = np.random.default_rng(0)
    massive = {s: np.zeros((3, 4, 8), bool) for s in ("q", "k", "q_rot", "k_rot")}
    for m in massive.values():
        for l, h in np.ndindex(3, 4):
            m[l, h, rng.choice(8, 1 + (l + h) % 2, replace=False)] = True
    rnd = random_kept(massive, 0)
    for s, m in massive.items():
        assert (rnd[s].sum(-1) == m.sum(-1)).all()  # the same k in every head
        assert not (rnd[s] & m).any()  # never a massive dim
    assert not all((random_kept(massive, 1)[s] == rnd[s]).all() for s in massive)  # a seeded draw
    config = QuantizeConfig(bits=(4,), granularities=("token",), sides=("post",))
    names = [n for n, *_ in activation_conditions(config, 4)]
    assert names == ["act_int4_token_post", "act_int4_token_post_keep_massive", "act_int4_token_post_keep_random"]


# --- the rules on synthetic results --------------------------------------------------------------

def _result(ctx_kept: float, par_kept: float, seeds_acc: float, keep0_gain: float = 0.0,
            n: int = 40, bins=(32, 128)) -> dict:
    """Contextual and parametric tasks in each bin, n items, the original right on every item;
    the massive edit keeps ``ctx_kept`` / ``par_kept`` of them, random seeds ``seeds_acc``, and
    position 0 kept gives back ``keep0_gain`` of the contextual items."""
    def hits(share: float, offset: int = 0) -> str:
        k = round(share * n)
        return "".join("1" if (i + offset) % n < k else "0" for i in range(n))

    tasks, conds = {}, {c: {"tasks": {}} for c in ("original", "massive", "keep0_massive",
                                                   *(f"random_s{s}" for s in range(10)),
                                                   *(f"keep0_random_s{s}" for s in range(10)))}
    for b in bins:
        for kind, kept in (("contextual", ctx_kept), ("parametric", par_kept)):
            name = f"{'passkey' if kind == 'contextual' else 'facts'}_L{b}"
            tasks[name] = {"kind": kind, "min_prompt_tokens": b - 5, "max_prompt_tokens": b}
            if kind == "contextual":
                tasks[name]["key_depth_bin"] = [f"{q:.2f}-{q + .25:.2f}" for q in (0, .25, .5, .75)
                                                for _ in range(n // 4)]
            back = keep0_gain if kind == "contextual" else 0.0
            for c, h in (("original", hits(1.0)), ("massive", hits(kept)), ("keep0_massive", hits(kept + back)),
                         *((f"{p}random_s{s}", hits(seeds_acc, s)) for s in range(10) for p in ("", KEEP0))):
                conds[c]["tasks"][name] = {"exact": accuracy_summary([x == "1" for x in h], 0.0) | {"hits": h}}
    return {"tasks": tasks, "conditions": conds, "run": {"preset": {"bins": list(bins)}}}


def _verdicts(result: dict) -> dict[str, str]:
    run = ScoredRun.from_json(result)
    return {c.name: c.apply(run).verdict for c in confound_rules((32, 128))}


def test_rules_hold_when_parametric_survives_and_massive_beats_every_seed():
    v = _verdicts(_result(ctx_kept=0.25, par_kept=0.9, seeds_acc=0.8, keep0_gain=0.5))
    assert v["survives_massive_length_matched"] == HOLDS and v["survives_massive_L32"] == HOLDS
    assert v["beyond_random_contextual_massive"] == HOLDS
    assert v["position0_spares_contextual"] == HOLDS and v["position0_spares_parametric"] == FAILS
    assert v["depth_everywhere_massive"] == FAILS  # the edit spares the first depth quarter
    assert v["depth_everywhere_keep0_massive"] == FAILS


def test_rules_fail_when_both_kinds_lose_alike_and_a_seed_is_as_bad():
    v = _verdicts(_result(ctx_kept=0.5, par_kept=0.5, seeds_acc=0.5))
    assert v["survives_massive_length_matched"] == FAILS and v["survives_keep0_massive_L128"] == FAILS
    assert v["beyond_random_parametric_massive"] == FAILS


def test_rules_not_tested_without_enough_items_or_seeds():
    r = _result(0.2, 0.9, 0.8, n=8)  # 8 known items per kind and bin: fewer than 10
    assert _verdicts(r)["survives_massive_L32"] == NOT_TESTED
    r = _result(0.2, 0.9, 0.8)
    for s in range(5):
        del r["conditions"][f"random_s{s}"]
    assert _verdicts(r)["beyond_random_contextual_massive"] == NOT_TESTED
    r = _result(0.0, 0.9, 0.0)  # the original gets no contextual item right: nothing to lose
    for t, e in r["conditions"]["original"]["tasks"].items():
        e["exact"]["hits"] = "0" * len(e["exact"]["hits"]) if t.startswith("passkey") else e["exact"]["hits"]
    assert _verdicts(r)["beyond_random_contextual_massive"] == NOT_TESTED


def test_beyond_random_quotes_the_seeds_as_the_controls_table_does():
    """On the committed run: each decided beyond-random verdict prints the seeds' range exactly as
    the report's controls table prints it (percentages from counts, never from rounded fractions)."""
    from test_golden import CONFOUNDS_RUN, DOCS

    result = json.loads((DOCS / CONFOUNDS_RUN / "results.json").read_text())
    table = (DOCS / CONFOUNDS_RUN / "report.md").read_text()
    run = ScoredRun.from_json(result)
    decided = 0
    for claim in confound_rules(tuple(result["run"]["preset"]["bins"])):
        if not claim.name.startswith("beyond_random"):
            continue
        out = claim.apply(run)
        if out.verdict == NOT_TESTED:
            continue
        low, high, n = re.search(r"random seeds ([\d.]+)–([\d.]+)% \((\d+) seeds", out.detail).groups()
        kind = claim.name.split("_")[2]
        row = next(line for line in table.splitlines()
                   if line.startswith(f"| {'kept' if 'keep0' in claim.name else 'edited'}, {kind} |"))
        assert f"[{low}–{high}] ({n})" in row, (claim.name, row)
        decided += 1
    assert decided >= 2


def test_rule_texts_are_the_committed_ones():
    text = re.sub(r"\s+", " ", RULES_MD.read_text())
    for c in confound_rules():
        assert re.sub(r"\s+", " ", c.rule) in text, c.name


def test_prompt_lengths_record_range_and_depths():
    from mvjax.analysis.experiments.disrupt.run import prompt_lengths
    from mvjax.analysis.evaluate import encode_task

    pk = passkey_binned(5, 512, COUNT)
    rec = prompt_lengths(pk, encode_task(TOK, pk))
    n = [COUNT(it.prompt) + 1 for it in pk.items]
    assert (rec["min_prompt_tokens"], rec["max_prompt_tokens"], rec["prompt_tokens"]) == (min(n), max(n), n)
    assert rec["key_depth_bin"] == [depth_bin(d) for d in pk.depths]  # the realised depths
    assert rec["key_depth_bin"][0] == "0.00-0.25" and rec["key_depth_bin"][-1] == "0.75-1.00"
    par = Task("par", "parametric", (Item("sky is", (" blue", " red"), " blue"),))
    assert "key_depth" not in prompt_lengths(par, encode_task(TOK, par))


def test_preset_confounds_and_its_bins_option():
    import argparse

    from mvjax.analysis.experiments.common import preset

    def ns(**kw):
        return argparse.Namespace(**({"quick": False, "preset": "confounds", "n": None, "batch_size": 8,
                                      "bins": None} | kw))
    assert preset(ns())["bins"] == (32, 128, 256, 512, 1024)
    assert preset(ns(bins="128,512"))["bins"] == (128, 512)
    with pytest.raises(ValueError, match="add --preset confounds"):
        preset(ns(preset=None, bins="128"))
    with pytest.raises(ValueError, match="disagree"):
        preset(ns(quick=True))
    with pytest.raises(ValueError, match="increasing integers"):
        preset(ns(bins="128,x"))


def test_weights_note_follows_the_recorded_source():
    from mvjax.analysis.experiments.disrupt.confound_report import WEIGHTS_NOTE, confound_notes
    from mvjax.analysis.experiments.quantize.report import quantize_notes

    def run(source: str) -> ScoredRun:
        return ScoredRun.from_json({"provenance": {"model_source": source}, "tasks": {}, "conditions": {}})

    gguf = run("SmolLM2-135M-Instruct, GGUF Q4_1 (x.gguf), dequantized to fp32")
    assert "re-rounds" in quantize_notes(gguf)[0] and "Q4_1" in quantize_notes(gguf)[0]
    assert quantize_notes(run("mvjax model directory /m")) == []
    assert confound_notes(gguf)[0] == WEIGHTS_NOTE
    assert WEIGHTS_NOTE not in confound_notes(run("HF directory /m"))


def test_report_by_bin_and_depth_with_seeds_as_units(tmp_path):
    from mvjax.analysis.claims import claims_json
    from mvjax.analysis.experiments.disrupt.confound_report import confound_claims, write_confound_report

    r = _result(ctx_kept=0.25, par_kept=0.9, seeds_acc=0.8, keep0_gain=0.5)
    r |= {"definition": {}, "ranking": "sum"}
    for c, e in r["conditions"].items():
        e["group"] = "original" if c == "original" else "control" if "random" in c else "massive"
    run = ScoredRun.from_json(r)
    text = write_confound_report(run.with_claims(claims_json(confound_claims(run))), tmp_path, "t").read_text()
    assert "| contextual, ≤32 (n=40) | 100.0 | 25.0 | 75.0 |" in text  # original, edited, kept
    assert "80.0 [80–80] (10 seeds)" in text  # seeds shown as units, not pooled
    assert "| passkey | 100 → 25 / 75 | 100 → 25 / 75 | 100 → 25 / 75 |" in text  # family × bin
    assert "depth 0.75-1.00 (n=20)" in text and (tmp_path / "passkey_depth.png").is_file()
    seeds_row = next(x for x in text.splitlines() if x.startswith("| edited, contextual |"))
    assert "| 25.0 |" in seeds_row and "80.0 [80.0–80.0] (10)" in seeds_row and seeds_row.endswith("| 10 of 10 |")
    assert (tmp_path / "controls.png").is_file()
    assert ("better than contextual, length-matched: holds" in text
            and "costs passkey accuracy at every key depth: does not hold" in text)


def test_quantize_report_reads_length_bins_too(tmp_path):
    """A quantize run on the length-binned tasks reports every condition by kind and bin (greedy
    exact), as the disrupt run does; runs on other tasks keep their one table."""
    from mvjax.analysis.experiments.quantize.report import write_quantize_report

    r = _result(ctx_kept=0.25, par_kept=0.9, seeds_acc=0.8) | {"definition": {}, "ranking": "sum"}
    text = write_quantize_report(ScoredRun.from_json(r).with_claims([]), tmp_path, "t").read_text()
    row = next(x for x in text.splitlines() if x.startswith("| parametric, ≤128 (n=40) |"))
    assert row.startswith("| parametric, ≤128 (n=40) | 100.0 | 90.0 | 90.0 | 80.0 |")  # original, massive, keep0, s0
    r["run"] = {}
    assert "by kind and prompt-length bin" not in write_quantize_report(
        ScoredRun.from_json(r).with_claims([]), tmp_path, "t").read_text()
