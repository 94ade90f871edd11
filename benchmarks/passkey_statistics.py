"""Pooled vs per-prompt selection on a passkey set like issue 19's: does choosing each prompt's
own top-1 dims (the authors' protocol) instead of one pooled selection explain a lower massive
score? Prompts of 150–350 tokens (uniform, seeded), a 5-digit key at a random depth, ending
"What is the pass key? The pass key is", greedy-exact target " KEY". Conditions: original,
massive, lowest-norm — each under ``statistics=pooled`` and ``statistics=prompt``.

    python benchmarks/passkey_statistics.py [--model smollm2 --n 30 --seed 0 --out tasks.jsonl]

Prints one JSON object: accuracies (greedy exact and 4-choice rank) with Wilson CIs, how often
a prompt's own top-1 dim per head equals the pooled one, and seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import numpy as np


def passkey_items(count_tokens, n: int, seed: int, lo: int = 150, hi: int = 350):
    """``n`` (prompt, key, choices) with prompt lengths drawn uniformly from [lo, hi] tokens."""
    from mvjax.data.tasks.passkey import _fit_repeats, passkey_prompt

    rng = random.Random(seed)
    fits = {}
    rows = []
    for _ in range(n):
        length = rng.randint(lo, hi)
        reps = fits.setdefault(length, _fit_repeats(length, count_tokens))
        keys = [str(k) for k in rng.sample(range(10000, 100000), 4)]
        choices = [" " + k for k in keys]
        rng.shuffle(choices)
        rows.append({"prompt": passkey_prompt(keys[0], rng.random(), reps), "choices": choices,
                     "answer": " " + keys[0], "target": " " + keys[0], "kind": "contextual"})
    return rows


ALL = ("original", "pooled/massive", "pooled/lowest_norm", "prompt/massive", "prompt/lowest_norm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the task file (JSONL) here")
    ap.add_argument("--conditions", default=",".join(ALL),
                    help="which of " + ",".join(ALL) + " to score (split them over processes "
                    "to run in parallel; without original or pooled ones the unmodified pass is skipped)")
    args = ap.parse_args()

    from mvjax.analysis.dims import stacked
    from mvjax.analysis.experiments.disrupt.run import (DisruptConfig, baseline_pass, condition_probe, evaluate_condition,
                                  plan_conditions, rule_text, statistics_info)
    from mvjax.analysis.evaluate import Scorer, encode_task
    from mvjax.data.tasks.base import Item, Task
    from mvjax.load import load_pretrained

    t0 = time.time()
    model, tok = load_pretrained(args.model)
    rows = passkey_items(lambda s: len(tok.encode(s)), args.n, args.seed)
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    task = Task("passkey_150_350", "contextual", tuple(
        Item(r["prompt"], tuple(r["choices"]), r["answer"], r["target"]) for r in rows))
    scorer = Scorer(model, 8)
    enc = {task.name: encode_task(tok, task)}
    lengths = [len(e.prompt) for e in enc[task.name]]
    want = args.conditions.split(",")
    out = {"n": args.n, "seed": args.seed, "prompt_tokens": [min(lengths), max(lengths)], "runs": {}}
    if any(w == "original" or w.startswith("pooled") for w in want):
        base, energy, keep = baseline_pass(scorer, [task], enc, ("q_rot", "k_rot"), False)
    else:  # per-prompt conditions need no pooled statistics; score every item
        every = list(range(len(enc[task.name])))
        base, energy, keep = None, None, {task.name: {"rank": every, "exact": every}}
    for stats in ("pooled", "prompt"):
        config = DisruptConfig(statistics=stats)
        conds = {c.name: c for c in plan_conditions(config, (), model.cfg.num_layers, rule_text(config))}
        M = E = None
        if energy is not None:
            M = {s: np.sqrt(stacked(energy, s, "sumsq")) for s in config.sites}
            E = {s: stacked(energy, s, "centered") for s in config.sites}
        for name in ("massive", "lowest_norm"):
            if f"{stats}/{name}" not in want:
                continue
            t1 = time.time()
            probe = condition_probe(conds[name], model.cfg, M, E, config)
            r = evaluate_condition(scorer, [task], enc, keep, probe, None, name, False)
            out["runs"][f"{stats}/{name}"] = {m: {k: r["tasks"][task.name][m][k]
                                                  for k in ("accuracy", "ci95", "n")}
                                              for m in ("exact", "rank")} | {"seconds": round(time.time() - t1, 1)}
            print(json.dumps({f"{stats}/{name}": out["runs"][f"{stats}/{name}"]}), file=sys.stderr, flush=True)
        if energy is not None:
            out["prompt_top1_is_pooled_top1"] = statistics_info(energy, model.cfg, config, [])["prompt_top1_is_pooled_top1"]
    if "original" in want:
        r = evaluate_condition(scorer, [task], enc, keep, None, None, "original", False, runs=base)
        out["runs"]["original"] = {m: {k: r["tasks"][task.name][m][k] for k in ("accuracy", "ci95", "n")}
                                   for m in ("exact", "rank")}
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
