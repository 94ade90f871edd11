"""How the unmodified model does on the built-in tasks: is each one clearly above chance (the
Wilson 95% CI above the chance level), by summed and per-token ranking and by greedy exact match?
A task the model cannot do says nothing about disruption.

    python benchmarks/task_baselines.py [--model smollm2 --n 100 --tasks classify,arithmetic,world]

Prints one JSON object per task: n, chance, accuracy and CI for each metric, and seconds.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    args = ap.parse_args()

    from mvjax.analysis.evaluate import Scorer, encode_task, score_task
    from mvjax.data.tasks import builtin_tasks
    from mvjax.load import load_pretrained

    model, tok = load_pretrained(args.model)
    tasks = builtin_tasks(lambda s: len(tok.encode(s)), args.n, args.seed,
                          max_len=model.cfg.max_seq_len)
    if args.tasks:
        want = args.tasks.split(",")
        tasks = [t for t in tasks if t.name in want]
    scorer = Scorer(model, 8)
    out = {}
    for t in tasks:
        t0 = time.time()
        enc = encode_task(tok, t)
        ll, hits = scorer.run(enc)
        s = score_task(enc, ll, hits, t.rank_chance, exact_chance=t.exact_chance)
        out[t.name] = {m: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                           if k in ("n", "accuracy", "chance", "ci95", "clearly_above_chance")}
                       for m, r in s.items() if m != "rank"} | {"seconds": round(time.time() - t0, 1)}
        print(json.dumps({t.name: out[t.name]}), flush=True)


if __name__ == "__main__":
    main()
