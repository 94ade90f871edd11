"""The paper's Section 5 claim, run: does quantizing Q/K (the KV cache) or W_q/W_k hurt contextual
tasks, and does keeping the massive dims in full precision protect them?

    results = quantize(model, tokenizer, tasks, QuantizeConfig())

Conditions (every one scored on the same items as ``analysis.disrupt``, plus held-out perplexity):
  act_int{b}_{granularity}_{pre|post}[_keep_massive]
      symmetric fake quantization of Q and K at every layer, before (``q``/``k``) or after RoPE
      (``q_rot``/``k_rot``), one scale per tensor / token-head / channel; ``_keep_massive`` leaves
      the top-k dims per head (k = 1) in full precision and out of the scale. Every token is
      quantized, continuations with the prompt's scales (``phases="all"``: a quantized KV cache
      holds every key).
  w_int{b}[_protect]
      round-to-nearest of W_q and W_k, one scale per output row (HF layout; columns of mvjax's
      in×out kernel); ``_protect`` keeps the rows that produce the massive pre-RoPE dims in full
      precision.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from analysis.claims import Claim, Outcome, claim_lines
from analysis.dims import select_massive, stacked
from analysis.disrupt import baseline_pass, evaluate_condition
from analysis.evaluate import Scorer, encode_task, score_task
from mvjax.data.tasks.base import Task
from mvjax.interventions import GRANULARITIES, QuantSpec, empty_masks, intervention
from mvjax.provenance import provenance_lines
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
    batch_size: int = 8

    def __post_init__(self) -> None:
        for b in (*self.bits, *self.weight_bits):
            QuantSpec(b)  # validates
        for g in self.granularities:
            QuantSpec(8, g)
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
            proj.kernel[...] = jnp.asarray(rtn_rows(np.asarray(proj.kernel[...]), bits, keep))
    return m


def quantize(model, tokenizer, tasks: list[Task], config: QuantizeConfig = QuantizeConfig(),
             ppl_rows: np.ndarray | None = None, progress: bool = True) -> dict[str, Any]:
    """Score ``tasks`` (and perplexity) for the original model and every quantization condition."""
    if not tasks:
        raise ValueError("no tasks to score: give at least one task")
    cfg = model.cfg
    scorer = Scorer(model, config.batch_size)
    encoded = {t.name: encode_task(tokenizer, t) for t in tasks}
    base, energy, keep = baseline_pass(scorer, tasks, encoded, ALL_SITES, progress)
    massive = {s: select_massive(np.sqrt(stacked(energy, s, "sumsq")), "topk", config.top_k)
               for s in ALL_SITES}
    none = empty_masks(cfg, ALL_SITES)
    results: dict[str, Any] = {}
    results["original"] = {"group": "original", "description": "unmodified model"} | evaluate_condition(
        scorer, tasks, encoded, keep, intervention(cfg, none), ppl_rows, "original", progress, base)
    for g in config.granularities:
        for bits in config.bits:
            for side in config.sides:
                for kept in (False, True):
                    masks = dict(none)
                    for s in SIDES[side]:
                        masks[s] = ~massive[s] if kept else np.ones_like(massive[s])
                    name = f"act_int{bits}_{g}_{side}" + ("_keep_massive" if kept else "")
                    probe = intervention(cfg, masks, "quant", quant=QuantSpec(bits, g), phases="all")
                    results[name] = {"group": "activation", "bits": bits, "granularity": g,
                                     "side": side, "keep_massive": kept} | evaluate_condition(
                        scorer, tasks, encoded, keep, probe, ppl_rows, name, progress)
    for bits in config.weight_bits:
        for kept in (False, True):
            name = f"w_int{bits}" + ("_protect" if kept else "")
            qmodel = quantized_weights(model, bits, {"q": massive["q"], "k": massive["k"]} if kept else None)
            qscorer = Scorer(qmodel, config.batch_size)
            from analysis.dims import PromptEnergy

            runs = {t.name: qscorer.run(encoded[t.name], PromptEnergy(frozenset(ALL_SITES))) for t in tasks}
            results[name] = {"group": "weight", "bits": bits, "protect_massive_rows": kept} | evaluate_condition(
                qscorer, tasks, encoded, keep, intervention(cfg, none), ppl_rows, name, progress, runs)
            del qmodel, qscorer
    return {
        "config": dataclasses.asdict(config),
        "definition": {"massive_kept": f"top-{config.top_k} dims per head by M = sqrt(sum x^2) over "
                       "the scored prompts, at the quantized site (pre-RoPE q/k for weights)",
                       "activation": "symmetric fake quantization, scale = absmax of the quantized "
                       "entries of the group / (2^(b-1)-1); every token, continuations with the "
                       "prompt's tensor/channel scales", "weight": "per-output-row symmetric RTN of "
                       "W_q and W_k"},
        "tasks": {t.name: {"kind": t.kind, "description": t.description, "n_items": len(t.items),
                           "n_counted": len(keep[t.name]), "rank_chance": t.rank_chance,
                           "baseline_all_items": score_task(encoded[t.name], *base[t.name], t.rank_chance)}
                  for t in tasks},
        "dims": {"massive_kept": {s: {str(l): [[int(h), int(d)] for h, d in zip(*np.nonzero(massive[s][l]))]
                                      for l in range(cfg.num_layers)} for s in ALL_SITES}},
        "conditions": results,
    }


def _mean_acc(result: dict, cond: str, tasks: list[str], metric: str | None = None) -> float | None:
    """Mean accuracy (points) of ``cond`` over ``tasks`` (each by its own metric unless given)."""
    from analysis.disrupt_report import cell, metric_of

    xs = [cell(result, cond, t, metric or metric_of(result, t)) for t in tasks]
    xs = [x["accuracy"] for x in xs if x is not None]
    return 100 * float(np.mean(xs)) if xs else None


def _f1(x: float | None) -> str:
    return f"{x if x is not None else float('nan'):.1f}"


def keeping_helps(name: str, kept: str) -> Claim:
    """Claim: quantization ``name`` with the massive dims (rows) kept in full precision (``kept``)
    scores higher on the contextual tasks than without."""
    def check(result: dict) -> Outcome:
        ctx = [t for t, v in result["tasks"].items() if v["kind"] == "contextual"]
        par = [t for t, v in result["tasks"].items() if v["kind"] != "contextual"]
        acc = {k: [_mean_acc(result, c, tasks) for c in ("original", name, kept)]
               for k, tasks in (("contextual", ctx), ("parametric", par))}
        acc["contextual_exact"] = [_mean_acc(result, c, ctx, "exact") for c in ("original", name, kept)]
        (orig_c, a, b), (orig_p, pa, pb) = acc["contextual"], acc["parametric"]
        ea, eb, eo = acc["contextual_exact"][1], acc["contextual_exact"][2], acc["contextual_exact"][0]
        e = result["conditions"][name]
        ppl = (f"; perplexity {e.get('perplexity', float('nan')):.2f} → "
               f"{result['conditions'][kept].get('perplexity', float('nan')):.2f}") if e.get("perplexity") else ""
        exact = "" if ea is None else f"; greedy exact {ea:.1f} → {eb:.1f} (original {eo:.1f})"
        held = None if a is None or b is None else b - a > 0
        return Outcome({"original / quantized / kept": acc}, held,
                       f"mean contextual rank accuracy {_f1(a)} → {_f1(b)} (original {_f1(orig_c)}); "
                       f"parametric {_f1(pa)} → {_f1(pb)} (original {_f1(orig_p)}){exact}{ppl}")
    return Claim(f"keep_{name}", f"{name}: keeping the massive dims in full precision helps "
                 "contextual tasks", "higher mean contextual rank accuracy", check)


def quantize_claims(result: dict) -> list[Claim]:
    """Per quantization setting that has a kept twin: does keeping the massive dims (rows) in full
    precision help the contextual tasks?"""
    todo = []
    for name, e in result["conditions"].items():
        if name == "original" or name.endswith(("_keep_massive", "_protect")):
            continue
        kept = name + ("_keep_massive" if e["group"] == "activation" else "_protect")
        if kept in result["conditions"]:
            todo.append(keeping_helps(name, kept))
    return [c.apply(result) for c in todo]


def quant_table(result: dict) -> str:
    """Rows = conditions, columns = tasks (rank accuracy % / greedy exact %, n) and perplexity."""
    from analysis.disrupt_report import _acc, _pct, cell, metrics_of

    tasks = list(result["tasks"])
    head = [f"{t} ({' / '.join(metrics_of(result, t))}; n={result['tasks'][t]['n_counted']})" for t in tasks]
    rows = ["| condition | " + " | ".join(head) + " | perplexity |", "|---" * (len(tasks) + 2) + "|"]
    for name, e in result["conditions"].items():
        ppl = e.get("perplexity")
        cells = [" / ".join(_pct(cell(result, name, t, m)) for m in metrics_of(result, t)) for t in tasks]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {'–' if ppl is None else f'{ppl:.2f}'} |")
    return "\n".join(rows)


def write_quantize_report(result: dict, out, title: str):
    """Bars per task with every condition side by side, and report.md with the table."""
    from analysis.disrupt_report import condition_figure

    fig = condition_figure(result, out, title)
    lines = [f"# {title}", "", "## Definition (fixed before the run)", ""]
    lines += [f"- {k}: {v}" for k, v in result["definition"].items()]
    lines += [*provenance_lines(result.get("provenance", {})), "- Config in results.json.", "",
              "## Accuracy (%) per condition (parametric tasks: items the unmodified model gets right)",
              "", quant_table(result), "", "## Claims", ""]
    lines += claim_lines(result["claims"]) + ["", f"![{fig}]({fig})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
