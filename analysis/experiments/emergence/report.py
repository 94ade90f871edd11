"""``emergence.md`` (one row per run at its last logged step) and ``emergence.png`` (the curves
against training tokens) of a set of ``RunCurves``, and the totals over layers both read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvjax.analysis.experiments.emergence.results import RunCurves
from mvjax.atomic import atomic_file
from mvjax.config import PositionalConfig


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
