"""``report.md`` for a massive-values result: the definition first, then the headline numbers, then
the figures — so a reader sees what was measured before what was found."""

from __future__ import annotations

from pathlib import Path

from mvjax.analysis.massive import Analysis
from mvjax.analysis.plots import SITE_LABEL
from mvjax.provenance import provenance_lines


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def headline_table(result: Analysis) -> str:
    rows = ["| site | massive entries | layers with any | first layer | in low-freq half | "
            "top dim in low-freq half | median max/mean | top-dim wavelength (tokens) |",
            "|---|---|---|---|---|---|---|---|"]
    for site, s in result.summary.items():
        if not isinstance(s, dict):
            continue
        first = "none" if s["first_massive_layer"] is None else str(s["first_massive_layer"])
        wl = "n/a" if s.get("top_dim_wavelength_median") is None else f"{s['top_dim_wavelength_median']:.0f}"
        rows.append(f"| {SITE_LABEL.get(site, site)} | {s['n_massive']} | {s['layers_with_massive']} "
                    f"| {first} | {_pct(s['massive_low_freq_share'])} | "
                    f"{_pct(s['top_dim_low_freq_share'])} | "
                    f"{s['max_mean_ratio_median_over_layers']:.2f} | {wl} |")
    return "\n".join(rows)


def _sink_lines(result: Analysis) -> list[str]:
    """The per-layer first-token (attention-sink) mass, when the result records it."""
    mass = result.first_token_mass_by_layer()
    if mass is None:
        return []
    return ["", "Attention on the first token (BOS), mean over heads and over every query after it, "
            "layer 0 onward: " + ", ".join(f"{m:.3f}" for m in mass) + "."]


def write_report(result: Analysis, figures: dict[str, list[Path]], out_dir: Path) -> Path:
    """Write ``out_dir/report.md`` linking the PNG figures (relative paths)."""
    d = result.definition
    data, model = result.data, result.model
    first = result.summary.get("first_qk_concentration_layer")
    lines = [
        f"# Massive values in Q/K/V — {model['name']}",
        "",
        "## Definition (fixed before the run)",
        f"- {d['rule']}.",
        f"- Aggregation: {d['aggregation']} (one M over the whole dataset; see analysis/massive.py).",
        "- Low-frequency half: rotating dims whose RoPE frequency is below the median of the "
        "rotating dims' frequencies (from mvjax.positional.dim_to_frequency). V is labelled with "
        "the same dims as a contrast; its low-frequency share should sit near 50%.",
        "",
        "## Run",
        f"- Model: `{model['name']}` — {model['config']['num_layers']} layers, "
        f"{model['config']['num_heads']} query heads, {model['config']['num_kv_heads']} KV heads, "
        f"head_dim {model['config']['head_dim']}, RoPE layout {model['layout']}.",
        f"- Data: {data['description']}; {data['n_sequences']} sequences × {data['seq_len']} tokens "
        f"= {data['n_tokens']} tokens; BOS at the start of each sequence: {data['bos']}.",
        *provenance_lines(result.provenance or {}),
        "",
        "## Headline numbers",
        "",
        headline_table(result),
        "",
        "Massive entries are summed over layers and heads; shares are of those entries (or of the "
        "heads' top dims) that sit in rotating dims; median max/mean is the median over layers of "
        "the median over heads of max_d M / mean_d M; wavelength = 2π / frequency of each head's "
        "top dim, median over heads and layers.",
        "",
        f"First layer with a massive Q or K entry: **{'none' if first is None else first}**.",
        *_sink_lines(result),
        "",
        "## Figures",
    ]
    captions = {"ratio_curves": "Max/mean ratio of M per layer",
                "band_map": "Energy per RoPE frequency band, layer by layer",
                "bars3d": "3-D view of one layer"}
    for name, paths in figures.items():
        png = next(p for p in paths if p.suffix == ".png")
        site = name.removeprefix("heatmap_")
        caption = captions.get(name, f"Head × dim heatmaps, {SITE_LABEL.get(site, site)}")
        lines += ["", f"### {caption}", "", f"![{caption}]({png.relative_to(out_dir)})"]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
