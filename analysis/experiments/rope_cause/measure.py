"""Turn a rope-cause run directory into ``results.json``: per arm, the concentration metrics over
training (layers × logged steps) from the training logs, the final model's ``analyze`` numbers and
task accuracies, a reference model measured the same way, and the claim verdicts
(``analysis.experiments.rope_cause.claims``), as the typed records of
``analysis.experiments.rope_cause.results``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from mvjax.analysis.analyze import RESULTS_FILE, Analysis, make_sequences
from mvjax.analysis.experiments.rope_cause.claims import claims
from mvjax.analysis.experiments.rope_cause.results import (ArmResult, ReferenceMeasurement, ReferenceResult,
                                                        RopeCauseResults)
from mvjax.analysis.retrieval_curve import EPISODE_KEY, GAP_KEY, episode_point, first_step_at
from mvjax.analysis.sample import sample_texts
from mvjax.analysis.summaries import DEFINITIONS, summarize_norms, training_curves
from mvjax.atomic import read_json_state
from mvjax.config import ModelConfig, to_plain
from mvjax.load import load_pretrained
from mvjax.train.config import ExperimentConfig
from mvjax.train.metrics import make_concentration_fn, read_metrics

# How to mend a cut state file of a run: measured again on --resume.
REMEASURE = "delete it and rerun with --resume (it is measured again)"


def _sink(mass_LxH) -> list[float]:
    return [float(np.mean(h)) for h in mass_LxH]


RETRIEVED = 0.8  # greedy exact on the held-out contextual episodes at which an arm "has learned"


def retrieval_curve(metrics: list[dict[str, Any]], tokens_per_step: int, lam: float = 5.0
                    ) -> dict[str, Any]:
    """Held-out retrieval over training (``probe`` records of the training log), and the first
    logged step at which all contextual episodes together reach ``RETRIEVED`` exact (None: never).
    Where the probe logged them: the Q/K concentration on the episodes at every point
    (``episode_*`` keys) and the massive-vs-random disruption gap at its steps (``gaps``)."""
    logs = [r for r in metrics if "probe" in r]
    points, gaps, chance = [], [], {}
    for r in logs:
        step = int(r["step"])
        point = {"step": step, "tokens": step * tokens_per_step}
        for task, v in r["probe"].items():
            if task in (EPISODE_KEY, GAP_KEY):
                continue
            point |= {f"{task}_{key}": v[key] for key in ("exact", "answer_nll")}
            if "chance" in v:
                chance[task] = v["chance"]
        if EPISODE_KEY in r["probe"]:
            point |= episode_point(r["probe"][EPISODE_KEY], lam)
        points.append(point)
        if GAP_KEY in r["probe"]:
            gaps.append({"step": step, "tokens": step * tokens_per_step} | r["probe"][GAP_KEY])
    step = first_step_at(points, "all_exact", RETRIEVED)
    return {"points": points, "level": RETRIEVED, "first_step": step,
            "first_tokens": None if step is None else step * tokens_per_step,
            "chance": chance, "gaps": gaps}


def _final_counts(analyzed_sites: dict[str, list[dict[str, Any]]], rotary: bool) -> dict[str, Any]:
    return {site: {
        "n_massive": sum(m["n_massive"] for m in layers),
        "n_massive_rotating": sum(m["n_massive_rotating"] for m in layers),
        "n_massive_unrotated": sum(m["n_massive"] - m["n_massive_rotating"] for m in layers)
        if rotary else None,
        "n_massive_low_freq": sum(m["n_massive_low_freq"] for m in layers)}
        for site, layers in analyzed_sites.items()}


def arm_result(arm_dir: Path) -> ArmResult:
    exp = ExperimentConfig.load(arm_dir / "config.yaml")
    cfg: ModelConfig = exp.model
    metrics = read_metrics(arm_dir / "metrics.jsonl")
    analyzed = Analysis.from_json(read_json_state(arm_dir / "analyze" / RESULTS_FILE,
                                                  REMEASURE.replace("delete it", "delete its folder")))
    norms = analyzed.norms()
    logs = [r for r in metrics if "norms" in r]
    evals = [r["eval_loss"] for r in metrics if "eval_loss" in r and r["eval_loss"] is not None]
    return ArmResult(
        positional=to_plain(cfg.layer_positional(0)),
        head_dim=cfg.head_dim, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        curves=training_curves(metrics, cfg, exp.data.batch_size * exp.data.seq_len),
        final=summarize_norms(norms, cfg),
        final_M={s: norms[s] for s in ("q_rot", "k_rot") if s in norms},
        final_analyze_summary=analyzed.summary,
        final_counts=_final_counts(analyzed.sites,
                                   bool(cfg.layer_positional(0).rotary_dims(cfg.head_dim))),
        final_first_token_mass=_sink(logs[-1]["first_token_mass"]) if logs else None,
        final_eval_loss=evals[-1] if evals else None,
        tasks=read_json_state(arm_dir / "tasks.json", REMEASURE),
        disruption=read_json_state(arm_dir / "disrupt.json", REMEASURE),
        config=exp.to_dict(),
        retrieval=retrieval_curve(metrics, exp.data.batch_size * exp.data.seq_len))


def measure_reference(model: str, seq_len: int, n_rows: int = 4) -> ReferenceMeasurement:
    """A pretrained model measured like the arms: norms and first-token mass of every layer, on
    the embedded analysis sample (BOS-first windows), through the same jitted probe."""
    net, tok = load_pretrained(model)
    if tok is None:
        raise ValueError(f"reference model {model} has no tokenizer: save one into its directory")
    length = min(512, net.cfg.max_seq_len, max(seq_len, 128))
    rows = make_sequences(tok, sample_texts(), length, n_rows * length)
    graphdef, params = nnx.split(net, nnx.Param)
    out = jax.device_get(make_concentration_fn(graphdef)(nnx.to_pure_dict(params), rows))
    return ReferenceMeasurement(
        model=model, config=net.cfg.to_dict(), n_tokens=int(rows.size), seq_len=length,
        norms={k: np.asarray(v).tolist() for k, v in out["norms"].items()},
        first_token_mass=np.asarray(out["first_token_mass"]).tolist())


def reference_result(ref: ReferenceMeasurement) -> ReferenceResult:
    cfg = ModelConfig.from_dict(ref.config)
    return ReferenceResult(ref.model, cfg.head_dim, cfg.num_layers, cfg.num_heads,
                           ref.n_tokens, summarize_norms(ref.norms, cfg), _sink(ref.first_token_mass))


def collect(preset, out: Path, reference: ReferenceMeasurement | None, sha: str | None) -> RopeCauseResults:
    results = RopeCauseResults(
        sha, to_plain(preset), DEFINITIONS, {arm: arm_result(out / "arms" / arm) for arm in preset.arms},
        None if reference is None else reference_result(reference))
    return dataclasses.replace(results, claims=claims(results))
