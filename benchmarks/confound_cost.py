"""Cost of one disruption condition per item of the ``confounds`` preset, by length bin: the
steady-state seconds of scoring ``--n`` items of each family in a bin under a mean-replacement
probe (the structure every condition shares), compilation excluded (each bin is scored twice; the
second pass is timed). Both wall and process CPU seconds are given: pinned to one core on a shared
machine, CPU seconds are what the pass costs that core, wall seconds what it took meanwhile. Sizes n per bin so that a condition takes ≤ 30 min of one core.

    taskset -c 0 nice -n 10 python benchmarks/confound_cost.py --bins 32,256,1024 --n 8

Prints one JSON object: per bin, the families' item count, seconds per item and per condition at
``--n-target`` items per family. Note the machine's load beside it (a shared CPU inflates it).
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--bins", default="32,256,1024")
    ap.add_argument("--n", type=int, default=8, help="items per family measured")
    ap.add_argument("--print-each", action="store_true", help="print each bin as it is measured")
    ap.add_argument("--n-target", type=int, default=40, help="items per family and bin to cost")
    args = ap.parse_args()
    import numpy as np

    from mvjax.analysis.evaluate import Scorer, encode_task, longest_continuation
    from mvjax.data.tasks.lengths import BINS, confound_tasks
    from mvjax.interventions import empty_masks, intervention
    from mvjax.load import load_pretrained

    model, tok = load_pretrained(args.model)
    count = lambda s: len(tok.encode(s))
    want = [int(b) for b in args.bins.split(",")]
    tasks = [t for t in confound_tasks(count, args.n) if int(t.name.rsplit("_L", 1)[1]) in want]
    enc = {t.name: encode_task(tok, t) for t in tasks}
    scorer = Scorer(model, 8, longest_continuation(enc))
    masks = empty_masks(model.cfg, ("q_rot", "k_rot"))
    for s in masks:  # one dim per head, as the top-1 massive edit
        masks[s][..., 0] = True
    probe = intervention(model.cfg, masks, "mean")
    out: dict = {"load_before": os.getloadavg()[0], "by_bin": {}}
    total = 0.0
    for b in want:
        items = [e for t in tasks if t.name.endswith(f"_L{b}") for e in enc[t.name]]
        scorer.run(items, probe)  # compile
        t0, c0 = time.perf_counter(), time.process_time()
        scorer.run(items, probe)
        per = (time.process_time() - c0) / len(items)
        wall = (time.perf_counter() - t0) / len(items)
        families = sum(t.name.endswith(f"_L{b}") for t in tasks)
        lengths = [len(e.prompt) for e in items]
        out["by_bin"][b] = {"families": families, "items": len(items), "s_per_item": round(per, 3),
                            "wall_s_per_item": round(wall, 3),
                            "prompt_tokens": [min(lengths), max(lengths)]}
        if args.print_each:
            print(json.dumps({b: out["by_bin"][b]}), flush=True)
    xs = sorted(out["by_bin"])
    for b in BINS:  # bins not measured: linear in the prompt length between the measured ones
        per = float(np.interp(b, xs, [out["by_bin"][x]["s_per_item"] for x in xs]))
        fam = 3 if b == BINS[0] else 5
        out.setdefault("interpolated_s_per_item", {})[b] = round(per, 3)
        total += per * fam * args.n_target
    out["condition_minutes_at_n_target"] = round(total / 60, 1)
    out["n_target"] = args.n_target
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main()
