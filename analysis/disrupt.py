"""The paper's central experiment on any mvjax model: disrupt the massive Q/K dims and see what the
model can still do — with the controls the paper lacked.

    results = disrupt(model, tokenizer, tasks, DisruptConfig())

1. One unmodified pass over every task prompt scores the original model and measures, per
   (layer, head, dim), the energy of Q and K at the edited sites (``analysis.dims.PromptEnergy``).
2. The massive dims are chosen from M = sqrt(Σx²) (top-k per head, k = 1 by default as in the
   authors' code, or the λ rule of ``analysis.massive``), and the controls from the same statistics.
3. Every condition is one ``mvjax.interventions.Intervention`` (same structure, different masks,
   so they share one compilation) scored on the same items, plus held-out perplexity and the
   attention mass on the first token per layer.

Parametric tasks count only the items the unmodified model ranks right.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from analysis.dims import (PromptEnergy, add_energy, as_entries, energy_matched, energy_ratio,
                           lowest_norm, massive_layers, random_dims, restrict_layers,
                           select_massive, stacked)
from analysis.evaluate import Scorer, encode_task, perplexity, score_task
from analysis.massive import MassiveDefinition
from mvjax.data.tasks.base import Task, rank_correct
from mvjax.interventions import EDIT_SITES, METHODS, PHASE_RULES, intervention


@dataclasses.dataclass(frozen=True)
class DisruptConfig:
    method: str = "mean"  # mean | zero
    q_site: str = "q_rot"  # the authors edit after RoPE
    k_site: str = "k_rot"
    selection: str = "topk"  # topk | lambda
    top_k: int = 1
    lam: float = 5.0
    mean_over: str = "head"
    seeds: tuple[int, ...] = (0, 1, 2)  # random-dims control
    energy_seeds: tuple[int, ...] = (0, 1, 2)  # energy-matched control
    chosen_layers: tuple[int, ...] | None = None  # None: layers with a λ-massive Q or K entry
    phases: str = "prefill"
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.method not in METHODS or self.method == "quant":
            raise ValueError(f"method={self.method!r} is invalid here: use mean or zero "
                             "(quantization is 'mvjax experiment quantize')")
        for s, want in ((self.q_site, "q"), (self.k_site, "k")):
            if s not in EDIT_SITES or not s.startswith(want):
                raise ValueError(f"site {s!r} is invalid: use {want} or {want}_rot")
        if self.q_site.endswith("_rot") != self.k_site.endswith("_rot"):
            raise ValueError("edit Q and K at the same side of RoPE: q,k or q_rot,k_rot")
        if self.phases not in PHASE_RULES:
            raise ValueError(f"phases={self.phases!r} is invalid: use one of {PHASE_RULES}")
        if not self.seeds:
            raise ValueError("give at least one seed for the random-dims control")

    @property
    def definition(self) -> MassiveDefinition:
        return MassiveDefinition(lam=self.lam, mean_over=self.mean_over, top_k=self.top_k)


@dataclasses.dataclass(frozen=True)
class Condition:
    name: str
    group: str  # original | massive | control | ablation
    masks: dict  # {q_site: L×H×D, k_site: L×KV×D}
    keep_first: bool = False
    description: str = ""


def build_conditions(energy: dict, cfg, config: DisruptConfig) -> tuple[list[Condition], dict]:
    """The massive selection and every control, from the prompts' statistics."""
    qs, ks = config.q_site, config.k_site
    M = {s: np.sqrt(stacked(energy, s, "sumsq")) for s in (qs, ks)}
    removable = "centered" if config.method == "mean" else "sumsq"
    E = {s: stacked(energy, s, removable) for s in (qs, ks)}
    sel = {s: select_massive(M[s], config.selection, config.top_k, config.definition) for s in (qs, ks)}
    none = {s: np.zeros_like(sel[s]) for s in (qs, ks)}
    layers = config.chosen_layers
    if layers is None:
        layers = tuple(sorted(set(massive_layers(M[qs], config.definition))
                              | set(massive_layers(M[ks], config.definition))))
    bad = [l for l in layers if not 0 <= l < cfg.num_layers]
    if bad:
        raise ValueError(f"chosen layers {bad} are out of range: the model has {cfg.num_layers}")
    rule = (f"top-{config.top_k} dims per head by M" if config.selection == "topk"
            else f"M > {config.lam} x mean of M over the {config.mean_over}")
    conds = [
        Condition("original", "original", none, description="unmodified model"),
        Condition("massive", "massive", sel, description=f"Q and K massive dims ({rule}), all layers"),
        Condition("first_token_kept", "ablation", sel, True,
                  "massive dims edited everywhere except position 0 (the sink)"),
        Condition("q_only", "ablation", {qs: sel[qs], ks: none[ks]}, description="massive dims of Q only"),
        Condition("k_only", "ablation", {qs: none[qs], ks: sel[ks]}, description="massive dims of K only"),
        Condition("chosen_layers", "ablation", {s: restrict_layers(sel[s], layers) for s in sel},
                  description=f"massive dims in layers {list(layers)} only"),
        Condition("lowest_norm", "control", {s: lowest_norm(M[s], sel[s]) for s in sel},
                  description="the lowest-M dims per head, same count (the authors' control)"),
    ]
    conds += [Condition(f"random_s{seed}", "control",
                        {s: random_dims(sel[s], seed + 1000 * i) for i, s in enumerate(sel)},
                        description=f"random non-massive dims, same count, seed {seed}")
              for seed in config.seeds]
    conds += [Condition(f"energy_matched_s{seed}", "control",
                        {s: energy_matched(E[s], sel[s], seed + 1000 * i) for i, s in enumerate(sel)},
                        description=f"random non-massive dims holding the massive dims' removable "
                        f"energy ({removable}), seed {seed}")
              for seed in config.energy_seeds]
    info = {
        "rule": rule, "removable_energy": removable, "chosen_layers": list(layers),
        "massive_dims": {s: as_entries(sel[s]) for s in sel},
        "energy_share_of_massive": {s: float(E[s][sel[s]].sum() / max(E[s].sum(), 1e-300)) for s in sel},
        "energy_ratio_to_massive": {c.name: {s: energy_ratio(E[s], c.masks[s], sel[s]) for s in sel}
                                    for c in conds if c.group == "control"},
        "control_dims": {c.name: {s: as_entries(c.masks[s]) for s in sel}
                         for c in conds if c.group == "control"},
    }
    return conds, info


def counted_items(task: Task, encoded, ll, hits) -> list[int]:
    """Parametric tasks: the items the unmodified model knows — ranks right when the item has
    choices, else answers by greedy exact match; others: all items."""
    if task.kind != "parametric":
        return list(range(len(encoded)))
    return [i for i, e in enumerate(encoded)
            if (rank_correct(ll[i][:e.n_choices], e.answer) if e.n_choices
                else e.target is not None and hits[i][e.target])]


def baseline_pass(scorer, tasks: list[Task], encoded: dict, sites, progress: bool):
    """Score the unmodified model and gather ``Energy`` at ``sites`` in the same pass:
    (runs, energy, counted items per task)."""
    from tqdm.auto import tqdm

    energy: dict | None = None

    def keep_energy(records, valid):
        nonlocal energy
        energy = add_energy(energy, records)

    bar = tqdm(total=sum(len(e) for e in encoded.values()), desc="original + statistics",
               disable=not progress, unit="item")
    runs = {t.name: scorer.run(encoded[t.name], PromptEnergy(frozenset(sites)), keep_energy, bar)
            for t in tasks}
    bar.close()
    keep = {t.name: counted_items(t, encoded[t.name], *runs[t.name]) for t in tasks}
    return runs, energy, keep


def evaluate_condition(scorer, tasks: list[Task], encoded: dict, keep: dict, probe, ppl_rows,
                       name: str, progress: bool, runs: dict | None = None) -> dict[str, Any]:
    """{"tasks": {task: scores}, "perplexity", "first_token_attention"} of one condition. The
    probe (an ``Intervention``) is applied to the tasks, and with ``sink=True`` to the held-out
    rows; ``runs`` reuses already computed task runs."""
    from tqdm.auto import tqdm

    if runs is None:
        bar = tqdm(total=sum(len(e) for e in encoded.values()), desc=name, disable=not progress,
                   unit="item")
        runs = {t.name: scorer.run(encoded[t.name], probe, progress=bar) for t in tasks}
        bar.close()
    entry: dict[str, Any] = {"tasks": {t.name: score_task(encoded[t.name], *runs[t.name],
                                                          t.rank_chance, keep[t.name])
                                       for t in tasks}}
    if ppl_rows is not None:
        entry["perplexity"], entry["first_token_attention"] = perplexity(
            scorer.model, ppl_rows, dataclasses.replace(probe, sink=True))
    return entry


def disrupt(model, tokenizer, tasks: list[Task], config: DisruptConfig = DisruptConfig(),
            ppl_rows: np.ndarray | None = None, progress: bool = True) -> dict[str, Any]:
    """Score ``tasks`` (and perplexity on ``ppl_rows``, N×T BOS-first token rows) for the
    original model, the massive-dims disruption and every control. Returns a JSON-ready dict."""
    if not tasks:
        raise ValueError("no tasks to score: give at least one task")
    cfg = model.cfg
    scorer = Scorer(model, config.batch_size)
    encoded = {t.name: encode_task(tokenizer, t) for t in tasks}
    base, energy, keep = baseline_pass(scorer, tasks, encoded, (config.q_site, config.k_site), progress)
    conds, info = build_conditions(energy, cfg, config)

    results: dict[str, Any] = {}
    for cond in conds:
        probe = intervention(cfg, cond.masks, config.method, keep_first=cond.keep_first,
                             phases=config.phases)
        entry = {"group": cond.group, "description": cond.description, "keep_first": cond.keep_first}
        results[cond.name] = entry | evaluate_condition(
            scorer, tasks, encoded, keep, probe, ppl_rows, cond.name, progress,
            runs=base if cond.name == "original" else None)

    return {
        "config": dataclasses.asdict(config),
        "definition": {**config.definition.to_dict(), "selection": config.selection,
                       "selected_by": info["rule"], "statistics": "pooled over the scored prompts",
                       "edit": f"{config.method} at {config.q_site}/{config.k_site}, phases={config.phases}"},
        "tasks": {t.name: {"kind": t.kind, "description": t.description, "n_items": len(t.items),
                           "n_counted": len(keep[t.name]), "rank_chance": t.rank_chance,
                           "baseline_all_items": score_task(encoded[t.name], *base[t.name],
                                                            t.rank_chance)} for t in tasks},
        "dims": info,
        "model_layers": cfg.num_layers,
        "conditions": results,
    }
