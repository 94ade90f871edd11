"""The paper's Section 5 claim, run: does quantizing Q/K (the KV cache) or W_q/W_k hurt contextual
tasks, and does keeping the massive dims in full precision protect them?

    results = quantize(model, tokenizer, tasks, QuantizeConfig())

Conditions (every one scored on the same items as ``analysis.disrupt``, plus held-out perplexity):
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
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from flax import nnx

from mvjax.analysis.claims import Claim, Outcome, claim_lines
from mvjax.analysis.dims import select_massive, stacked
from mvjax.analysis.disrupt import baseline_pass, evaluate_condition, run_tasks, task_records
from mvjax.analysis.evaluate import RANKINGS, Scorer, encode_task, longest_continuation
from mvjax.analysis.resume import Checkpoint, in_plan_order
from mvjax.data.tasks.base import Task
from mvjax.interventions import GRANULARITIES, QuantSpec, empty_masks, intervention
from mvjax.mesh import fetch, put_like
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


def weight_condition(model, config, bits: int, kept: bool, massive: dict, tasks, encoded, keep,
                     ppl_rows, name: str, progress: bool) -> dict:
    """Score a copy of the model with W_q/W_k rounded (the rows of ``massive`` — the massive dims,
    or the keep-random control's — protected when ``kept``)."""
    from mvjax.analysis.dims import PromptEnergy

    cfg = model.cfg
    qmodel = quantized_weights(model, bits, {"q": massive["q"], "k": massive["k"]} if kept else None)
    qscorer = Scorer(qmodel, config.batch_size, longest_continuation(encoded))
    runs = run_tasks(qscorer, tasks, encoded, PromptEnergy(frozenset(ALL_SITES)), name, progress)
    return evaluate_condition(qscorer, tasks, encoded, keep, intervention(cfg, empty_masks(cfg, ALL_SITES)),
                              ppl_rows, name, progress, runs, config.ranking)


def random_kept(massive: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """The keep-random control: per site and head, as many uniformly random dims as the massive
    selection keeps there (the same k), never a massive dim (``analysis.dims.random_dims``)."""
    from mvjax.analysis.dims import random_dims

    return {s: random_dims(m, seed + 1000 * i) for i, (s, m) in enumerate(sorted(massive.items()))}


def quantize(model, tokenizer, tasks: list[Task], config: QuantizeConfig = QuantizeConfig(),
             ppl_rows: np.ndarray | None = None, progress: bool = True,
             checkpoint: Checkpoint | None = None) -> dict[str, Any]:
    """Score ``tasks`` (and perplexity) for the original model and every quantization condition;
    ``checkpoint`` keeps finished conditions (``analysis.resume``)."""
    if not tasks:
        raise ValueError("no tasks to score: give at least one task")
    cfg, ck = model.cfg, checkpoint or Checkpoint(None, "")
    encoded = {t.name: encode_task(tokenizer, t) for t in tasks}
    scorer = Scorer(model, config.batch_size, longest_continuation(encoded))
    base, energy, keep = ck.get("baseline", lambda: baseline_pass(scorer, tasks, encoded, ALL_SITES,
                                                                  progress, config.ranking))
    massive = {s: select_massive(np.sqrt(stacked(energy, s, "sumsq")), "topk", config.top_k)
               for s in ALL_SITES}
    none = empty_masks(cfg, ALL_SITES)
    kept_dims = {"massive": massive, "random": random_kept(massive, config.random_seed)}
    # (name, record, compute) of every condition; the fewest bits first (the settings most likely
    # to break something), so a run stopped early has them
    plan = [("original", {"group": "original", "description": "unmodified model"},
             lambda: evaluate_condition(scorer, tasks, encoded, keep, intervention(cfg, none), ppl_rows,
                                        "original", progress, base, config.ranking))]
    for bits in sorted(set(config.bits) | set(config.weight_bits)):
        acts = activation_conditions(config, bits) if bits in config.bits else ()
        for name, record, g, side, kept in acts:
            masks = dict(none)
            for s in SIDES[side]:
                masks[s] = ~kept_dims[kept][s] if kept else np.ones_like(massive[s])
            probe = intervention(cfg, masks, "quant", quant=QuantSpec(bits, g), phases="all")
            plan.append((name, record, functools.partial(
                evaluate_condition, scorer, tasks, encoded, keep, probe, ppl_rows, name, progress,
                ranking=config.ranking)))
        for kept in (kept_variants(config) if bits in config.weight_bits else ()):
            name = f"w_int{bits}" + PROTECTED[kept]
            plan.append((name, {"group": "weight", "bits": bits, "protect_massive_rows": kept == "massive",
                                "protect_random_rows": kept == "random"},
                         functools.partial(weight_condition, model, config, bits, bool(kept),
                                           kept_dims.get(kept, massive), tasks, encoded, keep,
                                           ppl_rows, name, progress)))
    by_name = {name: (record, compute) for name, record, compute in plan}
    results: dict[str, Any] = {}

    def score(name: str) -> None:
        record, compute = by_name[name]
        results[name] = record | ck.get(name, compute)
        ck.note("partial.json", quantize_record(config, tasks, encoded, base, keep, massive, cfg,
                                                in_plan_order(results, by_name)))

    ck.check_names(by_name)
    ck.each(list(by_name), score)  # helpers share the plan (analysis.resume)
    return quantize_record(config, tasks, encoded, base, keep, massive, cfg, in_plan_order(results, by_name))


def quantize_record(config: QuantizeConfig, tasks: list[Task], encoded: dict, base: dict, keep: dict,
                    massive: dict, cfg, results: dict) -> dict[str, Any]:
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
        "tasks": task_records(tasks, encoded, base, keep, config.ranking),
        "dims": {f"{what}_kept": {s: {str(l): [[int(h), int(d)] for h, d in zip(*np.nonzero(m[s][l]))]
                                      for l in range(cfg.num_layers)} for s in ALL_SITES}
                 for what, m in (("massive", massive), ("random", random_kept(massive, config.random_seed)))
                 if what == "massive" or config.keep_random},
        "conditions": results,
    }


def kind_point(result: dict, cond: str, kind: str,
                metric: str | None = None) -> tuple[float, float, float, int] | None:
    """A kind's pooled accuracy (every item; each task's main metric unless ``metric``), its Wilson
    interval and n; None when the kind has no item."""
    from mvjax.analysis.disrupt_rules import pooled_kind
    from mvjax.data.tasks.base import wilson_interval

    k, n, _ = pooled_kind(result, cond, kind, metric=metric)
    return (k / n, *wilson_interval(k, n), n) if n else None


def _kind_ci(result: dict, cond: str, kind: str,
             metric: str | None = None) -> tuple[str, tuple[float, float] | None]:
    """``kind_point`` as text, and its interval."""
    p = kind_point(result, cond, kind, metric)
    if p is None:
        return "–", None
    acc, lo, hi, n = p
    return f"{100 * acc:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] (n={n})", (lo, hi)


# the second reading: passkey's 4-choice ranking is 100% under every condition, so under the main
# metrics 600 of the 1,000 contextual items cannot move; greedy exact match on every task can.
# Both readings were written before any full-preset quantization was scored.
READINGS = {None: ("", "each task's main metric, rank where it has choices"),
            "exact": ("_exact", "greedy exact match on every task")}


# what the figure and the README table show of each setting: (kind, metric) per label
KIND_READINGS = {"contextual, greedy exact": ("contextual", "exact"),
                 "contextual, main metric": ("contextual", None), "parametric, main metric": ("parametric", None)}


def keeping_helps(name: str, kept: str, metric: str | None = None) -> Claim:
    """Claim: quantization ``name`` with the massive dims (rows) kept in full precision (``kept``)
    scores higher on the contextual tasks than without — decided only when the pooled contextual
    accuracies' 95% intervals are separated (one flipped item never decides). ``metric``: None
    pools each task's main metric, "exact" greedy exact match."""
    suffix, how = READINGS[metric]

    def check(result: dict) -> Outcome:
        ci = functools.partial(_kind_ci, result, metric=metric)
        (a, ia), (b, ib) = ci(name, "contextual"), ci(kept, "contextual")
        orig_c = ci("original", "contextual")[0]
        pa, pb = ci(name, "parametric")[0], ci(kept, "parametric")[0]
        e = result["conditions"][name]
        ppl = (f"; perplexity {e.get('perplexity', float('nan')):.2f} → "
               f"{result['conditions'][kept].get('perplexity', float('nan')):.2f}") if e.get("perplexity") else ""
        held = None if ia is None or ib is None else ib[0] > ia[1]
        return Outcome({"contextual_ci95": {"quantized": ia, "kept": ib}}, held,
                       f"pooled contextual accuracy ({how}) {a} → {b} (original {orig_c}); "
                       f"parametric {pa} → {pb}{ppl}")
    return Claim(f"keep_{name}{suffix}", f"{name}: keeping the massive dims in full precision helps "
                 f"contextual tasks ({how})", "the pooled contextual accuracy's 95% interval with the "
                 "massive dims kept lies wholly above the one without", check)


def massive_beats_random(name: str, kept: str, random: str) -> Claim:
    """Claim: keeping the massive dims helps more than keeping as many random other dims (the
    keep-random control) — contextual tasks by greedy exact, intervals separated."""
    def check(result: dict) -> Outcome:
        (a, ia), (b, ib) = (_kind_ci(result, c, "contextual", "exact") for c in (random, kept))
        held = None if ia is None or ib is None else ib[0] > ia[1]
        return Outcome({"contextual_ci95": {"random_kept": ia, "massive_kept": ib}}, held,
                       f"pooled contextual accuracy (greedy exact) keeping k random dims {a}, keeping "
                       f"the massive dims {b}")
    return Claim(f"massive_not_random_{name}", f"{name}: keeping the massive dims helps contextual "
                 "tasks more than keeping the same number of random other dims", "the pooled "
                 "contextual greedy-exact accuracy's 95% interval with the massive dims kept lies "
                 "wholly above the one with k random non-massive dims kept", check)


GGUF_NOTE = ("The weights are a {quant} GGUF dequantized to fp32 ({source}): W_q/W_k already sit on a "
             "4-bit grid, so int4 round-to-nearest of W_q/W_k re-rounds already-rounded weights onto "
             "another grid (per output row) and int8 is nearly lossless by construction; the "
             "activation (Q/K) settings are not affected.")


def quantize_notes(result: dict) -> list[str]:
    """What the reader should know beside the claims: weights that were quantized before this
    experiment quantized them (a GGUF source, as provenance records it)."""
    source = result.get("provenance", {}).get("model_source", "")
    for quant in ("Q4_1", "Q4_K_M", "Q4_0", "Q8_0"):
        if quant in source:
            return [GGUF_NOTE.format(quant=quant, source=source)]
    return []


def quantize_claims(result: dict) -> list[Claim]:
    """Per quantization setting that has a kept twin: does keeping the massive dims (rows) in full
    precision help the contextual tasks? Once by each task's main metric, once by greedy exact;
    and, where the keep-random control was scored, does it help more than keeping random dims?"""
    out = [keeping_helps(name, kept, metric).apply(result)
           for name, kept in kept_pairs(result) for metric in READINGS]
    for name, kept in kept_pairs(result):
        random = name + ("_keep_random" if kept.endswith("_keep_massive") else "_protect_random")
        if random in result["conditions"]:
            out.append(massive_beats_random(name, kept, random).apply(result))
    return out


def kept_pairs(result: dict) -> list[tuple[str, str]]:
    """(setting, its twin with the massive dims kept) for every setting scored with its twin."""
    pairs = []
    for name, e in result["conditions"].items():
        if name == "original" or name.endswith(("_keep_massive", "_protect", "_keep_random", "_protect_random")):
            continue
        kept = name + ("_keep_massive" if e["group"] == "activation" else "_protect")
        if kept in result["conditions"]:
            pairs.append((name, kept))
    return pairs


def keeping_figure(result: dict, out, title: str) -> str | None:
    """keeping_massive.png: each setting without and with the massive dims kept, pooled by kind
    (contextual by greedy exact and by main metric, parametric by main metric), original dotted."""
    from mvjax.analysis.plots import paired_intervals

    pairs = kept_pairs(result)
    if not pairs:
        return None
    panels = {label: {name: (kind_point(result, name, kind, m), kind_point(result, kept, kind, m))
                      for name, kept in pairs} for label, (kind, m) in KIND_READINGS.items()}
    ref = {label: p[0] for label, (kind, m) in KIND_READINGS.items()
           if (p := kind_point(result, "original", kind, m)) is not None}
    paired_intervals(panels, ("quantized", "massive dims kept"), out, "keeping_massive", title, ref)
    return "keeping_massive.png"


def quant_table(result: dict) -> str:
    """Rows = conditions, columns = tasks (rank accuracy % / greedy exact %, n) and perplexity."""
    from mvjax.analysis.disrupt_report import _pct, cell, metrics_of

    tasks = list(result["tasks"])
    head = [f"{t} ({' / '.join(metrics_of(result, t))}; n={result['tasks'][t]['n_items']})" for t in tasks]
    rows = ["| condition | " + " | ".join(head) + " | perplexity |", "|---" * (len(tasks) + 2) + "|"]
    for name, e in result["conditions"].items():
        ppl = e.get("perplexity")
        cells = [" / ".join(_pct(cell(result, name, t, m)) for m in metrics_of(result, t)) for t in tasks]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {'–' if ppl is None else f'{ppl:.2f}'} |")
    return "\n".join(rows)


def write_quantize_report(result: dict, out, title: str):
    """Bars per task with every condition side by side, and report.md with the table."""
    from mvjax.analysis.disrupt_report import condition_figure

    fig = condition_figure(result, out, title)
    lines = [f"# {title}", "", "## Definition (fixed before the run)", ""]
    lines += [f"- {k}: {v}" for k, v in result["definition"].items()]
    lines += [*provenance_lines(result.get("provenance", {})), "- Config in results.json.", "",
              "## Accuracy (%) per condition (every item of every task)",
              "", quant_table(result), "", "## Claims", ""]
    lines += [f"- {n}" for n in result.get("notes", [])]
    lines += claim_lines(result["claims"]) + ["", f"![{fig}]({fig})", ""]
    kept_fig = keeping_figure(result, out, title + ": keeping the massive dims")
    if kept_fig:
        lines += [f"![{kept_fig}]({kept_fig})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
