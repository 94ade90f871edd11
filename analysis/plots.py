"""Figures for a massive-values result (the dict from ``analysis.massive.analyze``).

Every plot orders head dims by RoPE frequency (high → low, non-rotating dims last) so the
low-frequency band is always on the right, whatever the pair layout. Each figure is written as PNG
and SVG with the Agg backend (no display needed). Functions take the result dict, not the model,
so figures can be redrawn from a saved ``massive_values.json``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mvjax.analysis.massive import Analysis, frequency_order, low_frequency_dims  # noqa: E402
from mvjax.analysis.records import Score  # noqa: E402

SITE_LABEL = {"q": "Q (pre-RoPE)", "k": "K (pre-RoPE)", "v": "V", "q_rot": "Q (post-RoPE)",
              "k_rot": "K (post-RoPE)", "q_normed": "Q (QK-normed, pre-RoPE)",
              "k_normed": "K (QK-normed, pre-RoPE)"}


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{ext}" for ext in ("png", "svg")]
    for p in paths:
        fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths


def _freqs(result: Analysis, layer: int) -> list[float | None]:
    return result.frequencies[str(layer)]


def _ratio_to_head_mean(M: np.ndarray) -> np.ndarray:
    mean = M.mean(axis=1, keepdims=True)
    return np.divide(M, mean, out=np.zeros_like(M), where=mean > 0)


def shared_ratio_max(result: Analysis) -> float:
    """One colour-scale top for every heatmap of a run (Q, K and V comparable at a glance): the
    largest M / head-mean anywhere, at least 2λ."""
    lam = result.definition["lam"]
    return max([2 * lam] + [float(_ratio_to_head_mean(np.array(m["M"])).max())
                            for layers in result.sites.values() for m in layers])


def dim_ticks(freqs: list[float | None], order: np.ndarray, n_ticks: int = 5
              ) -> tuple[list[int], list[str]]:
    """Tick positions along a frequency-ordered axis and their labels: the real head-dim index
    (as in the JSON's ``[h, d]``) over its RoPE wavelength in tokens ("—" for unrotated dims)."""
    positions = sorted({int(round(x)) for x in np.linspace(0, len(order) - 1, min(n_ticks, len(order)))})
    labels = []
    for p in positions:
        f = freqs[int(order[p])]
        labels.append(f"{int(order[p])}\n{_tokens(2 * np.pi / f)}" if f else f"{int(order[p])}\n—")
    return positions, labels


def _tokens(n: float) -> str:
    """A token count in at most four characters: 6.28, 112, 2.0k, 438k, 1.2M."""
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2g}{unit}" if n < 10 * scale else f"{n / scale:.0f}{unit}"
    return f"{n:.3g}"


def heatmaps(result: Analysis, site: str, out_dir: Path, model_name: str = "",
             vmax: float | None = None) -> list[Path]:
    """Head × dim maps of M / head-mean for every layer at one site (one panel per layer); cells
    above λ are outlined. ``vmax``: the colour-scale top (``shared_ratio_max`` for a run)."""
    layers = result.sites[site]
    lam = result.definition["lam"]
    n = len(layers)
    cols = min(6, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols + 1, 2.7 * rows + 0.8), squeeze=False,
                             gridspec_kw={"hspace": 0.75, "wspace": 0.25})
    vmax = vmax or max(2 * lam, max(float(_ratio_to_head_mean(np.array(m["M"])).max()) for m in layers))
    im = None
    for ax, m in zip(axes.ravel(), layers):
        freqs = _freqs(result, m["layer"])
        order = frequency_order(freqs)
        R = _ratio_to_head_mean(np.array(m["M"]))[:, order]
        im = ax.imshow(R, aspect="auto", cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        heads, cols_above = np.nonzero(R > lam)
        ax.scatter(cols_above, heads, marker="s", s=14, facecolors="none", edgecolors="cyan", lw=0.7)
        low, rot = low_frequency_dims(freqs)
        if rot.any():  # boundary between the high- and low-frequency halves of the rotating dims
            ax.axvline(int((rot & ~low).sum()) - 0.5, color="cyan", lw=0.8, ls="--")
        ax.set_xticks(*dim_ticks(freqs, order))
        ax.set_title(f"layer {m['layer']}  ({m['n_massive']} massive)", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("head", fontsize=8)
    fig.supxlabel("head dim: index (as in the JSON) over RoPE wavelength in tokens, ordered from "
                  "high to low frequency", fontsize=9)
    cbar = fig.colorbar(im, ax=axes, shrink=0.9, pad=0.01)
    cbar.set_label(f"M[h,d] / mean_d M[h,·]   (outlined: massive, > {lam:g})", fontsize=9)
    fig.suptitle(f"{model_name} {SITE_LABEL.get(site, site)}: per-(head, dim) L2 norm over tokens; "
                 "dashed line = start of low-frequency half", fontsize=10)
    return _save(fig, out_dir, f"heatmap_{site}")


def band_map(result: Analysis, out_dir: Path, model_name: str = "") -> list[Path]:
    """Layer × frequency-band map of the share of energy ΣM², one panel per site."""
    sites = list(result.sites)
    nb = result.n_bands
    top = max(float(np.max(m["band_energy"])) for s in sites for m in result.sites[s])
    fig, axes = plt.subplots(1, len(sites), figsize=(3.2 * len(sites) + 1, 4.5), squeeze=False)
    im = None
    for ax, site in zip(axes[0], sites):
        layers = result.sites[site]
        E = np.array([m["band_energy"] for m in layers])
        im = ax.imshow(E, aspect="auto", cmap="viridis", vmin=0, vmax=top, origin="lower",
                       interpolation="nearest")
        ax.set_xticks(range(nb + 1), [f"{i + 1}" for i in range(nb)] + ["none"], fontsize=7)
        ax.set_yticks(range(len(layers)), [str(m["layer"]) for m in layers], fontsize=6)
        ax.set_title(SITE_LABEL.get(site, site), fontsize=9)
    axes[0, 0].set_ylabel("layer", fontsize=9)
    fig.supxlabel(f"RoPE frequency band of the head dims (1 = highest … {nb} = lowest; "
                  "none = not rotated; V labelled like Q/K)", fontsize=9)
    cbar = fig.colorbar(im, ax=axes, shrink=0.9, pad=0.01)
    cbar.set_label("share of the layer's ΣM² in the band", fontsize=9)
    fig.suptitle(f"{model_name}: where the Q/K/V energy sits across RoPE frequency bands",
                 fontsize=10)
    return _save(fig, out_dir, "band_map")


def bars3d(result: Analysis, layer: int, out_dir: Path, model_name: str = "",
           sites: tuple[str, ...] = ("q", "k", "v")) -> list[Path]:
    """3-D bars of M (head × freq-ordered dim) at one layer for Q, K and V (cf. the paper's Fig. 1),
    on one height axis and colour scale, so a flat V looks flat beside a peaked Q/K."""
    sites = tuple(s for s in sites if s in result.sites)
    order = frequency_order(_freqs(result, layer))
    panels = {s: np.array(next(x for x in result.sites[s] if x["layer"] == layer)["M"])[:, order]
              for s in sites}
    top = max(max(float(M.max()) for M in panels.values()), 1e-30)
    fig = plt.figure(figsize=(5.2 * len(sites), 4.6))
    for i, (site, M) in enumerate(panels.items()):
        H, D = M.shape
        ax = fig.add_subplot(1, len(sites), i + 1, projection="3d")
        xs, ys = np.meshgrid(np.arange(D), np.arange(H))
        heights = M.ravel()
        ax.bar3d(xs.ravel(), ys.ravel(), np.zeros(H * D), 0.8, 0.8, heights,
                 color=plt.cm.viridis(heights / top), shade=True)
        ax.set_zlim(0, top)
        ax.set_xlabel("dim (high → low freq)", fontsize=8)
        ax.set_ylabel("head", fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_zlabel("M = L2 norm over tokens", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_title(f"{SITE_LABEL.get(site, site)}, layer {layer}", fontsize=9)
    fig.suptitle(f"{model_name}: massive values at layer {layer}", fontsize=10)
    return _save(fig, out_dir, f"bars3d_layer{layer}")


def ratio_curves(result: Analysis, out_dir: Path, model_name: str = "") -> list[Path]:
    """Layer-wise max/mean ratio of M per head: median over heads (solid) and max (dotted)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    lam = result.definition["lam"]
    for i, (site, layers) in enumerate(result.sites.items()):
        x = [m["layer"] for m in layers]
        c = f"C{i}"
        ax.plot(x, [m["max_mean_ratio_median"] for m in layers], "-o", ms=3, color=c,
                label=f"{SITE_LABEL.get(site, site)} median over heads")
        ax.plot(x, [m["max_mean_ratio_max"] for m in layers], ":", color=c, lw=1)
    ax.axhline(lam, color="k", ls="--", lw=0.8, label=f"λ = {lam:g}")
    ax.set_xlabel("layer")
    ax.set_ylabel("max_d M[h,d] / mean_d M[h,d]")
    ax.set_title(f"{model_name}: concentration per layer (dotted = max over heads)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, "ratio_curves")


def all_figures(result: Analysis, out_dir: Path, bar_layer: int,
                model_name: str = "") -> dict[str, list[Path]]:
    """Every figure for a result; returns {figure name: [png, svg]}."""
    top = shared_ratio_max(result)
    out = {f"heatmap_{s}": heatmaps(result, s, out_dir, model_name, vmax=top) for s in result.sites}
    out["band_map"] = band_map(result, out_dir, model_name)
    out["bars3d"] = bars3d(result, bar_layer, out_dir, model_name)
    out["ratio_curves"] = ratio_curves(result, out_dir, model_name)
    return out


def condition_bars(panels: dict[str, dict[str, dict[str, Score | None]]], conditions: list[str],
                   out_dir: Path, name: str, title: str) -> list[Path]:
    """One panel per metric, stacked; in each, grouped bars: one group per task, one bar per
    condition (side by side, same order in every group), 95% CI whiskers and a dashed chance line
    per task. ``panels[label][task][condition]`` is a ``records.Score`` or None."""
    panels = {k: v for k, v in panels.items() if v}
    most = max(len(t) for t in panels.values())
    width = 0.8 / max(len(conditions), 1)
    fig, axes = plt.subplots(len(panels), 1, squeeze=False, constrained_layout=True,
                             figsize=(max(6.0, 1.1 * most * max(len(conditions), 4) / 4), 3.6 * len(panels)))
    for ax, (label, table) in zip(axes[:, 0], panels.items()):
        tasks = list(table)
        for j, cond in enumerate(conditions):
            xs, ys, lo, hi = [], [], [], []
            for i, task in enumerate(tasks):
                s = table[task].get(cond)
                if s is None:
                    continue
                xs.append(i - 0.4 + (j + 0.5) * width)
                ys.append(100 * s.accuracy)
                lo.append(max(0.0, 100 * (s.accuracy - s.ci95[0])))  # rounding can cross
                hi.append(max(0.0, 100 * (s.ci95[1] - s.accuracy)))
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=cond, color=f"C{j % 10}",
                   error_kw={"lw": 0.7})
        for i, task in enumerate(tasks):
            chance = next(s for s in table[task].values() if s is not None).chance
            ax.hlines(100 * chance, i - 0.45, i + 0.45, colors="k", linestyles="--", lw=0.8)
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(tasks, fontsize=8, rotation=15)
        ax.set_xlim(-0.6, most - 0.4)
        ax.set_ylabel(f"{label}\n% (95% CI; dashed = chance)", fontsize=8)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title(title, fontsize=10)
    axes[0, 0].legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out_dir, name)


def condition_heatmap(table: dict[str, dict[str, Score | None]], conditions: list[str],
                      out_dir: Path, name: str, title: str) -> list[Path]:
    """Conditions (rows) × tasks (columns), each cell the accuracy % written in it and coloured by
    its change from the first condition (the reference): readable where bars for dozens of
    conditions are not. ``table[task][condition]`` is a ``records.Score`` or None."""
    tasks = list(table)
    acc = np.array([[np.nan if table[t].get(c) is None else 100 * table[t][c].accuracy for t in tasks]
                    for c in conditions])
    delta = acc - acc[:1]
    lim = max(10.0, float(np.nanmax(np.abs(delta))) if np.isfinite(delta).any() else 10.0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(tasks), 1.2 + 0.3 * len(conditions)),
                           constrained_layout=True)
    im = ax.imshow(delta, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(conditions)):
        for j in range(len(tasks)):
            if np.isfinite(acc[i, j]):
                dark = abs(delta[i, j]) > 0.6 * lim
                ax.text(j, i, f"{acc[i, j]:.0f}", ha="center", va="center", fontsize=6.5,
                        color="w" if dark else "k")
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, fontsize=7, rotation=30, ha="right")
    ax.set_yticks(range(len(conditions)))
    ax.set_yticklabels(conditions, fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.6).set_label(f"points vs {conditions[0]}", fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, out_dir, name)


def layer_lines(series: dict[str, list[float]], out_dir: Path, name: str, title: str,
                ylabel: str) -> list[Path]:
    """One line per condition over layers (e.g. attention mass on the first token)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for j, (label, ys) in enumerate(series.items()):
        ax.plot(range(len(ys)), ys, "-o", ms=2.5, lw=1.2, color=f"C{j % 10}", label=label)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, name)


def paired_intervals(panels: dict[str, dict[str, tuple]], arms: tuple[str, str], out_dir: Path,
                     name: str, title: str, reference: dict[str, float] | None = None) -> list[Path]:
    """One panel per reading; one row per setting with its two arms side by side, each a point
    (accuracy, low, high as fractions, or None) with its 95% interval — where the two intervals
    separate is visible at a glance. ``reference[panel]`` draws a dotted line (e.g. the original)."""
    rows = list(next(iter(panels.values())))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 1.8, 0.32 * len(rows) + 1.4),
                             sharey=True, squeeze=False, constrained_layout=True)
    for ax, (label, per) in zip(axes[0], panels.items()):
        for j, arm in enumerate(arms):
            pts = [(i, per[r][j]) for i, r in enumerate(rows) if per[r][j] is not None]
            ys = [i + (j - 0.5) * 0.3 for i, _ in pts]
            xs = np.array([[100 * p[0], 100 * (p[0] - p[1]), 100 * (p[2] - p[0])] for _, p in pts]).reshape(-1, 3)
            ax.errorbar(xs[:, 0], ys, xerr=np.maximum(xs[:, 1:].T, 0), fmt="o", ms=3.5, capsize=2,
                        lw=0.9, color=f"C{j}", label=arm)
        if reference and label in reference:
            ax.axvline(100 * reference[label], color="k", ls=":", lw=0.9)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("accuracy % (95% CI)")
        ax.set_xlim(-2, 102)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(rows)))
    axes[0][0].set_yticklabels(rows, fontsize=7)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title, fontsize=10)
    return _save(fig, out_dir, name)
