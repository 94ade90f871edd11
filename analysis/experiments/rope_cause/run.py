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

The engine: the flags are read in ``analysis.experiments.rope_cause.cli``, the arms and scales are
``analysis.experiments.rope_cause.presets``; ``measure``, ``results``, ``claims``, ``report`` and
``plots`` beside this module turn OUT into results.json, report.md and the figures.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mvjax.analysis.analyze import RESULTS_FILE, AnalyzeConfig, analyze_to_dir
from mvjax.analysis.experiments.disrupt.run import DisruptConfig, disrupt
from mvjax.analysis.experiments.rope_cause.measure import REMEASURE, collect, measure_reference
from mvjax.analysis.experiments.rope_cause.presets import ARMS, PRESETS, Preset
from mvjax.analysis.experiments.rope_cause.report import write_report
from mvjax.analysis.experiments.rope_cause.results import ReferenceMeasurement, RopeCauseResults, counted
from mvjax.analysis.records import ConditionResult
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
from mvjax.train.loop import train

# Claim (5): each arm's own top-1 Q and K dims per head (post-positional, mean-replaced; the
# disruption experiment's protocol, ``analysis.experiments.disrupt.run``) disrupted on the held-out episodes, with
# ``Preset.control_seeds`` pair-aware random-dims controls (a null distribution) and three
# energy-matched ones; the λ-massive set is scored once beside it, without controls.
ENERGY_SEEDS = (0, 1, 2)
# the curves on the episodes (Preset.gap_every): packed rows for the Q/K norms, and the gap's
# episodes and random-control seeds (a gap point costs about 2 + GAP_SEEDS passes over them)
CONCENTRATION_ROWS, GAP_EPISODES, GAP_SEEDS = 4, 100, 5


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


def _conditions(res: dict[str, Any]) -> dict[str, ConditionResult]:
    """The conditions of a ``disrupt`` result, typed."""
    return {c: ConditionResult.from_json(c, e) for c, e in res["conditions"].items()}


def _kind_accuracy(entry: ConditionResult, tasks: list, kind: str) -> dict[str, Any] | None:
    """A condition's greedy exact match over the tasks of one kind, with per-item hits."""
    scored = [entry.score(t.name, "exact") for t in tasks if t.kind == kind]
    n = sum(s.n for s in scored if s)
    k = sum(s.correct for s in scored if s)
    hits = "".join(s.hits or "" for s in scored if s)  # per item, in task order
    return counted(k, n) | {"hits": hits} if n else None


def disruption_gap(model, tok, episodes, seeds: int = GAP_SEEDS) -> dict[str, Any]:
    """Contextual exact match of the model, its massive-dims edit and ``seeds`` pair-aware random
    controls on ``episodes``; ``gap`` = mean random − massive (the edit's extra damage)."""
    tasks = _tasks_of(episodes)
    res = disrupt(model, tok, tasks, DisruptConfig(seeds=tuple(range(seeds)), energy_seeds=(),
                                                   ablations=False), progress=False)
    acc = {c: _kind_accuracy(e, tasks, "contextual")["accuracy"] for c, e in _conditions(res).items()}
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
                for cond, entry in _conditions(res).items()}
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
        cached = read_json_state(ref_path, REMEASURE) if ref_path.is_file() else None
        if isinstance(cached, dict) and cached.get("model") == reference:
            ref = ReferenceMeasurement.from_json(cached)
        else:
            ref = measure_reference(reference, preset.shared.data.seq_len)
            write_json(ref_path, ref.to_json(), indent=None)
    results = collect(preset, out, ref, git_sha())
    record = results.to_json()
    write_json(out / "results.json", record)
    # local: matplotlib, only drawing needs it
    from mvjax.analysis.experiments.rope_cause.plots import all_figures

    figures = all_figures(results, out / "figures", svg=preset.figures_svg)
    write_report(results, figures, out)
    return results
