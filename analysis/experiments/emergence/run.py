"""``mvjax experiment emergence RUN_DIR... --out DIR``: when do massive values appear during
training? Reads training runs (``mvjax train`` directories with ``train.concentration_every`` set)
and draws, against training tokens, the fixed λ=5 counts of Q, K and V, the largest max/mean, the
low-frequency band share of K and the attention mass on the first token — one line per run, so a
setting sweep (head_dim, learning rate, tokenizer, positional scheme) reads as a set of curves.

Writes ``emergence.json`` (per run: its settings and every curve, layers × logged steps),
``emergence.png`` and ``emergence.md`` (the values at each run's last logged step, one row per run).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mvjax.analysis.experiments.emergence.report import table, totals
from mvjax.analysis.experiments.emergence.results import RunCurves
from mvjax.analysis.summaries import DEFINITIONS, training_curves
from mvjax.atomic import read_json_state, require
from mvjax.config import to_plain
from mvjax.train.config import ExperimentConfig
from mvjax.train.metrics import read_metrics


def read_run(run_dir: str | Path) -> tuple[Any, list[dict[str, Any]]]:
    """(ExperimentConfig, metrics records) of a ``mvjax train`` directory, refused in one line
    when it is not one."""
    d = Path(run_dir)
    if not (d / "config.yaml").is_file() or not (d / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"{d} is not a training run (config.yaml + metrics.jsonl): pass "
                                "directories written by `mvjax train`")
    return ExperimentConfig.load(d / "config.yaml"), read_metrics(d / "metrics.jsonl")


def run_curves(run_dir: str | Path) -> RunCurves:
    """Settings and curves of one training run directory."""
    d = Path(run_dir)
    exp, metrics = read_run(d)
    curves = training_curves(metrics, exp.model, exp.data.batch_size * exp.data.seq_len)
    if not curves.steps:
        raise ValueError(f"{d} logged no norm matrices: train with train.concentration_every > 0 "
                         "(this mvjax version logs them)")
    evals = [(r["step"], r["eval_loss"]) for r in metrics if r.get("eval_loss") is not None]
    m, o = exp.model, exp.train.optim
    return RunCurves(run=d.name, positional=to_plain(m.layer_positional(0)), head_dim=m.head_dim,
                     hidden=m.hidden_size, layers=m.num_layers, heads=m.num_heads,
                     tokenizer=exp.data.tokenizer, source=exp.data.source,
                     seq_len=exp.data.seq_len, batch=exp.data.batch_size, lr=o.lr,
                     schedule=o.schedule, weight_decay=o.weight_decay, eval_loss=evals,
                     curves=curves, definitions=DEFINITIONS)


def load_runs(sources: list[str]) -> list[RunCurves]:
    """Curves of every source: a training run directory, or the runs of an emergence.json (each
    keeps ``made_by``: the command that first measured it); a run name given twice is refused
    (the figure and totals are keyed by it)."""
    runs: list[RunCurves] = []
    for src in sources:
        if Path(src).is_file() and src.endswith(".json"):
            saved = read_json_state(src, "pass an emergence.json written whole, or the training "
                                    "run directories")
            if not isinstance(saved, dict) or "runs" not in saved:
                raise ValueError(f"{src} is not an emergence.json (no 'runs'): pass one written by "
                                 "`mvjax experiment emergence`, or a training run directory")
            runs += [check_saved_run({**r, "made_by": r.get("made_by", saved.get("command"))}
                                     if isinstance(r, dict) else r, src)
                     for r in require(saved, "runs", list, src)]
        else:
            runs.append(dataclasses.replace(run_curves(src),
                                            made_by=f"training run directory {src}"))
    names = [r.run for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"run name(s) {twice} given twice: rename a run directory or drop the "
                         "copy from the list")
    return runs


# Keys of a saved run that the totals, table and figure read.
RUN_KEYS = {"run": str, "positional": dict, "head_dim": int, "layers": int, "tokenizer": str,
            "lr": (int, float), "eval_loss": list, "curves.steps": list, "curves.tokens": list,
            "curves.first_token_mass": list, "curves.agreement.k": list,
            "curves.sites.k.band_low_share_median": list, "curves.sites.v.n_massive": list,
            **{f"curves.sites.{s}.{k}": list for s in ("q_rot", "k_rot") for k in (
                "n_massive", "max_mean_max", "band_low_share_median", "top_dim_wavelength_median")}}


def check_saved_run(run: Any, src: str | Path) -> RunCurves:
    """A run of a saved emergence.json as a ``RunCurves``, refused in one line naming the file and
    the key (or the run) when a key is missing or of the wrong type."""
    where = f"{src} (a run)"
    if isinstance(run, dict) and isinstance(run.get("run"), str):
        where = f"{src} (run {run['run']!r})"
    for key, kind in RUN_KEYS.items():
        require(run, key, kind, where)
    try:
        typed = RunCurves.from_json(run)
        totals(typed), table([typed])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(f"{where} has curves of the wrong shape or type ({type(e).__name__}: "
                         f"{e}): pass an emergence.json written by this mvjax version") from None
    return typed
