"""``band.md`` (the runs, the rules per base, the pretrained references) and ``band.png`` of a
set of ``Band`` records."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mvjax.analysis.experiments.band.claims import RULE, FirstRule, SlopeLaw, fit_points
from mvjax.analysis.experiments.band.results import Band, seeds_of


def layer_groups(band: Band) -> dict[str, list[int]]:
    """Layers grouped by (θ, window): a model mixing local and global layers is read per group."""
    groups: dict[str, list[int]] = {}
    for l, (theta, window) in enumerate(zip(band.theta, band.window)):
        key = f"theta={theta:g}" + ("" if window is None else f", window={window}")
        groups.setdefault(key, []).append(l)
    return groups


def reference_rows(band: Band) -> list[dict[str, Any]]:
    """Per layer group of a pretrained model: median wavelength and pair, against its context and
    (for windowed layers) its window."""
    rows = []
    for key, layers in layer_groups(band).items():
        w = band.median_wavelength(layers)
        window = band.window[layers[0]]
        rows.append({"model": band.name, "layers": key, "n_layers": len(layers),
                     "median_wavelength": w, "median_pair": band.median_pair(layers),
                     "n_pairs": band.n_pairs, "context": band.context,
                     "wavelength_over_context": w / band.context,
                     "wavelength_over_window": None if window is None else w / window})
    return rows


def table(runs: Sequence[Band], refs: Sequence[Band], first: FirstRule, slope: SlopeLaw | None = None) -> str:
    head = ("| run | θ | context | seed | tokens | first λ=5 K entry (tokens) | median top-pair (of n) "
            "| median wavelength W | W / context | K top-pair wavelength per layer (median over heads) |")
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for b in sorted(runs, key=lambda b: (b.theta[0], b.context, -1 if b.seed is None else b.seed)):
        per_layer = " / ".join(f"{np.median(w):.0f}" for w in b.wavelengths_LxH)
        entry = "none" if b.first_massive_tokens is None else f"{b.first_massive_tokens / 1e6:.2f}M"
        lines.append(f"| {b.name} | {b.theta[0]:g} | {b.context} | {b.seed} | "
                     f"{(b.tokens or 0) / 1e6:.1f}M | {entry} | {b.median_pair():g} (of {b.n_pairs}) | "
                     f"{b.median_wavelength():.0f} | {b.median_wavelength() / b.context:.2f} | "
                     f"{per_layer} |")
    lines += ["", "| θ | contexts | W / context | median pair | max/min of W/context | verdict |",
              "|---|---|---|---|---|---|"]
    for theta, v in first.per_base.items():
        lines.append(f"| {theta} | {' / '.join(map(str, v.contexts))} | "
                     f"{' / '.join(f'{r:.2f}' for r in v.wavelength_over_context)} | "
                     f"{' / '.join(f'{p:g}' for p in v.median_pair)} | {v.ratio_spread:.2f} | "
                     f"{v.verdict} |")
    lines += ["", f"**Law: {first.law}.** Rule (fixed before the runs): {RULE}"]
    if slope is not None:
        lines += ["", "Second rule (the one that decides, `RULE-slope.md`): slope of log W on log C "
                  "over (run, layer ≥ 1, K head), bootstrap over seeds and heads.", "",
                  "| θ | contexts | seeds | points | slope [95% CI] | pairs per context doubling "
                  "(if it follows) | verdict |", "|---|---|---|---|---|---|---|"]
        for theta, v in slope.per_base.items():
            fit = "n/a" if v.slope is None else f"{v.slope:.2f} [{v.ci95[0]:.2f}, {v.ci95[1]:.2f}]"
            lines.append(f"| {theta} | {' / '.join(map(str, v.contexts))} | "
                         f"{', '.join(map(str, v.seeds))} | {v.n_points or 0} | {fit} | "
                         f"{v.pair_grid['pairs_per_context_doubling']:.2f} | {v.verdict} |")
        lines += ["", f"**The band follows the context: {slope.claim.verdict}.**"]
    if refs:
        lines += ["", "| pretrained | layers | n | median top-pair (of n) | median wavelength W "
                  "| context | W / context | W / window |", "|---|---|---|---|---|---|---|---|"]
        for b in refs:
            for r in reference_rows(b):
                ow = "" if r["wavelength_over_window"] is None else f"{r['wavelength_over_window']:.2f}"
                lines.append(f"| {r['model']} | {r['layers']} | {r['n_layers']} | "
                             f"{r['median_pair']:g} (of {r['n_pairs']}) | {r['median_wavelength']:.0f} | "
                             f"{r['context']} | {r['wavelength_over_context']:.2f} | {ow} |")
    return "\n".join(lines) + "\n"


def draw(runs: Sequence[Band], refs: Sequence[Band], path: Path, slope: SlopeLaw | None = None) -> Path:
    """Left: each run's median top-pair wavelength (layers ≥ 1 × heads) against its context, one
    marker per seed, and per base the fitted line of the slope rule through its points (dotted:
    W = C and W = 2.5 C); pretrained layer groups at their context, or their window where they have
    one. Right: the same as W / context, every run and every model's layer group, so 'follows the
    context' reads as a flat band."""
    import matplotlib  # local: matplotlib is heavy and only drawing this figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local: as matplotlib
    import matplotlib.ticker  # local: as matplotlib

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    bases = sorted({r.theta[0] for r in runs})
    markers = "osD^v<>"
    for i, theta in enumerate(bases):
        group = sorted((r for r in runs if r.theta[0] == theta), key=lambda r: r.context)
        for k, s in enumerate(seeds_of(group)):
            mine = [r for r in group if r.seed == s]
            W = [r.median_wavelength(range(1, len(r.wavelengths_LxH)) or None) for r in mine]  # layers ≥ 1
            C = [r.context for r in mine]
            a.plot(C, W, markers[k % len(markers)], color=f"C{i}", alpha=0.8,
                   label=f"θ={theta:g}, seed {s}")
            b.plot(C, np.array(W) / np.array(C), markers[k % len(markers)], color=f"C{i}", alpha=0.8)
        logC, logW = fit_points(group)
        fit = slope.per_base.get(f"{theta:g}") if slope is not None else None
        if fit is not None and fit.slope is not None and np.ptp(logC) > 0:
            C = np.array(sorted({r.context for r in group}), float)
            W = np.exp(logW.mean() + fit.slope * (np.log(C) - logC.mean()))
            a.plot(C, W, "-", color=f"C{i}", lw=1.2, label=f"θ={theta:g} fit: slope {fit.slope:.2f} "
                   f"[{fit.ci95[0]:.2f}, {fit.ci95[1]:.2f}]")
            b.plot(C, W / C, "-", color=f"C{i}", lw=1.2)
    for j, ref in enumerate(refs):
        for k, (key, layers) in enumerate(layer_groups(ref).items()):
            span = ref.window[layers[0]] or ref.context  # a windowed layer sees its window
            w = ref.median_wavelength(layers)
            style = dict(marker="*^sD"[k % 4], ms=10, ls="none", color=f"C{len(bases) + j}")
            a.plot([span], [w], **style, label=f"{ref.name} {key} (at {span} tokens)")
            b.plot([span], [w / span], **style)
    if runs:
        C = np.array(sorted({r.context for r in runs}), float)
        for f, ls in ((1.0, ":"), (2.5, "--")):
            a.plot(C, f * C, ls, color="gray", lw=0.8, label=f"W = {f:g} × context")
    a.set(xscale="log", yscale="log", xlabel="training context, or window (tokens)",
          ylabel="K top-pair wavelength W (tokens)", title="median over layers ≥ 1 × heads")
    b.set(xscale="log", yscale="log", xlabel="training context, or window (tokens)",
          ylabel="W / context", title="W / context: runs and pretrained layer groups")
    for ax in (a, b):
        ax.grid(alpha=0.3, which="both")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not 2×10², on the log axes
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    a.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
