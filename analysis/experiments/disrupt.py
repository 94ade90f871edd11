"""``mvjax experiment disrupt``: disrupt the massive Q/K dims (and the controls) on the task set;
write results.json, bar charts and report.md (``analysis.disrupt`` holds the library function)."""

from __future__ import annotations

import argparse

SWEEP_K = (1, 2, 4)  # full preset: top-k sweep (and the early / middle / late layer sweep)
CONFOUND_SEEDS = tuple(range(10))  # confounds preset: pair-aware random control seeds (units of its null)


def register(sub: argparse._SubParsersAction) -> None:
    from mvjax.analysis.experiments.common import add_common_args

    p = sub.add_parser("disrupt", help="replace the massive Q/K dims by their prompt mean (and "
                       "lowest-norm, random, energy-matched, first-token-kept, Q/K-only controls); "
                       "contextual vs parametric tasks, perplexity, first-token attention")
    add_common_args(p)
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
    p.set_defaults(func=run)


def _ints(text: str, what: str) -> tuple[int, ...]:
    """Comma-separated non-negative integers (seeds, layer indices), checked before any work."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = (-1,)
    if any(v < 0 for v in values):
        raise ValueError(f"--{what} {text!r} is invalid: give comma-separated non-negative integers")
    return values


def run(args: argparse.Namespace) -> int:
    from mvjax.analysis.disrupt import DisruptConfig

    sites = [s.strip() for s in args.sites.split(",")]
    if len(sites) != 2:
        raise ValueError(f"--sites {args.sites!r} is invalid: give the Q and the K site, e.g. q_rot,k_rot")
    seeds = _ints(args.seeds, "seeds")
    table = args.conditions == "table"
    from mvjax.analysis.experiments.common import preset_name

    if preset_name(args) == "confounds":  # RULES.md of docs/disrupt-smollm2-confounds fixes these
        if args.seeds == "0,1,2":
            seeds = CONFOUND_SEEDS
        config = DisruptConfig(method=args.method, q_site=sites[0], k_site=sites[1],
                               selection=args.selection, top_k=args.top_k, lam=args.lam, seeds=seeds,
                               energy_seeds=seeds[:3], phases=args.phases, batch_size=args.batch_size,
                               statistics=args.statistics, ranking=args.ranking, position0=True,
                               chosen_layers=None if args.layers is None else _ints(args.layers, "layers"),
                               sweep_k=(), sweep_layers=False, ablations=False)
        return _run(args, config, confounds=True)
    config = DisruptConfig(method=args.method, q_site=sites[0], k_site=sites[1],
                           selection=args.selection, top_k=args.top_k, lam=args.lam, seeds=seeds,
                           energy_seeds=seeds[:1] if args.quick else seeds,
                           chosen_layers=None if args.layers is None else _ints(args.layers, "layers"),
                           phases=args.phases, batch_size=args.batch_size,
                           statistics=args.statistics, ranking=args.ranking,
                           sweep_k=() if args.quick or table else SWEEP_K,
                           sweep_layers=not (args.quick or table), ablations=not table)
    return _run(args, config)


def _run(args: argparse.Namespace, config, confounds: bool = False) -> int:
    """Run ``config`` (the confounds preset: its pre-registered claims and its report sections)."""
    config.definition  # noqa: B018 -- λ and top-k are checked before the model loads
    from mvjax.analysis.disrupt import disrupt
    from mvjax.analysis.disrupt_report import disrupt_claims, disrupt_notes, write_disrupt_report
    from mvjax.analysis.experiments.common import run_experiment

    claims, notes, write = disrupt_claims, disrupt_notes, write_disrupt_report
    if confounds:
        from mvjax.analysis.confound_report import confound_claims, confound_notes, write_confound_report

        claims, notes, write = confound_claims, confound_notes, write_confound_report
    return run_experiment(
        args, "disrupt", config.top_k,
        lambda model, tok, tasks, rows, ck: disrupt(model, tok, tasks, config, rows, checkpoint=ck),
        claims, lambda result, out: write(result, out, f"Disrupting massive values — {args.model}"),
        notes=notes, config=config)
