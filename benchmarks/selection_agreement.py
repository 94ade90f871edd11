"""Why ``--statistics prompt`` and ``pooled`` part on short prompts: per task, how often a prompt's
own top-1 Q / K dim per head is the one a run's pooled statistics chose. Pooled M sums Σx² over
every scored token, so the longest prompts (passkey at 1,024 tokens is 40% of the full set's
tokens) decide the pooled choice; a task whose prompts prefer other dims is edited elsewhere.

    python benchmarks/selection_agreement.py RUN/results.json [--model smollm2 --tasks a,b]

RUN/results.json is a disrupt result (its ``dims.massive_dims`` is the pooled top-1 selection and
its run record the task set). Prints one JSON object: per task and site, the share of (prompt,
layer, head) whose own top-1 is the pooled top-1, and the task's own pooled top-1 agreement.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    args = ap.parse_args()

    from mvjax.analysis.dims import stacked
    from mvjax.analysis.experiments.disrupt.run import baseline_pass
    from mvjax.analysis.evaluate import Scorer, encode_task
    from mvjax.data.tasks import builtin_tasks
    from mvjax.load import load_pretrained

    result = json.load(open(args.results))
    run = result["run"]["preset"]
    model, tok = load_pretrained(args.model)
    cfg = model.cfg
    tasks = builtin_tasks(lambda s: len(tok.encode(s)), run["n"], result["run"].get("seed", 0),
                          tuple(map(tuple, run["passkeys"])), cfg.max_seq_len, run["facts_every"])
    if args.tasks:
        tasks = [t for t in tasks if t.name in args.tasks.split(",")]
    sites = ("q_rot", "k_rot")
    chosen = {}
    for s in sites:
        heads = cfg.num_heads if s.startswith("q") else cfg.num_kv_heads
        mask = np.zeros((cfg.num_layers, heads, cfg.head_dim), bool)
        for layer, entries in result["dims"]["massive_dims"][s].items():
            for h, d in entries:
                mask[int(layer), h, d] = True
        chosen[s] = mask
    out = {}
    scorer = Scorer(model, 8)
    for task in tasks:
        enc = {task.name: encode_task(tok, task)}
        _, energy, _ = baseline_pass(scorer, [task], enc, sites, False)
        row = {"n": len(task.items)}
        for s in sites:
            top1 = stacked(energy, s, "top1")
            own = np.sqrt(stacked(energy, s, "sumsq"))
            own_top = own == own.max(axis=-1, keepdims=True)
            row[s] = {"prompt_top1_is_pooled": float(top1[chosen[s]].sum() / top1.sum()),
                      "task_top1_is_pooled": float((own_top & chosen[s]).any(-1).mean())}
        out[task.name] = row
        print(json.dumps({task.name: row}), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
