"""``mvjax experiment emergence RUN_DIR... --out DIR``: when do massive values appear during
training? Reads training runs (``mvjax train`` directories with ``train.concentration_every`` set)
and draws, against training tokens, the fixed λ=5 counts of Q, K and V, the largest max/mean, the
low-frequency band share of K and the attention mass on the first token — one line per run, so a
setting sweep (head_dim, learning rate, tokenizer, positional scheme) reads as a set of curves.

Writes ``emergence.json`` (per run: its settings and every curve, layers × logged steps),
``emergence.png`` and ``emergence.md`` (the values at each run's last logged step, one row per run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from mvjax.analysis.summaries import DEFINITIONS, Curves, training_curves
from mvjax.atomic import (atomic_file, check_own_dir, read_json_state, require, write_atomic,
                          write_json)
from mvjax.config import PositionalConfig, to_plain
from mvjax.train.config import ExperimentConfig
from mvjax.train.metrics import read_metrics


@dataclasses.dataclass(frozen=True)
class RunCurves:
    """One training run's settings and its curves over training (``emergence.json``'s ``runs``)."""

    run: str
    positional: dict[str, Any]
    head_dim: int
    hidden: int
    layers: int
    heads: int
    tokenizer: str
    source: str
    seq_len: int
    batch: int
    lr: float
    schedule: str
    weight_decay: float
    eval_loss: list[tuple[int, float]]
    curves: Curves
    definitions: dict[str, Any]
    made_by: str | None = None  # the command that first measured it

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return out | {"curves": self.curves.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunCurves":
        fields = {f.name: data.get(f.name) for f in dataclasses.fields(cls)}
        return cls(**fields | {"curves": Curves.from_json(data["curves"])})


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


def totals(run: RunCurves) -> dict[str, list]:
    """Per logged step: λ counts summed over layers (Q, K, V post-RoPE), the max over layers of
    the max/mean, the max over layers of K's median band share, mean first-token mass."""
    c = run.curves
    band = c.series("k", "band_low_share_median")
    return {
        "tokens": c.tokens,
        "q_massive": np.sum(c.sites["q_rot"]["n_massive"], axis=0).tolist(),
        "k_massive": np.sum(c.sites["k_rot"]["n_massive"], axis=0).tolist(),
        "v_massive": np.sum(c.sites["v"]["n_massive"], axis=0).tolist(),
        "q_max_mean": np.max(c.sites["q_rot"]["max_mean_max"], axis=0).tolist(),
        "k_max_mean": np.max(c.sites["k_rot"]["max_mean_max"], axis=0).tolist(),
        "k_band_low_share": np.nanmax(band, axis=0).tolist() if band.size else [],
        "k_agreement": c.agreement["k"],
        "first_token_mass": np.mean(c.first_token_mass, axis=0).tolist(),
    }


def _per_layer(values: list, fmt: str) -> str:
    return " / ".join("n/a" if v is None else format(v, fmt) for v in values)


def _row(run: RunCurves) -> str:
    """One run at its last logged step."""
    c, t = run.curves, totals(run)
    s = c.sites
    last = len(c.steps) - 1
    qk = [a + b for a, b in zip(t["q_massive"], t["k_massive"])]
    first = next((c.tokens[i] for i, n in enumerate(qk) if n), None)
    peak = {site: max(range(run.layers), key=lambda l: s[site]["max_mean_max"][l][last])
            for site in ("q_rot", "k_rot")}
    rotary = PositionalConfig(**run.positional).rotary_dims(run.head_dim) > 0
    waves = [w[last] if rotary else None for w in s["k_rot"]["top_dim_wavelength_median"]]
    evals = run.eval_loss
    low = min(evals, key=lambda e: e[1]) if evals else None
    return (
        f"| {run.run} | {run.positional['scheme']} | {run.head_dim} | {run.tokenizer} "
        f"| {run.lr:g} | {c.steps[last]} ({c.tokens[last] / 1e6:.1f}M) | "
        + (f"{evals[-1][1]:.3f} ({low[1]:.3f} at {low[0]})" if evals else "n/a") + " | "
        f"{t['q_massive'][last]} / {t['k_massive'][last]} / {t['v_massive'][last]} | "
        + ("none" if first is None else f"{first / 1e6:.1f}M tokens") + " | "
        f"{s['q_rot']['max_mean_max'][peak['q_rot']][last]:.1f} (L{peak['q_rot']}) | "
        f"{s['k_rot']['max_mean_max'][peak['k_rot']][last]:.1f} (L{peak['k_rot']}) | "
        f"{_per_layer(waves, '.0f')} | "
        f"{_per_layer([b[last] for b in s['k_rot']['band_low_share_median']], '.2f')} | "
        f"{_per_layer([m[last] for m in c.first_token_mass], '.3f')} |")


def table(runs: list[RunCurves]) -> str:
    """Markdown: one row per run, at its last logged step (λ counts at the post-RoPE sites; a
    non-rotary run's wavelengths would only be the labels it is read with, so they are n/a)."""
    head = ("| run | positional | head_dim | tokenizer | lr | steps (tokens) | eval loss: last (lowest "
            "at step) | Q / K / V λ=5 entries at end | first Q/K entry at | Q max/mean max (layer) "
            "| K max/mean max (layer) | K top-dim wavelength per layer | K low-band share per layer "
            "| first-token mass per layer |")
    rows = [head, "|" + "---|" * head.count(" | ") + "---|"]
    return "\n".join(rows + [_row(run) for run in runs])


def draw(runs: list[RunCurves], path: Path) -> Path:
    import matplotlib  # local: matplotlib is heavy and only drawing this figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local: as matplotlib

    panels = (("q_massive", "Q massive (λ=5), all layers"), ("k_massive", "K massive (λ=5)"),
              ("k_max_mean", "K max/mean (max over layers, heads)"),
              ("q_max_mean", "Q max/mean (max over layers, heads)"),
              ("k_band_low_share", "K low-freq band share (max over layers)"),
              ("first_token_mass", "attention mass on token 0 (mean)"))
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.6))
    for i, run in enumerate(runs):
        t = totals(run)
        x = np.asarray(t["tokens"], np.float64) / 1e6
        label = (f"{run.run} ({run.positional['scheme']}, hd {run.head_dim}, "
                 f"{run.tokenizer}, lr {run.lr:g})")
        for ax, (key, _) in zip(axes.ravel(), panels):
            ax.plot(x, t[key], "-", lw=1.3, color=f"C{i}", label=label)
    for ax, (key, title) in zip(axes.ravel(), panels):
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if "max_mean" in key:
            ax.axhline(5.0, color="gray", ls="--", lw=0.8)
    for ax in axes[-1]:
        ax.set_xlabel("training tokens (M)", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emergence", help="massive-value curves over training tokens for a set of "
                       "training runs (λ=5 counts, max/mean, band share, sink mass)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="`mvjax train` output directories, "
                   "or an emergence.json written earlier (its runs are kept as recorded, so a "
                   "sweep can grow after its training directories are gone)")
    p.add_argument("--out", required=True, help="where emergence.json, .png and .md go")
    p.set_defaults(func=_run)


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


OWN_FILES = ("emergence.json", "emergence.png", "emergence.md")


def _run(args: argparse.Namespace) -> int:
    out = check_own_dir(args.out, OWN_FILES, "emergence outputs")
    runs = load_runs(args.runs)
    if not runs:
        raise ValueError(f"no runs to draw in {' '.join(args.runs)}: pass training run directories "
                         "or an emergence.json that holds runs")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "emergence.json",  # in place: the old file stays whole if this fails
               {"command": "mvjax experiment emergence " + " ".join(args.runs) + f" --out {args.out}",
                "runs": [r.to_json() for r in runs], "totals": {r.run: totals(r) for r in runs}},
               indent=None)
    draw(runs, out / "emergence.png")
    write_atomic(out / "emergence.md", table(runs) + "\n")
    print(json.dumps({r.run: {k: v[-1] if v else None for k, v in totals(r).items()}
                      for r in runs}, indent=1))
    return 0
