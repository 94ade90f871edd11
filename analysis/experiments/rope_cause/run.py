"""``mvjax experiment rope-cause``: matched models trained from scratch that differ only in their
positional scheme, watched for massive values over training.

Arms (same data order, seed, size, steps; only ``model.positional`` differs): RoPE θ=1e4, RoPE
θ=1e6, partial RoPE (25% of each head's dims rotated), NoPE, ALiBi. Every ``log_every`` steps the
training loop logs, per layer and site, the H×D norm matrix M and each head's attention mass on the
first token (``train.metrics``); the concentration metrics are computed from those logs
(``analysis.concentration``), with the massive-value definition fixed in ``analysis.massive``.
After training, each final model goes through ``mvjax analyze`` and the mixture's held-out
contextual and parametric episodes (``analysis.task_accuracy``).

Layout of OUT::

    OUT/experiment.json   the preset (checked on --resume)
    OUT/arms/<arm>/       a training run (train.loop layout) + analyze/ + tasks.json
    OUT/reference.json    the reference model measured the same way (cached)
    OUT/results.json, OUT/figures/*.png, OUT/report.md

Resume: an arm with a finished model is not retrained; an arm with checkpoints continues from its
newest one; the arms run in a fixed order, so a killed run resumed with ``--resume`` finishes the
same arms with the same data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mvjax.analysis.analyze import RESULTS_FILE, AnalyzeConfig, analyze_to_dir
from mvjax.analysis.experiments.disrupt.run import DisruptConfig, disrupt
from mvjax.analysis.experiments.common import add_mesh_arg
from mvjax.analysis.experiments.rope_cause_report import write_report
from mvjax.analysis.experiments.rope_cause_results import (REMEASURE, RopeCauseResults, collect, counted,
                                                           measure_reference)
from mvjax.analysis.retrieval_curve import RetrievalProbe
from mvjax.analysis.task_accuracy import score
from mvjax.atomic import LOCK_FILE, check_own_dir, clean_partials, lock_dir, read_json_state, require, write_json
from mvjax.checkpoint import load_model
from mvjax.cli import Interrupted
from mvjax.config import to_plain
from mvjax.data.mixture import eval_episodes
from mvjax.data.tasks.base import Item, Task
from mvjax.load import detect_kind
from mvjax.mesh import place_model
from mvjax.provenance import git_sha
from mvjax.tokenizers import load_tokenizer
from mvjax.train.config import ExperimentConfig
from mvjax.train.loop import train

ARMS: dict[str, dict[str, Any]] = {
    "rope": {"scheme": "rope", "theta": 1.0e4, "layout": "half", "rotary_fraction": 1.0},
    "rope-theta1e6": {"scheme": "rope", "theta": 1.0e6, "layout": "half", "rotary_fraction": 1.0},
    "partial-rope": {"scheme": "rope", "theta": 1.0e4, "layout": "half", "rotary_fraction": 0.25},
    "nope": {"scheme": "nope"},
    "alibi": {"scheme": "alibi"},
}
# Claim (5): each arm's own top-1 Q and K dims per head (post-positional, mean-replaced; the
# disruption experiment's protocol, ``analysis.experiments.disrupt.run``) disrupted on the held-out episodes, with
# ``Preset.control_seeds`` pair-aware random-dims controls (a null distribution) and three
# energy-matched ones; the λ-massive set is scored once beside it, without controls.
ENERGY_SEEDS = (0, 1, 2)
# the curves on the episodes (Preset.gap_every): packed rows for the Q/K norms, and the gap's
# episodes and random-control seeds (a gap point costs about 2 + GAP_SEEDS passes over them)
CONCENTRATION_ROWS, GAP_EPISODES, GAP_SEEDS = 4, 100, 5


# Every field an arm's ``train.config.ExperimentConfig`` shares with the other arms (the cpu scale);
# a preset changes some of them with override strings, and each arm adds ``model.positional``.
# The data are bytes of tinyshakespeare (vocab 257, BOS 256); BPE arms were not run.
BASE: dict[str, Any] = {
    "model": {"vocab_size": 257, "hidden_size": 128, "num_layers": 4, "num_heads": 2,
              "mlp_hidden": 344, "tie_embeddings": True, "dtype": "float32", "max_seq_len": 256,
              "bos_id": 256},
    "data": {"source": "tinyshakespeare", "tokenizer": "byte", "seq_len": 256, "batch_size": 16,
             "seed": 0, "holdout_fraction": 0.05, "packing": "bos_first", "eval_rows": 16,
             "mixture": {"text": 0.5, "contextual": 0.25, "parametric": 0.25}},
    "train": {"steps": 2400, "seed": 0, "log_every": 10, "eval_every": 100, "eval_batches": 1,
              "checkpoint_every": 200, "keep_checkpoints": 2, "concentration_every": 100,
              "progress": False,
              "optim": {"lr": 3e-3, "warmup_steps": 50, "schedule": "constant",
                        "weight_decay": 0.0, "grad_clip": 1.0}},
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """One scale of the experiment: ``overrides`` (``key.path=value``, the config's own field
    names, as ``mvjax train --override`` takes them) on ``BASE``. The norm matrices are logged (and
    the model evaluated) every ``train.concentration_every`` steps. ``what`` is printed in the
    report: what this scale can and cannot show."""

    name: str
    overrides: tuple[str, ...] = ()
    eval_episodes: int = 200
    analyze_tokens: int = 32768
    arms: tuple[str, ...] = tuple(ARMS)
    reference: str | None = "smollm2"
    figures_svg: bool = False
    retrieval_every_eval: bool = False  # log held-out retrieval at every eval step (costs seconds)
    what: str = ""
    seed: int = 0  # training and data seed (init, data order, the mixture's episodes and facts)
    heldout_seed: int = 1  # the held-out episodes claim (5) is scored on (the monitor uses 1)
    control_seeds: int = 3  # pair-aware random-dims controls per arm
    gap_every: int = 0  # steps between massive-vs-random gaps on the monitor episodes (0: none)

    def config(self, arm: str):
        """The ``ExperimentConfig`` of one arm: every field but ``model.positional`` is shared."""
        if arm not in ARMS:
            raise ValueError(f"arm {arm!r} is unknown: choose from {list(ARMS)}")
        base = {**BASE, "model": {**BASE["model"], "positional": ARMS[arm]}}
        seeds = (f"train.seed={self.seed}", f"data.seed={self.seed}", f"data.mixture.seed={self.seed}")
        return ExperimentConfig.from_dict(base, (*self.overrides, *(seeds if self.seed else ())))

    @property
    def shared(self):
        """The settings every arm shares (the first arm's config)."""
        return self.config(self.arms[0])


def _scale(hidden: int, layers: int, heads: int, mlp: int, seq_len: int, batch: int, steps: int,
           log_every: int, checkpoint_every: int) -> tuple[str, ...]:
    """Overrides of one model/data/schedule scale, in the config's own names."""
    return (f"model.hidden_size={hidden}", f"model.num_layers={layers}", f"model.num_heads={heads}",
            f"model.mlp_hidden={mlp}", f"model.max_seq_len={max(seq_len, 256)}",
            f"data.seq_len={seq_len}", f"data.batch_size={batch}", f"data.eval_rows={max(batch, 16)}",
            f"train.steps={steps}", f"train.log_every={min(10, log_every)}",
            f"train.eval_every={log_every}", f"train.concentration_every={log_every}",
            f"train.checkpoint_every={checkpoint_every}")


RETRIEVAL_WHAT = ("the recipe search's last candidate for in-context retrieval on one CPU core "
                  "(README, 'Learning retrieval on a CPU'): 4 heads of 32 dims, rows of 128 "
                  "bytes, 85% episode rows (half of them repeated random strings, kv episodes "
                  "asking every key, questions that repeat the answer's lead-in), 13.3M tokens "
                  "per arm (about 25 min on one core), lr 3e-3 constant then linear to 3e-4 over "
                  "the last 500 steps (at a constant lr the RoPE arm's passkey accuracy swung "
                  "between 0.96 and 0.49 from one logged step to the next). Held-out retrieval "
                  "is logged every 100 steps; claim (5) is decided only where an arm solves "
                  "enough episodes.")

PRESETS: dict[str, Preset] = {
    # seconds: the whole pipeline (every arm, logs, analyze, tasks, figures) for CI
    "test": Preset("test", (*_scale(32, 2, 2, 64, 48, 4, 4, 2, 2), "train.optim.warmup_steps=1",
                            'data.mixture={"text": 0.5, "contextual": 0.25, "parametric": 0.25, '
                            '"n_facts": 4, "passkey_digits": 2, "passkey_filler": 0, "kv_pairs": 2}'),
                   eval_episodes=8, analyze_tokens=192, reference=None, retrieval_every_eval=True,
                   gap_every=4,
                   arms=("rope", "partial-rope", "nope"),
                   what="a pipeline check only: 4 steps of a 2-layer model cannot show any "
                        "concentration or task learning."),
    "quick": Preset("quick", (*_scale(64, 2, 1, 172, 128, 8, 300, 50, 150),
                              'data.mixture={"text": 0.5, "contextual": 0.25, "parametric": 0.25, '
                              '"n_facts": 32, "passkey_digits": 4, "passkey_filler": 1, '
                              '"kv_pairs": 4}'),
                    eval_episodes=100, analyze_tokens=16384,
                    what="about 0.3M tokens per arm: enough to see the models learn text and to "
                         "exercise every measurement, far too little for massive values to emerge "
                         "(in the scale runs of the README the first λ=5 entry came after 2.5M "
                         "tokens with NoPE and 4.5M with RoPE, at head_dim 64), so its verdicts "
                         "are not evidence either way; where the energy sits (band share, partial "
                         "RoPE's rotated-dim share) already differs between the arms."),
    "cpu": Preset("cpu", (),
                  what="the smallest setting found where RoPE concentrates: head_dim 64, 9.8M byte "
                       "tokens, constant lr 3e-3, no weight decay (in pure-text scale runs RoPE "
                       "reached 2 post-RoPE K entries at λ=5, head_dim 32 none by 7.8M tokens). "
                       "Here half the rows are synthetic episodes, so the text share is halved. "
                       "Measured: 15-27 min of training per arm, 1 h 35 min for all five, on "
                       "2 shared CPU cores. Still a 4-layer byte "
                       "model: depth trends and task accuracies are those of a tiny model."),
    # the cpu model with 4 heads (head_dim 32), shorter rows and a mixture that rewards finding a
    # token by its content (lead-in questions, dense kv questions, repeated random strings), with
    # held-out retrieval logged at every eval step; arms ordered RoPE, NoPE, ALiBi first
    "retrieval": Preset("retrieval", (*_scale(128, 4, 4, 344, 128, 16, 6500, 100, 500),
                                      "train.optim.schedule=wsd", "train.optim.decay_steps=500",
                                      'data.mixture={"text": 0.1, "contextual": 0.85, '
                                      '"parametric": 0.05, "question": "lead_in", "copy": 0.5, '
                                      '"copy_len": 24, "passkey_filler": 1, "kv_pairs": 4, '
                                      '"kv_queries": 4, "kv_sep": ""}'),
                        eval_episodes=300, retrieval_every_eval=True, heldout_seed=2,
                        control_seeds=50, gap_every=1000,
                        arms=("rope", "nope", "alibi", "rope-theta1e6", "partial-rope"),
                        what=RETRIEVAL_WHAT),
    "gpu": Preset("gpu", (*_scale(512, 8, 8, 1376, 512, 64, 20000, 500, 1000),
                          "model.dtype=bfloat16"),
                  eval_episodes=500, analyze_tokens=131072,
                  what="the cpu design scaled up (head_dim 64, 8 layers, 655M tokens, bf16); "
                       "untested on this project's CPU machine."),
}


# What OUT may hold: a folder with anything else (a model dir, someone's files) is refused.
OWN_FILES = frozenset({"experiment.json", "arms", "reference.json", "results.json", "figures",
                       "report.md", LOCK_FILE})


def _arm_finished(arm_dir: Path) -> bool:
    summary = arm_dir / "summary.json"
    return summary.is_file() and "model_dir" in read_json_state(
        summary, "delete it and rerun with --resume (the arm's checkpoints are kept)")


def _check_out(out: Path, preset: Preset, resume: bool) -> None:
    record = out / "experiment.json"
    if record.is_file():
        if not resume:
            raise FileExistsError(f"{out} already holds a rope-cause run: pass --resume to continue "
                                  "it, or choose another --out")
        saved = require(read_json_state(record, "delete it and rerun with the same --preset and "
                                        "--resume"), "preset", dict, record)
        saved = {**saved, "arms": to_plain(preset)["arms"]}  # --arms may name another subset
        for field, default in (("retrieval_every_eval", False), ("seed", 0), ("heldout_seed", 1),
                               ("control_seeds", 3), ("gap_every", 0)):  # fields added later, at their defaults
            saved.setdefault(field, default)
        if saved != to_plain(preset):
            raise ValueError(f"{out} was started with preset {saved['name']!r} and other settings: "
                             "resume with the same --preset, or choose another --out")


def train_arms(preset: Preset, out: Path, resume: bool, stop_at: int | None = None,
               after=None) -> bool:
    """Train every arm in order; True when all are finished (``stop_at`` ends each invocation of
    an arm early, as a kill would, leaving a checkpoint). ``after(arm)`` runs once an arm is
    trained, before the next one starts, so a run stopped for time keeps its finished arms whole."""
    for arm in tqdm(preset.arms, desc="arms", unit="arm"):
        arm_dir = out / "arms" / arm
        if _arm_finished(arm_dir):
            if after is not None:
                after(arm)
            continue
        has_ckpt = (arm_dir / "checkpoints").is_dir() and any((arm_dir / "checkpoints").iterdir())
        summary = train(preset.config(arm), arm_dir, resume=resume or has_ckpt,
                        stop_at=stop_at, probe=_retrieval_probe(preset))
        if summary["interrupted_by_signal"] is not None:  # checkpointed: exit 130/143
            raise Interrupted(summary["interrupted_by_signal"])
        if "model_dir" not in summary:
            return False
        if after is not None:
            after(arm)
    return True


def _retrieval_probe(preset: Preset):
    """The held-out contextual episodes scored at every eval step (``analysis.retrieval_curve``):
    the step at which each arm learns retrieval is a result. With ``gap_every``, the probe also
    logs Q/K norms on packed episode rows and the massive-vs-random gap on the first
    ``GAP_EPISODES`` of them, so the curves answer on the inputs retrieval runs on."""
    if not preset.retrieval_every_eval:
        return None
    shared = preset.shared
    episodes = [e for e in eval_episodes(shared.data.mixture, preset.eval_episodes)
                if e.kind == "contextual"]
    rows = CONCENTRATION_ROWS if preset.gap_every else 0  # the episode curves come together
    return lambda graphdef, tok: RetrievalProbe(
        graphdef, tok, episodes, shared.model.max_seq_len, concentration_rows=rows,
        gap=lambda model: disruption_gap(model, tok, episodes[:GAP_EPISODES]), gap_every=preset.gap_every)


def _tasks_of(episodes) -> list:
    """The episodes as one ``Task`` per (task, kind), items in episode order."""
    by_task: dict[tuple[str, str], list[Item]] = {}
    for ep in episodes:
        by_task.setdefault((ep.task, ep.kind), []).append(Item(ep.prompt, target=ep.answer))
    return [Task(name, kind, tuple(items)) for (name, kind), items in by_task.items()]


def _kind_accuracy(entry: dict[str, Any], tasks: list, kind: str) -> dict[str, Any] | None:
    """A condition's greedy exact match over the tasks of one kind, with per-item hits."""
    scored = [entry["tasks"][t.name].get("exact") for t in tasks if t.kind == kind]
    n = sum(s["n"] for s in scored if s)
    k = sum(s["correct"] for s in scored if s)
    hits = "".join(s.get("hits", "") for s in scored if s)  # per item, in task order
    return counted(k, n) | {"hits": hits} if n else None


def disruption_gap(model, tok, episodes, seeds: int = GAP_SEEDS) -> dict[str, Any]:
    """Contextual exact match of the model, its massive-dims edit and ``seeds`` pair-aware random
    controls on ``episodes``; ``gap`` = mean random − massive (the edit's extra damage)."""
    tasks = _tasks_of(episodes)
    res = disrupt(model, tok, tasks, DisruptConfig(seeds=tuple(range(seeds)), energy_seeds=(),
                                                   ablations=False), progress=False)
    acc = {c: _kind_accuracy(e, tasks, "contextual")["accuracy"] for c, e in res["conditions"].items()}
    random = [acc[f"random_s{s}"] for s in range(seeds)]
    return {"n": len(episodes), "original": acc["original"], "massive": acc["massive"],
            "random": random, "gap": float(np.mean(random) - acc["massive"])}


def analyze_arm(preset: Preset, arm_dir: Path, mesh: str | None = None) -> None:
    """``mvjax analyze`` on the arm's final model (natural text), then its task accuracies and
    claim (5)'s disruption, scored on ``mesh`` (``--mesh``; None: one device)."""
    data = preset.shared.data
    if not (arm_dir / "analyze" / RESULTS_FILE).is_file():
        analyze_to_dir(AnalyzeConfig(
            model=str(arm_dir / "model"), out=arm_dir / "analyze", data=data.source,
            tokens=preset.analyze_tokens, seq_len=data.seq_len, figures=False))
    missing = [f for f in ("tasks.json", "disrupt.json") if not (arm_dir / f).is_file()]
    if missing:
        model, tok = load_model(arm_dir / "model"), load_tokenizer(arm_dir / "model")
        if mesh is not None:
            place_model(model, mesh)
        episodes = eval_episodes(data.mixture, preset.eval_episodes, seed=preset.heldout_seed)
        for name in missing:
            result = score(model, tok, episodes) if name == "tasks.json" else \
                disruption(model, tok, episodes, preset.control_seeds)
            write_json(arm_dir / name, result)


def disruption(model, tok, episodes, control_seeds: int = 3) -> dict[str, Any]:
    """Claim (5) on one arm: per condition (original, massive dims, ablations, controls), the
    greedy exact-match accuracy per kind. Parametric counts only the facts the unmodified model
    answers (``analysis.experiments.disrupt.run.counted_items``), so its original accuracy is 1 by construction;
    contextual counts every episode."""
    tasks = _tasks_of(episodes)
    res = disrupt(model, tok, tasks, DisruptConfig(seeds=tuple(range(control_seeds)),
                                                   energy_seeds=ENERGY_SEEDS), progress=False)
    lam = disrupt(model, tok, tasks, DisruptConfig(seeds=(0,), energy_seeds=(), ablations=False,
                                                   selection="lambda"), progress=False)
    res["conditions"]["lambda_massive"] = lam["conditions"]["massive"]
    accuracy = {cond: {kind: _kind_accuracy(entry, tasks, kind) for kind in ("contextual", "parametric")}
                for cond, entry in res["conditions"].items()}
    return {"definition": res["definition"], "massive_dims": res["dims"]["massive_dims"],
            "control_draws": res["dims"].get("control_draws"),
            "lambda_massive_dims": lam["dims"]["massive_dims"],
            "n_items": {t.name: len(t.items) for t in tasks}, "accuracy": accuracy}


def run(preset: Preset, out: str | Path, *, resume: bool = False, reference: str | None = None,
        stop_at: int | None = None, train_only: bool = False, mesh: str | None = None
        ) -> RopeCauseResults | None:
    """The whole experiment into ``out``; returns results (None when ``stop_at`` cut it short).
    ``mesh`` places each final model for the held-out scoring (training keeps its own config)."""
    if reference:
        detect_kind(reference)  # a wrong --reference is refused before any arm trains
    out = check_own_dir(out, OWN_FILES, "a rope-cause run")
    out.mkdir(parents=True, exist_ok=True)
    with lock_dir(out):  # one run at a time on OUT
        clean_partials(out, recursive=True)  # work dirs of analyses and models a kill left
        _check_out(out, preset, resume)
        write_json(out / "experiment.json", {"preset": to_plain(preset)})
        if not train_arms(preset, out, resume, stop_at,
                          after=None if train_only else lambda arm: analyze_arm(preset, out / "arms" / arm,
                                                                                mesh)):
            return None
        if train_only:
            return None
        return _measure(preset, out, reference, mesh)


def _measure(preset: Preset, out: Path, reference: str | None, mesh: str | None = None
             ) -> RopeCauseResults:
    """Every arm analyzed, the reference measured (cached), results, figures and report. The
    results hold every finished arm in OUT, not only those this invocation named (``--arms``)."""
    order = dict.fromkeys((*(PRESETS[preset.name].arms if preset.name in PRESETS else ()),
                           *preset.arms, *ARMS))  # the preset's own order
    preset = dataclasses.replace(preset, arms=tuple(
        a for a in order if a in preset.arms or _arm_finished(out / "arms" / a)))
    for arm in preset.arms:
        analyze_arm(preset, out / "arms" / arm, mesh)
    ref = None
    if reference:
        ref_path = out / "reference.json"
        if ref_path.is_file():
            ref = read_json_state(ref_path, REMEASURE)
        if not isinstance(ref, dict) or ref.get("model") != reference:
            ref = measure_reference(reference, preset.shared.data.seq_len)
            write_json(ref_path, ref, indent=None)
    results = collect(preset, out, ref, git_sha())
    record = results.to_json()
    write_json(out / "results.json", record)
    # local: matplotlib, only drawing needs it
    from mvjax.analysis.experiments.rope_cause_plots import all_figures

    figures = all_figures(results, out / "figures", svg=preset.figures_svg)
    write_report(results, figures, out)
    return results


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rope-cause", help="train matched RoPE / NoPE / ALiBi / partial-RoPE / θ arms "
                       "from scratch and measure where massive values emerge")
    p.add_argument("--preset", choices=[n for n in PRESETS], default="quick",
                   help="scale: test (seconds, CI), quick (<= 10 min on 2 CPU cores), cpu (about "
                   "an hour per arm), gpu")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    p.add_argument("--reference", default=None,
                   help="pretrained model measured the same way (any name or path `mvjax analyze` "
                   "accepts; default: smollm2 except for the test preset; 'none' skips it)")
    p.add_argument("--arms", default=None,
                   help="comma-separated subset of the preset's arms to run (default: all, in the "
                   "preset's order); a resume may name other arms of the same preset")
    p.add_argument("--seed", type=int, default=0,
                   help="training and data seed of every arm (init, data order, the mixture's "
                   "episodes and facts; default 0); seeds are the units of replication")
    p.add_argument("--train-only", action="store_true",
                   help="train the arms and stop (a later --resume analyzes them)")
    p.add_argument("--stop-at", type=int, default=None,
                   help="end each arm's training invocation after this step (checkpointed)")
    add_mesh_arg(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    preset = PRESETS[args.preset]
    if args.arms is not None:
        wanted = [a.strip() for a in args.arms.split(",") if a.strip()]
        if not wanted or any(a not in preset.arms for a in wanted):
            raise ValueError(f"--arms {args.arms!r}: use a comma-separated subset of the preset's "
                             f"arms {list(preset.arms)}")
        preset = dataclasses.replace(preset, arms=tuple(a for a in preset.arms if a in wanted))
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed}: use a non-negative integer")
    preset = dataclasses.replace(preset, seed=args.seed)
    reference = preset.reference if args.reference is None else args.reference
    if reference is not None and reference.lower() == "none":
        reference = None
    results = run(preset, args.out, resume=args.resume, reference=reference, stop_at=args.stop_at,
                  train_only=args.train_only, mesh=args.mesh)
    if results is None:
        print(json.dumps({"out": args.out, "finished": False,
                          "note": "stopped early: continue with --resume"}))
        return 0
    print(json.dumps({"out": args.out, "finished": True, "claims": {
        k: c.verdict for k, c in results.claims.items()}}, indent=1))
    return 0
