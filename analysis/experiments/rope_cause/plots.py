"""Figures of a rope-cause ``results.json``: head×dim maps per arm, max/mean vs layer, emergence
over training tokens, partial RoPE inside/outside its rotated dims, first-token (sink) mass.

Functions take the typed results only (``RopeCauseResults``), so every figure can be redrawn from
a saved results.json (``RopeCauseResults.load``).
Head dims are ordered high → low RoPE frequency (own labels, or RoPE θ=1e4 labels for NoPE/ALiBi;
non-rotating dims last), the low-frequency band on the right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mvjax.analysis.concentration import scheme_labels  # noqa: E402
from mvjax.analysis.experiments.rope_cause.results import RopeCauseResults  # noqa: E402
from mvjax.analysis.massive import frequency_order  # noqa: E402
from mvjax.atomic import atomic_file  # noqa: E402
from mvjax.config import PositionalConfig  # noqa: E402

SITES = {"q_rot": "Q", "k_rot": "K", "v": "V"}
FIGURES = ("heatmaps", "max_mean_vs_layer", "emergence", "partial_rope", "sink_mass", "retrieval",
           "retrieval_episodes")


def _save(fig, out_dir: Path, name: str, svg: bool) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png"] + ([out_dir / f"{name}.svg"] if svg else [])
    for p in paths:
        with atomic_file(p) as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths


def _arm_freqs(arm: Any) -> list[float | None]:
    return scheme_labels(PositionalConfig(**arm.positional), arm.head_dim)[1]


def _lam(results: RopeCauseResults) -> float:
    return results.definitions["massive"]["lam"]


def _with_reference(results: RopeCauseResults) -> list[tuple[str, Any]]:
    """(name, arm) for every arm, then the reference model when measured."""
    entries: list[tuple[str, Any]] = list(results.arms.items())
    if results.reference is not None:
        entries.append((f"reference: {results.reference.model}", results.reference))
    return entries


def heatmaps(results: RopeCauseResults, out_dir: Path, svg: bool = False) -> list[Path]:
    """Rows = arms; columns = Q and K at layer 0 and the last layer; colour = M / head mean."""
    arms = results.arms
    cols = [(s, which) for s in ("q_rot", "k_rot") for which in ("first", "last")]
    fig, axes = plt.subplots(len(arms), len(cols), figsize=(3.0 * len(cols), 1.2 + 1.0 * len(arms)),
                             squeeze=False)
    lam = _lam(results)
    im = None
    for r, (name, arm) in enumerate(arms.items()):
        order = frequency_order(_arm_freqs(arm))
        for c, (site, which) in enumerate(cols):
            layer = 0 if which == "first" else arm.num_layers - 1
            M = np.asarray(arm.final_M[site][layer], np.float64)
            R = M / np.maximum(M.mean(axis=1, keepdims=True), 1e-30)
            im = axes[r, c].imshow(R[:, order], aspect="auto", cmap="magma", vmin=0,
                                   vmax=2 * lam, interpolation="nearest")
            axes[r, c].set_yticks([])
            axes[r, c].tick_params(labelsize=6)
            if r == 0:
                axes[r, c].set_title(f"{SITES[site]}, layer {layer if which == 'first' else 'last'}",
                                     fontsize=8)
            if c == 0:
                axes[r, c].set_ylabel(name, fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("dim, high → low freq", fontsize=7)
    cbar = fig.colorbar(im, ax=axes, shrink=0.8, pad=0.01)
    cbar.set_label(f"M / head mean (massive > {lam:g})", fontsize=8)
    fig.suptitle("final models: head × dim norm maps (rows: heads of each arm)", fontsize=9)
    return _save(fig, out_dir, "heatmaps", svg)


def _depth(n: int) -> np.ndarray:
    return np.arange(n) / max(n - 1, 1)


def max_mean_vs_layer(results: RopeCauseResults, out_dir: Path, svg: bool = False) -> list[Path]:
    """Median-over-heads max/mean per layer (x = relative depth), every arm and the reference."""
    lam = _lam(results)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    entries = _with_reference(results)
    for ax, (site, label) in zip(axes, SITES.items()):
        for i, (name, arm) in enumerate(entries):
            y = arm.final[site].column("max_mean_median")
            ax.plot(_depth(len(y)), y, "-o", ms=3, color="k" if name.startswith("ref") else f"C{i}",
                    label=name)
        ax.axhline(lam, color="gray", ls="--", lw=0.8)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("relative depth (layer / last)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("max/mean of M, median over heads", fontsize=8)
    axes[-1].legend(fontsize=6)
    return _save(fig, out_dir, "max_mean_vs_layer", svg)


def emergence(results: RopeCauseResults, out_dir: Path, svg: bool = False) -> list[Path]:
    """Over training tokens: λ=5 counts (Q+K, all layers), max max/mean over layers of K and Q,
    and K's low-frequency band share, every arm."""
    lam = _lam(results)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for i, (name, arm) in enumerate(results.arms.items()):
        cur = arm.curves
        x = np.asarray(cur.tokens, np.float64) / 1e6
        if not len(x):
            continue
        qk = cur.series("q_rot", "n_massive").sum(axis=0) + cur.series("k_rot", "n_massive").sum(axis=0)
        axes[0].plot(x, qk, "-", color=f"C{i}", label=name)
        axes[1].plot(x, cur.series("k_rot", "max_mean_max").max(axis=0), "-", color=f"C{i}")
        axes[2].plot(x, cur.series("q_rot", "max_mean_max").max(axis=0), "-", color=f"C{i}")
        band = cur.series("k", "band_low_share_median")
        axes[3].plot(x, np.nanmax(band, axis=0) if band.size else [], "-", color=f"C{i}")
    for ax, t in zip(axes, ("Q+K massive entries (λ=5)", "K max/mean, max over layers & heads",
                            "Q max/mean, max over layers & heads",
                            "K low-freq band share, max over layers")):
        ax.set_title(t, fontsize=8)
        ax.set_xlabel("training tokens (M)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[1:3]:
        ax.axhline(lam, color="gray", ls="--", lw=0.8)
    axes[3].axhline(0.5, color="gray", ls="--", lw=0.8)
    axes[0].legend(fontsize=6)
    return _save(fig, out_dir, "emergence", svg)


def partial_rope(results: RopeCauseResults, out_dir: Path, svg: bool = False) -> list[Path]:
    """Partial RoPE: share of Q/K/V energy in the rotated dims per layer, against the rotated
    fraction (energy spread evenly would sit on that line)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    arm = results.arms.get("partial-rope")
    if arm is None:
        ax.text(0.5, 0.5, "no partial-RoPE arm in this run", ha="center", va="center")
    else:
        frac = arm.positional["rotary_fraction"]
        for i, (site, label) in enumerate({"q": "Q", "k": "K", "v": "V"}.items()):
            if site not in arm.final:
                continue
            y = arm.final[site].column("rotated_energy_share")
            ax.plot(range(len(y)), y, "-o", ms=3, color=f"C{i}", label=label)
        ax.axhline(frac, color="gray", ls="--", lw=0.8, label=f"rotated fraction {frac:g}")
        ax.set_ylim(0, 1)
        ax.set_xlabel("layer", fontsize=8)
        ax.set_ylabel("share of ΣM² in rotated dims", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    ax.set_title("partial RoPE: energy inside the rotated dims", fontsize=9)
    return _save(fig, out_dir, "partial_rope", svg)


def sink_mass(results: RopeCauseResults, out_dir: Path, svg: bool = False) -> list[Path]:
    """Attention mass on the first token per layer (mean over heads), final models + reference."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, (name, arm) in enumerate(_with_reference(results)):
        y = arm.final_first_token_mass
        if y:
            ax.plot(_depth(len(y)), y, "-o", ms=3, label=name,
                    color="k" if name.startswith("ref") else f"C{i}")
    ax.set_xlabel("relative depth", fontsize=8)
    ax.set_ylabel("attention mass on token 0", fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    ax.set_title("sink mass vs layer", fontsize=9)
    return _save(fig, out_dir, "sink_mass", svg)


def retrieval(results: RopeCauseResults, out_dir: Path, svg: bool = False) -> list[Path]:
    """Over training tokens, every arm: held-out contextual exact match, answer NLL per token,
    and K max/mean (max over layers and heads) — does retrieval arrive with K's concentration?"""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for i, (name, arm) in enumerate(results.arms.items()):
        pts = (arm.retrieval or {}).get("points", [])
        if pts:
            x = np.array([p["tokens"] for p in pts], np.float64) / 1e6
            axes[0].plot(x, [p["all_exact"] for p in pts], "-o", ms=2, color=f"C{i}", label=name)
            axes[1].plot(x, [p["all_answer_nll"] for p in pts], "-", color=f"C{i}")
        cur = arm.curves
        if cur.tokens:
            axes[2].plot(np.asarray(cur.tokens, np.float64) / 1e6,
                         np.nanmax(cur.series("k_rot", "max_mean_max"), axis=0), "-", color=f"C{i}")
    axes[0].axhline(0.8, color="gray", ls="--", lw=0.8)
    axes[2].axhline(results.definitions["massive"]["lam"], color="gray", ls="--", lw=0.8)
    for ax, t in zip(axes, ("held-out contextual exact (passkey + kv)", "answer NLL per token",
                            "K max/mean, max over layers & heads")):
        ax.set_title(t, fontsize=8)
        ax.set_xlabel("training tokens (M)", fontsize=8)
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=6)
    else:
        axes[0].text(0.5, 0.5, "retrieval not logged in this run", ha="center", va="center",
                     transform=axes[0].transAxes, fontsize=8)
    return _save(fig, out_dir, "retrieval", svg)


def retrieval_episodes(results: RopeCauseResults, out_dir: Path, svg: bool = False) -> list[Path]:
    """Over training tokens, on the held-out episodes themselves (runs whose probe logged them;
    none: no figure): exact match per task with its chance, K's top-dim energy share (max over
    layers and heads; the same meaning at every head size) and the massive-vs-random gap (mean
    accuracy under the random controls minus under the massive edit) at the gap steps."""
    arms = [(name, arm) for name, arm in results.arms.items() if (arm.retrieval or {}).get("gaps")]
    if not arms:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    chance: dict[str, float] = {}
    for i, (name, arm) in enumerate(results.arms.items()):
        curve = arm.retrieval or {}
        pts, gaps = curve.get("points", []), curve.get("gaps", [])
        if not gaps:
            continue
        chance |= curve.get("chance", {})
        x = np.array([p["tokens"] for p in pts], np.float64) / 1e6
        for task, ls in (("passkey", "-"), ("kv_recall", ":")):
            if f"{task}_exact" in pts[0]:
                axes[0].plot(x, [p[f"{task}_exact"] for p in pts], ls, color=f"C{i}",
                             label=f"{name} {task}")
        if "episode_k_rot_top_share_max" in pts[0]:
            axes[1].plot(x, [p["episode_k_rot_top_share_max"] for p in pts], "-", color=f"C{i}", label=name)
        axes[2].plot(np.array([g["tokens"] for g in gaps], np.float64) / 1e6, [g["gap"] for g in gaps],
                     "-o", ms=3, color=f"C{i}", label=name)
    if "kv_recall" in chance:
        axes[0].axhline(chance["kv_recall"], color="gray", ls=":", lw=0.8)
        axes[0].text(0, chance["kv_recall"], " kv chance", fontsize=6, va="bottom", color="gray")
    axes[2].axhline(0, color="gray", lw=0.8)
    for ax, t in zip(axes, ("held-out exact per task (gray: kv chance)",
                            "K top-dim energy share on episodes (max)",
                            "gap: random-control − massive exact")):
        ax.set_title(t, fontsize=8)
        ax.set_xlabel("training tokens (M)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    return _save(fig, out_dir, "retrieval_episodes", svg)


def all_figures(results: RopeCauseResults, out_dir: Path, svg: bool = False) -> dict[str, list[Path]]:
    return {"heatmaps": heatmaps(results, out_dir, svg),
            "max_mean_vs_layer": max_mean_vs_layer(results, out_dir, svg),
            "emergence": emergence(results, out_dir, svg),
            "partial_rope": partial_rope(results, out_dir, svg),
            "sink_mass": sink_mass(results, out_dir, svg),
            "retrieval": retrieval(results, out_dir, svg),
            "retrieval_episodes": retrieval_episodes(results, out_dir, svg)}
