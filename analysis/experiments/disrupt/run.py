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
import functools
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mvjax.analysis.controls import DRAW, excluded_dims, model_pairs, pair_aware_random, record
from mvjax.analysis.dims import (PromptEnergy, add_energy, as_entries, energy_matched, energy_ratio,
                           lowest_norm, massive_layers, random_dims, restrict_layers,
                           select_massive, stacked)
from mvjax.analysis.evaluate import (RANKINGS, Scorer, choice_scores, encode_task, longest_continuation,
                               perplexity, score_task)
from mvjax.analysis.massive import MassiveDefinition
from mvjax.analysis.records import KEEP0  # a main condition's twin with position 0 kept (DisruptConfig.position0)
from mvjax.analysis.resume import Checkpoint, in_plan_order
from mvjax.analysis.runner import Planned, run_conditions
from mvjax.data.tasks.base import Task, rank_correct
from mvjax.data.tasks.lengths import depth_bin
from mvjax.interventions import EDIT_SITES, METHODS, PHASE_RULES, empty_masks, intervention
from mvjax.prompt_selection import prompt_selected

STATISTICS = ("pooled", "prompt")
CONTROL_DRAWS = (DRAW, "uniform")
STATISTICS_TEXT = {
    "pooled": "pooled over all scored prompts: one selection (and one set of control dims) for every prompt",
    "prompt": "per prompt (the authors' protocol): each prompt's own dims by its own M, every token "
              "of it (BOS included unless kept) replaced by its own mean",
}


@dataclasses.dataclass(frozen=True)
class DisruptConfig:
    method: str = "mean"  # mean | zero
    q_site: str = "q_rot"  # the authors edit after RoPE
    k_site: str = "k_rot"
    selection: str = "topk"  # topk | lambda
    top_k: int = 1
    lam: float = 5.0
    mean_over: str = "head"
    statistics: str = "pooled"  # pooled | prompt (each prompt's own dims, the authors' protocol)
    seeds: tuple[int, ...] = (0, 1, 2)  # random-dims control
    # pair-aware (analysis.controls) | uniform (the first draw); "" = the statistics' own: pair-aware
    # when pooled, uniform per prompt (drawn inside the forward by mvjax.prompt_selection)
    control_draw: str = ""
    energy_seeds: tuple[int, ...] = (0, 1, 2)  # energy-matched control
    chosen_layers: tuple[int, ...] | None = None  # None: layers with a λ-massive Q or K entry
    sweep_k: tuple[int, ...] = ()  # top-k sweep: massive and lowest-norm at each k
    sweep_layers: bool = False  # layer sweep: massive dims in the early / middle / late third only
    ablations: bool = True  # first-token-kept, Q only, K only, chosen layers
    position0: bool = False  # every main condition twice: position 0 (the sink) edited and kept
    ranking: str = "sum"  # sum | per_token: how choices are ranked (per_token = length-normalised)
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
        if self.statistics not in STATISTICS:
            raise ValueError(f"statistics={self.statistics!r} is invalid: use one of {STATISTICS}")
        if self.statistics == "prompt" and self.selection == "lambda" and self.mean_over != "head":
            raise ValueError("per-prompt λ selection takes the mean over the head: use "
                             "mean_over='head' or statistics='pooled'")
        if self.ranking not in RANKINGS:
            raise ValueError(f"ranking={self.ranking!r} is invalid: use one of {RANKINGS}")
        if not self.control_draw:
            object.__setattr__(self, "control_draw", DRAW if self.statistics == "pooled" else "uniform")
        if self.statistics == "prompt" and self.control_draw == DRAW:
            raise ValueError("the per-prompt statistics draw their random dims uniformly inside the "
                             "forward: the pair-aware draw needs statistics='pooled' (--statistics pooled)")
        if self.control_draw not in CONTROL_DRAWS:
            raise ValueError(f"control_draw={self.control_draw!r} is invalid: use one of {CONTROL_DRAWS}")
        if not self.seeds:
            raise ValueError("give at least one seed for the random-dims control")
        if any(not (isinstance(s, int) and s >= 0) for s in (*self.seeds, *self.energy_seeds)):
            raise ValueError(f"seeds {(*self.seeds, *self.energy_seeds)} are invalid: use non-negative integers")
        if any(not (isinstance(k, int) and k >= 1) for k in (self.top_k, *self.sweep_k)):
            raise ValueError(f"top-k values {(self.top_k, *self.sweep_k)} are invalid: use positive integers")

    @property
    def definition(self) -> MassiveDefinition:
        return MassiveDefinition(lam=self.lam, mean_over=self.mean_over, top_k=self.top_k)

    @property
    def sites(self) -> tuple[str, str]:
        return self.q_site, self.k_site


@dataclasses.dataclass(frozen=True)
class Condition:
    """One edit, as a rule (``mvjax.prompt_selection.RULES``) applied to the pooled statistics
    (one mask for every prompt) or to each prompt's own."""

    name: str
    group: str  # original | massive | control | ablation | sweep
    rule: str = "massive"  # massive | lowest | random | energy; ignored for original
    top_k: int | None = None  # None: the config's selection
    layers: tuple[int, ...] | None = None  # None: every layer
    edit: tuple[bool, bool] = (True, True)  # Q, K
    keep_first: bool = False
    seed: int = 0
    description: str = ""


def thirds(n_layers: int) -> dict[str, tuple[int, ...]]:
    """Early / middle / late thirds of the layers (the middle takes the remainder)."""
    a = n_layers // 3
    return {"early": tuple(range(a)), "middle": tuple(range(a, n_layers - a)),
            "late": tuple(range(n_layers - a, n_layers))}


def plan_conditions(config: DisruptConfig, layers: tuple[int, ...], n_layers: int,
                    rule_text: str) -> list[Condition]:
    """Every condition of a run, in the order they are scored (the paper's table first, so a run
    stopped early has it): original, massive, controls; then the sweeps (massive dims first) and
    the ablations."""
    C = Condition
    conds = [C("original", "original", description="unmodified model"),
             C("massive", "massive", description=f"Q and K massive dims ({rule_text}), all layers"),
             C("lowest_norm", "control", "lowest",
               description="the lowest-M dims per head, same count (the authors' control)")]
    conds += [C(f"random_s{seed}", "control", "random", seed=seed,
                description=f"random non-massive dims, same count, seed {seed}") for seed in config.seeds]
    conds += [C(f"energy_matched_s{seed}", "control", "energy", seed=seed,
                description=f"random non-massive dims holding the massive dims' removable energy, seed {seed}")
              for seed in config.energy_seeds]
    if config.position0:  # each main condition followed by its twin that leaves position 0 alone
        conds = [conds[0]] + [x for c in conds[1:] for x in (c, dataclasses.replace(
            c, name=f"{KEEP0}{c.name}", keep_first=True,
            description=c.description + "; position 0 (the sink) kept"))]
    ablations = [C("first_token_kept", "ablation", keep_first=True,
                   description="massive dims edited everywhere except position 0 (the sink)"),
                 C("q_only", "ablation", edit=(True, False), description="massive dims of Q only"),
                 C("k_only", "ablation", edit=(False, True), description="massive dims of K only"),
                 C("chosen_layers", "ablation", layers=tuple(layers),
                   description=f"massive dims in layers {list(layers)} only")]
    ks = sorted(set(config.sweep_k) - {config.top_k if config.selection == "topk" else 0})
    conds += [C(f"sweep_top{k}_massive", "sweep", top_k=k, description=f"top-{k} dims per head by M")
              for k in ks]
    if config.sweep_layers:
        conds += [C(f"sweep_layers_{part}", "sweep", layers=ls,
                    description=f"massive dims in the {part} third (layers {ls[0]}–{ls[-1]}) only")
                  for part, ls in thirds(n_layers).items() if ls]
    conds += [C(f"sweep_top{k}_lowest", "sweep", "lowest", top_k=k,
                description=f"the {k} lowest-M dims per head") for k in ks]
    if config.position0:  # the factor's keep0_massive is the first-token-kept ablation
        ablations = [c for c in ablations if c.name != "first_token_kept"]
    return conds + (ablations if config.ablations else [])


def pooled_masks(cond: Condition, M: dict, E: dict, config: DisruptConfig,
                 pairs: list[list[int | None]]) -> dict:
    """{site: L×H×D} of a condition from the pooled statistics (one selection for all prompts).
    ``pairs[l]``: each dim's RoPE pair at layer l (``analysis.controls.layer_pairs``)."""
    selection, k = (config.selection, config.top_k) if cond.top_k is None else ("topk", cond.top_k)
    q, kk = config.sites
    sel = {s: select_massive(M[s], selection, k, config.definition) for s in config.sites}
    marked = {s: select_massive(M[s], "lambda", definition=config.definition) for s in config.sites}
    pair_aware = config.control_draw == DRAW
    if cond.rule == "random" and pair_aware:
        masks = dict(zip(config.sites, pair_aware_random(sel[q], sel[kk], marked[q], marked[kk], pairs,
                                                         cond.seed)))
    else:
        masks = {}
        for i, s in enumerate(config.sites):
            if cond.rule == "massive":
                masks[s] = sel[s]
            elif cond.rule == "lowest":
                masks[s] = lowest_norm(M[s], sel[s])
            elif cond.rule == "random":
                masks[s] = random_dims(sel[s], cond.seed + 1000 * i)
            else:
                masks[s] = energy_matched(E[s], sel[s], cond.seed + 1000 * i, excluded=(
                    excluded_dims(sel[s], marked[s], pairs) if pair_aware else None))
    return {s: (m if cond.layers is None else restrict_layers(m, cond.layers)) & on
            for (s, m), on in zip(masks.items(), cond.edit)}


def condition_probe(cond: Condition, cfg, M: dict, E: dict, config: DisruptConfig):
    """The probe of one condition: fixed masks (pooled) or a per-prompt selection (prompt)."""
    if config.statistics == "pooled":
        return intervention(cfg, pooled_masks(cond, M, E, config, model_pairs(cfg)), config.method,
                            keep_first=cond.keep_first, phases=config.phases)
    topk = cond.top_k is not None
    return prompt_selected(cfg, config.sites, cond.rule, top_k=cond.top_k if topk else config.top_k,
                           lam=config.lam, layers=cond.layers, edit=cond.edit,
                           keep_first=cond.keep_first, seed=cond.seed, method=config.method,
                           selection="topk" if topk else config.selection, phases=config.phases)


def statistics_info(energy: dict, cfg, config: DisruptConfig, conds: list[Condition]) -> dict:
    """What the pooled statistics select (and, pooled, what each control removes), and how often a
    prompt's own top-1 dim per head is the pooled one."""
    M = {s: np.sqrt(stacked(energy, s, "sumsq")) for s in config.sites}
    E = {s: stacked(energy, s, "centered" if config.method == "mean" else "sumsq") for s in config.sites}
    sel = {s: select_massive(M[s], config.selection, config.top_k, config.definition) for s in M}
    top1 = {s: select_massive(M[s], "topk", 1) for s in M}
    agree = {s: float(stacked(energy, s, "top1")[top1[s]].sum()
                      / max(stacked(energy, s, "top1").sum(), 1)) for s in M}
    info = {"removable_energy": "centered" if config.method == "mean" else "sumsq",
            "massive_dims": {s: as_entries(sel[s]) for s in sel},
            "energy_share_of_massive": {s: float(E[s][sel[s]].sum() / max(E[s].sum(), 1e-300)) for s in sel},
            "prompt_top1_is_pooled_top1": agree}
    if config.statistics == "pooled":
        by_name = {c.name: c for c in conds if c.group == "control" and not c.name.startswith(KEEP0)}
        controls = {n: pooled_masks(c, M, E, config, model_pairs(cfg)) for n, c in by_name.items()}
        info["energy_ratio_to_massive"] = {n: {s: energy_ratio(E[s], m[s], sel[s]) for s in sel}
                                           for n, m in controls.items()}
        info["control_dims"] = {n: {s: as_entries(m[s]) for s in sel} for n, m in controls.items()}
        info["control_draws"] = {n: record(by_name[n].rule, m, E, by_name[n].seed if by_name[n].rule
                                           in ("random", "energy") else None, as_entries,
                                           draw=config.control_draw)
                                 for n, m in controls.items()}
    return info


def chosen_layers(energy: dict, cfg, config: DisruptConfig) -> tuple[int, ...]:
    """The config's layers, else those with a λ-massive Q or K entry in the pooled statistics."""
    layers = config.chosen_layers
    if layers is None:
        M = {s: np.sqrt(stacked(energy, s, "sumsq")) for s in config.sites}
        layers = tuple(sorted(set().union(*(massive_layers(m, config.definition) for m in M.values()))))
    bad = [l for l in layers if not 0 <= l < cfg.num_layers]
    if bad:
        raise ValueError(f"chosen layers {bad} are out of range: the model has {cfg.num_layers}")
    return tuple(layers)


def known_items(encoded, ll, hits, ranking: str = "sum") -> dict[str, list[int]]:
    """The items the unmodified model gets right, per metric: {"rank": ..., "exact": ...}."""
    return {"rank": [i for i, e in enumerate(encoded)
                     if e.n_choices and rank_correct(choice_scores(e, ll[i], ranking), e.answer)],
            "exact": [i for i, e in enumerate(encoded) if e.target is not None and hits[i][e.target]]}


def run_tasks(scorer, tasks: list[Task], encoded: dict, probe, desc: str, progress: bool,
              on_records=None) -> dict:
    """Every task's (log-likelihoods, greedy hits) under ``probe``, behind one progress bar (a
    condition is 20-50 min of one core on the full preset)."""
    bar = tqdm(total=sum(len(e) for e in encoded.values()), desc=desc, disable=not progress, unit="item")
    runs = {t.name: scorer.run(encoded[t.name], probe, on_records, bar) for t in tasks}
    bar.close()
    return runs


def baseline_pass(scorer, tasks: list[Task], encoded: dict, sites, progress: bool,
                  ranking: str = "sum"):
    """Score the unmodified model and gather ``Energy`` at ``sites`` in the same pass:
    (runs, energy, known items per task and metric)."""
    energy: dict | None = None

    def keep_energy(records, valid):
        nonlocal energy
        energy = add_energy(energy, records)

    runs = run_tasks(scorer, tasks, encoded, PromptEnergy(frozenset(sites)), "original + statistics",
                     progress, keep_energy)
    keep = {t.name: known_items(encoded[t.name], *runs[t.name], ranking) for t in tasks}
    return runs, energy, keep


def task_scores(task: Task, items, ll, hits, known: dict, ranking: str) -> tuple[dict, dict]:
    """(scores on every item, scores on the items the unmodified model gets right)."""
    every = score_task(items, ll, hits, task.rank_chance, ranking=ranking, exact_chance=task.exact_chance)
    on_known = {m: score_task(items, ll, hits, task.rank_chance, known[m], ranking,
                              task.exact_chance).get(m) for m in every if m in known}
    return every, {m: v for m, v in on_known.items() if v is not None and v["n"]}


def evaluate_condition(scorer, tasks: list[Task], encoded: dict, keep: dict, probe, ppl_rows,
                       name: str, progress: bool, runs: dict | None = None,
                       ranking: str = "sum") -> dict[str, Any]:
    """{"tasks": {task: scores on every item}, "tasks_known": {task: scores on the items the
    unmodified model gets right}, "perplexity", "first_token_attention"} of one condition. The
    probe is applied to the tasks, and with ``sink=True`` to the held-out rows; ``runs`` reuses
    already computed task runs."""
    if runs is None:
        runs = run_tasks(scorer, tasks, encoded, probe, name, progress)
    scores = {t.name: task_scores(t, encoded[t.name], *runs[t.name], keep[t.name], ranking) for t in tasks}
    entry: dict[str, Any] = {"tasks": {t: s[0] for t, s in scores.items()},
                             "tasks_known": {t: s[1] for t, s in scores.items()}}
    if ppl_rows is not None:
        entry["perplexity"], entry["first_token_attention"] = perplexity(
            scorer.model, ppl_rows, dataclasses.replace(probe, sink=True))
    return entry


def prompt_lengths(task: Task, encoded: list) -> dict[str, Any]:
    """A task's prompt lengths in tokens (BOS included: what the model sees), per item and as a
    range, and, where its items hide a key, each key's depth and depth bin (the length and depth
    confounds are read from these)."""
    n = [len(e.prompt) for e in encoded]
    out: dict[str, Any] = {"min_prompt_tokens": min(n), "max_prompt_tokens": max(n), "prompt_tokens": n}
    if task.depths is not None:
        out["key_depth"] = [round(d, 4) for d in task.depths]
        out["key_depth_bin"] = [depth_bin(d) for d in task.depths]
    return out


def task_records(tasks: list[Task], encoded: dict, base: dict, keep: dict, ranking: str) -> dict:
    """Per task: kind, description, n, chance levels, how many items the original gets right."""
    return {t.name: {"kind": t.kind, "description": t.description, "n_items": len(t.items),
                     **prompt_lengths(t, encoded[t.name]),
                     "n_known": {m: len(v) for m, v in keep[t.name].items()},
                     "rank_chance": t.rank_chance, "exact_chance": t.exact_chance,
                     "baseline_all_items": score_task(encoded[t.name], *base[t.name], t.rank_chance,
                                                      ranking=ranking, exact_chance=t.exact_chance)}
            for t in tasks}


def rule_text(config: DisruptConfig) -> str:
    rule = (f"top-{config.top_k} dims per head by M" if config.selection == "topk"
            else f"M > {config.lam} x mean of M over the {config.mean_over}")
    return rule + (", each prompt's own (its M)" if config.statistics == "prompt"
                   else ", one selection from the pooled M of all scored prompts")


@dataclasses.dataclass(frozen=True)
class Scoring:
    """What every condition of a run is scored with and against: the scorer, the tasks and their
    encoded items, the items the unmodified model gets right (``keep``) and its runs (``base``),
    the held-out perplexity rows and the ranking. Built once (``prepare_scoring``) and shared by
    disrupt and quantize, instead of seven arguments travelling through every call."""

    scorer: Scorer
    tasks: list[Task]
    encoded: dict
    keep: dict
    base: dict
    ppl_rows: np.ndarray | None = None
    ranking: str = "sum"
    progress: bool = True

    def evaluate(self, probe, name: str, runs: dict | None = None) -> dict[str, Any]:
        """One condition's scores under ``probe`` (``evaluate_condition``)."""
        return evaluate_condition(self.scorer, self.tasks, self.encoded, self.keep, probe, self.ppl_rows,
                                  name, self.progress, runs, self.ranking)

    def on(self, model, batch_size: int) -> "Scoring":
        """The same items, known sets and rows scored on another model (e.g. quantized weights)."""
        return dataclasses.replace(self, scorer=Scorer(model, batch_size, longest_continuation(self.encoded)))

    def task_records(self) -> dict:
        return task_records(self.tasks, self.encoded, self.base, self.keep, self.ranking)


def prepare_scoring(model, tokenizer, tasks: list[Task], sites, batch_size: int, ranking: str,
                    ppl_rows: np.ndarray | None, progress: bool, ck: Checkpoint) -> tuple[Scoring, dict]:
    """Encode ``tasks`` and score the unmodified model, gathering the energy at ``sites`` in the
    same pass (the ``baseline`` piece of ``ck``): (the scoring bundle, the energy)."""
    if not tasks:
        raise ValueError("no tasks to score: give at least one task")
    encoded = {t.name: encode_task(tokenizer, t) for t in tasks}
    scorer = Scorer(model, batch_size, longest_continuation(encoded))
    base, energy, keep = ck.get("baseline", lambda: baseline_pass(scorer, tasks, encoded, sites, progress, ranking))
    return Scoring(scorer, tasks, encoded, keep, base, ppl_rows, ranking, progress), energy


def disrupt(model, tokenizer, tasks: list[Task], config: DisruptConfig = DisruptConfig(),
            ppl_rows: np.ndarray | None = None, progress: bool = True,
            checkpoint: Checkpoint | None = None) -> dict[str, Any]:
    """Score ``tasks`` (and perplexity on ``ppl_rows``, N×T BOS-first token rows) for the
    original model, the massive-dims disruption and every control. Returns a JSON-ready dict.
    ``checkpoint`` keeps finished conditions, so a killed run resumes (``analysis.resume``)."""
    cfg, ck = model.cfg, checkpoint or Checkpoint(None, "")
    sc, energy = prepare_scoring(model, tokenizer, tasks, config.sites, config.batch_size, config.ranking,
                                 ppl_rows, progress, ck)
    layers, text = chosen_layers(energy, cfg, config), rule_text(config)
    conds = plan_conditions(config, layers, cfg.num_layers, text)
    M = {s: np.sqrt(stacked(energy, s, "sumsq")) for s in config.sites}
    E = {s: stacked(energy, s, "centered" if config.method == "mean" else "sumsq") for s in config.sites}

    def entry(cond: Condition) -> dict:
        return {"group": cond.group, "description": cond.description, "keep_first": cond.keep_first,
                "rule": cond.rule, "top_k": cond.top_k or config.top_k, "layers": cond.layers}

    def compute(cond: Condition) -> dict[str, Any]:
        if cond.group == "original":
            return sc.evaluate(intervention(cfg, empty_masks(cfg, config.sites)), cond.name, sc.base)
        return sc.evaluate(condition_probe(cond, cfg, M, E, config), cond.name)

    def every_layer(cond: Condition) -> bool:  # the massive condition itself: nothing new to score
        return cond.layers is not None and len(set(cond.layers)) == cfg.num_layers and cond.top_k is None

    def assemble(conditions: dict) -> dict[str, Any]:
        return disrupt_record(config, sc, energy, cfg, conds, layers, conditions)

    by_name = {c.name: c for c in conds}
    plan = [Planned(c.name, entry(c), functools.partial(compute, c)) for c in conds]
    results = run_conditions(plan, ck, assemble, skip=lambda p: every_layer(by_name[p.name]))
    for cond in filter(every_layer, conds):
        if "massive" in results and ck.wanted(cond.name):
            same = {k: v for k, v in results["massive"].items() if k not in entry(cond)}
            results[cond.name] = entry(cond) | same | {"same_as": "massive"}
    return assemble(in_plan_order(results, by_name))


def disrupt_record(config: DisruptConfig, sc: Scoring, energy: dict, cfg, conds: list[Condition],
                   layers: tuple[int, ...], conditions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON-ready result of ``disrupt`` for the conditions scored so far."""
    text = rule_text(config)
    info = statistics_info(energy, cfg, config, conds) | {"rule": text, "chosen_layers": list(layers)}
    return {
        "config": dataclasses.asdict(config),
        "statistics": config.statistics,
        "definition": {**config.definition.to_dict(), "selection": config.selection,
                       "selected_by": text, "statistics": STATISTICS_TEXT[config.statistics],
                       "edit": f"{config.method} at {config.q_site}/{config.k_site}, phases={config.phases}"},
        "ranking": config.ranking,
        "tasks": sc.task_records(),
        "dims": info,
        "model_layers": cfg.num_layers,
        "conditions": conditions,
    }
