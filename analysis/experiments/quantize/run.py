"""The paper's Section 5 claim, run: does quantizing Q/K (the KV cache) or W_q/W_k hurt contextual
tasks, and does keeping the massive dims in full precision protect them?

    results = quantize(model, tokenizer, tasks, QuantizeConfig())

Conditions (every one scored on the same items as ``analysis.experiments.disrupt.run``, plus held-out perplexity):
  act_int{b}_{granularity}_{pre|post}[_keep_massive]
      symmetric fake quantization of Q and K at every layer, before (``q``/``k``) or after RoPE
      (``q_rot``/``k_rot``), one scale per tensor / token-head / channel; ``_keep_massive`` leaves
      the top-k dims per head (k = 1) in full precision and out of the scale; ``_keep_random``
      (the control beside it) keeps as many uniformly random other dims per head. Every token is
      quantized, continuations with the prompt's scales (``phases="all"``: a quantized KV cache
      holds every key).
  w_int{b}[_protect]
      round-to-nearest of W_q and W_k, one scale per output row (HF layout; columns of mvjax's
      in×out kernel); ``_protect`` keeps the rows that produce the massive pre-RoPE dims in full
      precision; ``_protect_random`` as many random other rows (the control).

The engine only: the claims' rules are in ``analysis.experiments.quantize.claims``, the claims, table, figures
and report.md in ``analysis.experiments.quantize.report`` (the same layout as disrupt).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from flax import nnx

from mvjax.analysis.dims import PromptEnergy, random_dims, select_massive, stacked
from mvjax.analysis.experiments.disrupt.run import Scoring, prepare_scoring, run_tasks
from mvjax.analysis.evaluate import RANKINGS
from mvjax.analysis.resume import Checkpoint
from mvjax.analysis.runner import Planned, run_conditions
from mvjax.data.tasks.base import Task
from mvjax.interventions import GRANULARITIES, QuantSpec, empty_masks, intervention
from mvjax.mesh import fetch, put_like
from mvjax.sites import QK_SITES

SIDES = {"pre": ("q", "k"), "post": ("q_rot", "k_rot")}
ALL_SITES = QK_SITES


@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    bits: tuple[int, ...] = (8, 4)
    granularities: tuple[str, ...] = GRANULARITIES
    sides: tuple[str, ...] = ("pre", "post")
    weight_bits: tuple[int, ...] = (8, 4)
    top_k: int = 1  # massive dims per head kept in full precision
    keep_random: bool = True  # beside every keep-massive setting: keep k random non-massive dims
    random_seed: int = 0  # the keep-random control's draw
    ranking: str = "sum"  # sum | per_token
    batch_size: int = 8

    def __post_init__(self) -> None:
        for b in (*self.bits, *self.weight_bits):
            QuantSpec(b)  # validates
        for g in self.granularities:
            QuantSpec(8, g)
        if self.ranking not in RANKINGS:
            raise ValueError(f"ranking={self.ranking!r} is invalid: use one of {RANKINGS}")
        bad = [s for s in self.sides if s not in SIDES]
        if bad:
            raise ValueError(f"side(s) {bad} are invalid: use pre and/or post")


def rtn_rows(kernel_INxOUT: np.ndarray, bits: int, keep_cols: np.ndarray | None = None) -> np.ndarray:
    """Symmetric round-to-nearest with one scale per output unit (a column of the in×out kernel,
    a row of HF's out×in weight); columns in ``keep_cols`` stay as they are."""
    w = np.asarray(kernel_INxOUT, np.float32)
    qmax = QuantSpec(bits).qmax
    scale = np.abs(w).max(axis=0, keepdims=True) / qmax
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.round(w / safe), -qmax, qmax) * safe
    if keep_cols is not None:
        q[:, keep_cols] = w[:, keep_cols]
    return q


def quantized_weights(model, bits: int, protect: dict[str, np.ndarray] | None = None):
    """A copy of ``model`` with W_q and W_k rounded; ``protect`` = {"q": L×H×D, "k": L×KV×D}
    bool masks of the output dims kept in full precision."""
    m = nnx.clone(model)
    for layer, block in enumerate(m.layers):
        for site, proj in (("q", block.attn.q_proj), ("k", block.attn.k_proj)):
            keep = None if protect is None else np.flatnonzero(protect[site][layer].reshape(-1))
            kernel = proj.kernel[...]  # on a mesh: gathered, rounded, placed back as it was
            proj.kernel[...] = put_like(rtn_rows(fetch(kernel), bits, keep), kernel)
    return m


KEPT = {False: "", "massive": "_keep_massive", "random": "_keep_random"}  # activation name suffixes
PROTECTED = {False: "", "massive": "_protect", "random": "_protect_random"}  # weight name suffixes


def kept_variants(config: QuantizeConfig) -> tuple:
    """What each setting keeps in full precision: nothing, the massive dims, k random others."""
    return (False, "massive", "random") if config.keep_random else (False, "massive")


def activation_conditions(config: QuantizeConfig, bits: int):
    """(name, record, granularity, side, kept) of every activation condition at ``bits``; kept is
    False, "massive" or "random" (``kept_variants``)."""
    for g in config.granularities:
        for side in config.sides:
            for kept in kept_variants(config):
                name = f"act_int{bits}_{g}_{side}" + KEPT[kept]
                yield name, {"group": "activation", "bits": bits, "granularity": g, "side": side,
                             "keep_massive": kept == "massive", "keep_random": kept == "random"}, g, side, kept


def weight_condition(model, sc: Scoring, bits: int, protect: dict[str, np.ndarray] | None, name: str,
                     batch_size: int) -> dict:
    """Score a copy of the model with W_q/W_k rounded (the rows of ``protect`` — the massive dims,
    or the keep-random control's — kept in full precision; None: none kept)."""
    cfg = model.cfg
    qmodel = quantized_weights(model, bits, None if protect is None else {"q": protect["q"], "k": protect["k"]})
    qsc = sc.on(qmodel, batch_size)
    runs = run_tasks(qsc.scorer, sc.tasks, sc.encoded, PromptEnergy(frozenset(ALL_SITES)), name, sc.progress)
    return qsc.evaluate(intervention(cfg, empty_masks(cfg, ALL_SITES)), name, runs)


def random_kept(massive: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """The keep-random control: per site and head, as many uniformly random dims as the massive
    selection keeps there (the same k), never a massive dim (``analysis.dims.random_dims``)."""
    return {s: random_dims(m, seed + 1000 * i) for i, (s, m) in enumerate(sorted(massive.items()))}


def quantize(model, tokenizer, tasks: list[Task], config: QuantizeConfig = QuantizeConfig(),
             ppl_rows: np.ndarray | None = None, progress: bool = True,
             checkpoint: Checkpoint | None = None) -> dict[str, Any]:
    """Score ``tasks`` (and perplexity) for the original model and every quantization condition;
    ``checkpoint`` keeps finished conditions (``analysis.resume``)."""
    cfg, ck = model.cfg, checkpoint or Checkpoint(None, "")
    sc, energy = prepare_scoring(model, tokenizer, tasks, ALL_SITES, config.batch_size, config.ranking,
                                 ppl_rows, progress, ck)
    massive = {s: select_massive(np.sqrt(stacked(energy, s, "sumsq")), "topk", config.top_k)
               for s in ALL_SITES}
    none = empty_masks(cfg, ALL_SITES)
    kept_dims = {"massive": massive, "random": random_kept(massive, config.random_seed)}
    # every condition; the fewest bits first (the settings most likely to break something), so a
    # run stopped early has them
    plan = [Planned("original", {"group": "original", "description": "unmodified model"},
                    functools.partial(sc.evaluate, intervention(cfg, none), "original", sc.base))]
    for bits in sorted(set(config.bits) | set(config.weight_bits)):
        acts = activation_conditions(config, bits) if bits in config.bits else ()
        for name, record, g, side, kept in acts:
            masks = dict(none)
            for s in SIDES[side]:
                masks[s] = ~kept_dims[kept][s] if kept else np.ones_like(massive[s])
            probe = intervention(cfg, masks, "quant", quant=QuantSpec(bits, g), phases="all")
            plan.append(Planned(name, record, functools.partial(sc.evaluate, probe, name)))
        for kept in (kept_variants(config) if bits in config.weight_bits else ()):
            name = f"w_int{bits}" + PROTECTED[kept]
            plan.append(Planned(name, {"group": "weight", "bits": bits, "protect_massive_rows": kept == "massive",
                                       "protect_random_rows": kept == "random"},
                                functools.partial(weight_condition, model, sc, bits,
                                                  kept_dims[kept] if kept else None, name, config.batch_size)))

    def assemble(conditions: dict) -> dict[str, Any]:
        return quantize_record(config, sc, massive, cfg, conditions)

    return assemble(run_conditions(plan, ck, assemble))


def quantize_record(config: QuantizeConfig, sc: Scoring, massive: dict, cfg,
                    conditions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON-ready result of ``quantize`` for the conditions scored so far."""
    return {
        "config": dataclasses.asdict(config),
        "ranking": config.ranking,
        "definition": {"massive_kept": f"top-{config.top_k} dims per head by M = sqrt(sum x^2) over "
                       "the scored prompts, at the quantized site (pre-RoPE q/k for weights)",
                       "activation": "symmetric fake quantization, scale = absmax of the quantized "
                       "entries of the group / (2^(b-1)-1); every token, continuations with the "
                       "prompt's tensor/channel scales", "weight": "per-output-row symmetric RTN of "
                       "W_q and W_k", "ranking": f"choices ranked by {config.ranking} of their token "
                       "log-likelihoods"},
        "tasks": sc.task_records(),
        "dims": {f"{what}_kept": {s: {str(l): [[int(h), int(d)] for h, d in zip(*np.nonzero(m[s][l]))]
                                      for l in range(cfg.num_layers)} for s in ALL_SITES}
                 for what, m in (("massive", massive), ("random", random_kept(massive, config.random_seed)))
                 if what == "massive" or config.keep_random},
        "conditions": conditions,
    }
