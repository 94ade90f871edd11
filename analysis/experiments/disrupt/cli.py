"""``mvjax experiment disrupt``: disrupt the massive Q/K dims (and the controls) on the task set;
write results.json, bar charts and report.md (``analysis.experiments.disrupt.run`` holds the library function)."""

from __future__ import annotations

import argparse
import dataclasses

from mvjax.analysis.experiments.disrupt.confound_report import confound_claims, confound_notes, write_confound_report
from mvjax.analysis.experiments.disrupt.run import DisruptConfig, disrupt
from mvjax.analysis.experiments.disrupt.report import disrupt_claims, disrupt_notes, write_disrupt_report
from mvjax.analysis.experiments.spec import Experiment, Report, RunSpec, planned, unplanned

SWEEP_K = (1, 2, 4)  # full preset: top-k sweep (and the early / middle / late layer sweep)
CONFOUND_SEEDS = tuple(range(10))  # confounds preset: pair-aware random control seeds (units of its null)


@dataclasses.dataclass(frozen=True)
class DisruptFlags:
    """disrupt's own flags, as given (argparse's dests; ``disrupt_config`` parses them)."""

    method: str = planned("mean")
    sites: str = planned("q_rot,k_rot")
    selection: str = planned("topk")
    top_k: int = planned(1)
    lam: float = planned(5.0, flag="--lambda")
    seeds: str = planned("0,1,2")
    layers: str | None = planned(None)
    phases: str = planned("prefill")
    statistics: str = planned("pooled")
    ranking: str = planned("sum")
    # which conditions are scored: each one's numbers are the same in any subset, so a run resumes
    # the other's finished conditions
    conditions: str = unplanned("all")


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=("mean", "zero"), default="mean")
    p.add_argument("--sites", default="q_rot,k_rot", help="Q and K site: q_rot,k_rot (default, "
                   "after RoPE as the authors) or q,k")
    p.add_argument("--selection", choices=("topk", "lambda"), default="topk")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--lambda", dest="lam", type=float, default=5.0)
    p.add_argument("--seeds", default="0,1,2", help="random-dims control seeds")
    p.add_argument("--layers", default=None,
                   help="comma-separated chosen layers (default: layers with a λ-massive entry)")
    p.add_argument("--phases", choices=("prefill", "all"), default="prefill",
                   help="edit only the prompt (default) or also every scored continuation token")
    p.add_argument("--statistics", choices=("pooled", "prompt"), default="pooled",
                   help="pooled: one selection from all scored prompts' statistics (default); "
                   "prompt: each prompt's own top-k dims by its own M, replaced by its own mean "
                   "(the authors' protocol)")
    p.add_argument("--ranking", choices=("sum", "per_token"), default="sum",
                   help="rank choices by summed (default) or per-token mean log-likelihood; both "
                   "are in results.json, the tables use this one")
    p.add_argument("--conditions", choices=("all", "table"), default="all",
                   help="all (default): the paper's table, the top-k and layer sweeps (full preset) "
                   "and the ablations; table: original, massive and the controls only. Which "
                   "conditions are scored does not change any one's numbers, so a run resumes "
                   "the other's finished conditions")


def _ints(text: str, what: str) -> tuple[int, ...]:
    """Comma-separated non-negative integers (seeds, layer indices), checked before any work."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = (-1,)
    if any(v < 0 for v in values):
        raise ValueError(f"--{what} {text!r} is invalid: give comma-separated non-negative integers")
    return values


def disrupt_config(spec: RunSpec) -> DisruptConfig:
    """The flags as a ``DisruptConfig`` (the confounds preset: as its RULES.md fixes them); λ and
    top-k are checked here, before the model loads."""
    flags: DisruptFlags = spec.options
    sites = [s.strip() for s in flags.sites.split(",")]
    if len(sites) != 2:
        raise ValueError(f"--sites {flags.sites!r} is invalid: give the Q and the K site, e.g. q_rot,k_rot")
    seeds = _ints(flags.seeds, "seeds")
    table = flags.conditions == "table"
    confounds = spec.preset_name == "confounds"
    layers = None if flags.layers is None else _ints(flags.layers, "layers")
    if confounds:  # RULES.md of docs/disrupt-smollm2-confounds fixes these
        if flags.seeds == "0,1,2":
            seeds = CONFOUND_SEEDS
        config = DisruptConfig(method=flags.method, q_site=sites[0], k_site=sites[1],
                               selection=flags.selection, top_k=flags.top_k, lam=flags.lam, seeds=seeds,
                               energy_seeds=seeds[:3], phases=flags.phases, batch_size=spec.batch_size,
                               statistics=flags.statistics, ranking=flags.ranking, position0=True,
                               chosen_layers=layers, sweep_k=(), sweep_layers=False, ablations=False)
    else:
        config = DisruptConfig(method=flags.method, q_site=sites[0], k_site=sites[1],
                               selection=flags.selection, top_k=flags.top_k, lam=flags.lam, seeds=seeds,
                               energy_seeds=seeds[:1] if spec.quick else seeds, chosen_layers=layers,
                               phases=flags.phases, batch_size=spec.batch_size,
                               statistics=flags.statistics, ranking=flags.ranking,
                               sweep_k=() if spec.quick or table else SWEEP_K,
                               sweep_layers=not (spec.quick or table), ablations=not table)
    config.definition  # noqa: B018 -- λ and top-k are checked before the model loads
    return config


DISRUPT_REPORT = Report(disrupt_claims, write_disrupt_report, disrupt_notes)
# the confounds preset: its pre-registered claims and its report sections
CONFOUNDS_REPORT = Report(confound_claims, write_confound_report, confound_notes)

DISRUPT = Experiment(
    name="disrupt",
    help="replace the massive Q/K dims by their prompt mean (and lowest-norm, random, energy-matched, "
    "first-token-kept, Q/K-only controls); contextual vs parametric tasks, perplexity, first-token "
    "attention",
    flags=DisruptFlags, add_flags=add_flags, config=disrupt_config, compute=disrupt,
    report=lambda spec: CONFOUNDS_REPORT if spec.preset_name == "confounds" else DISRUPT_REPORT,
    title="Disrupting massive values — {model}")
