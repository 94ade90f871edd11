"""Probe run: train one rope-cause arm of a preset (with overrides) and log held-out retrieval.

Used to search for a recipe under which the arms learn in-context retrieval. Prints one JSON line
per evaluation (step, wall seconds, train loss, per-task exact and answer NLL) and writes them to
--out. Example::

    python benchmarks/retrieval_probe.py --preset cpu --arm rope --steps 600 --every 100 \\
        --set heads=4 --set 'mixture={"text":0.2,"contextual":0.6,"parametric":0.2,
        "question":"lead_in"}' --out /tmp/probe.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--arm", default="rope")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--copy-episodes", type=int, default=0, help="also score this many copy episodes")
    p.add_argument("--set", action="append", default=[], help="preset field=JSON value")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import jax
    from flax import nnx

    from mvjax.analysis.experiments.rope_cause.presets import PRESETS, experiment_config
    from mvjax.analysis.retrieval_curve import RetrievalProbe
    import numpy as np

    from mvjax.data.mixture import copy_episode, eval_episodes
    from mvjax.data.pipeline import build_data
    from mvjax.model import init_model
    from mvjax.train.optim import build_optimizer
    from mvjax.train.step import make_train_step

    fields = {}
    for s in args.set:
        k, v = s.split("=", 1)
        fields[k] = json.loads(v)
    preset = dataclasses.replace(PRESETS[args.preset], steps=args.steps, **fields)
    exp = experiment_config(preset, args.arm)
    stream, _, tok = build_data(exp.data, progress=False)
    model = init_model(exp.model, exp.train.seed)
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)
    tx, _ = build_optimizer(exp.train.optim, exp.train.steps, params)
    state = {"params": params, "opt": tx.init(params)}
    step_fn = make_train_step(graphdef, exp.model, tx, 1, exp.train.loss_chunk)
    episodes = [e for e in eval_episodes(exp.data.mixture, args.episodes) if e.kind == "contextual"]
    rng = np.random.default_rng([exp.data.mixture.seed, 99])
    episodes += [copy_episode(rng, exp.data.mixture) for _ in range(args.copy_episodes)]
    probe = RetrievalProbe(graphdef, tok, episodes, exp.model.max_seq_len)
    t0, losses = time.time(), []
    with open(args.out, "w") as f:
        f.write(json.dumps({"preset": dataclasses.asdict(preset), "arm": args.arm}) + "\n")
        for step in range(1, args.steps + 1):
            state, m = step_fn(state, jax.numpy.asarray(stream.next_batch()))
            losses.append(m["loss"])
            if step % args.every == 0 or step == args.steps:
                rec = {"step": step, "tokens": step * preset.batch * preset.seq_len,
                       "wall_s": round(time.time() - t0, 1),
                       "loss": float(sum(float(x) for x in losses) / len(losses)),
                       **probe(state["params"])}
                losses = []
                f.write(json.dumps(rec) + "\n")
                f.flush()
                print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
