"""``mvjax compare RESULTS_DIR... --out DIR``: any set of ``mvjax analyze`` and
``mvjax experiment rope-cause`` results side by side — max/mean, λ=5 counts and the low-frequency
band share of Q, K and V against relative depth — so a model trained here can be held against a
pretrained one in one command.

Every entry is measured with the same functions (``analysis.concentration.layer_summary`` on the
stored norm matrices, the fixed definition of ``analysis.massive``), whatever produced it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from mvjax.analysis.analyze import RESULTS_FILE
from mvjax.analysis.massive import top_share
from mvjax.analysis.summaries import DEFINITION, SiteSummary, summarize_norms
from mvjax.atomic import atomic_file, check_own_dir, read_json_state, require, write_json
from mvjax.config import ModelConfig

SITES = (("q_rot", "q"), ("k_rot", "k"), ("v", "v"))  # preferred site, fallback
OWN_FILES = ("compare.json", "compare.png", "compare.md")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One model in the comparison: its label and {site: SiteSummary}."""

    label: str
    sites: dict[str, SiteSummary]
    shape: tuple[int, int, int] | None = None  # layers, query heads, head_dim
    top_share: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)  # site: L×H
    first_token_mass: list[float] | None = None  # per layer, mean over heads (None: not recorded)

    def site(self, choices: tuple[str, str]) -> SiteSummary | None:
        """The preferred site, else its fallback (post- vs pre-RoPE), else None."""
        return next((self.sites[s] for s in choices if s in self.sites), None)

    def site_name(self, choices: tuple[str, str]) -> str | None:
        return next((s for s in choices if s in self.sites), None)


def top_shares(norms: dict[str, Any]) -> dict[str, list[list[float]]]:
    """{site: layers × heads} top-dim energy share (``analysis.massive.top_share``) of L×H×D norms."""
    return {s: [top_share(M).tolist() for M in M_LxHxD] for s, M_LxHxD in norms.items()}


def load_entries(directory: str | Path) -> list[Entry]:
    """Every model of an analyze dir (massive_values.json) or an experiment dir (results.json:
    every arm, and the reference when present)."""
    d = Path(directory)
    if (d / "results.json").is_file():
        path = d / "results.json"
        res = read_json_state(path, f"rerun the experiment that wrote {d}")
        kind = res.get("experiment") if isinstance(res, dict) else None
        if kind in ("disrupt", "quantize"):
            raise ValueError(f"{path} is a {kind} result, which holds no per-layer norms: compare "
                             "takes `mvjax analyze` and `mvjax experiment rope-cause` results")
        prefix = (f"{d.parent.parent.name}/{d.parent.name}/{d.name}" if d.name.startswith("seed")
                  else d.name)  # rope-cause-seeds/ARM/seedN
        entries = [Entry(f"{prefix}/{arm}", _final(a, f"{path} (arm {arm})"), _shape(a),
                         top_shares(a.get("final_M") or {}), _mass(a.get("final_first_token_mass")))
                   for arm, a in require(res, "arms", dict, path).items()]
        if res.get("reference"):
            ref = res["reference"]
            entries.append(Entry(f"{d.name}/reference {require(res, 'reference.model', str, path)}",
                                 _final(ref, f"{path} (reference)"), _shape(ref),
                                 top_shares(ref.get("final_M") or {}),
                                 _mass(ref.get("final_first_token_mass"))))
        return entries
    if (d / RESULTS_FILE).is_file():
        path = d / RESULTS_FILE
        res = read_json_state(path, f"rerun `mvjax analyze` into {d}")
        cfg = ModelConfig.from_dict(require(res, "model.config", dict, path))
        norms = {s: [require(m, "M", list, f"{path} (site {s})") for m in
                     require(res, f"sites.{s}", list, path)] for s in require(res, "sites", dict, path)}
        name = Path(require(res, "model.name", str, path)).name
        return [Entry(d.name if name == d.name else f"{d.name} ({name})",
                      summarize_norms(norms, cfg), (cfg.num_layers, cfg.num_heads, cfg.head_dim),
                      top_shares(norms), _mass(res.get("first_token_mass")))]
    raise FileNotFoundError(f"{d} holds neither results.json (mvjax experiment) nor "
                            "massive_values.json (mvjax analyze): pass such a directory")


def _shape(arm: Any) -> tuple[int, int, int] | None:
    keys = ("num_layers", "num_heads", "head_dim")
    return tuple(arm[k] for k in keys) if all(isinstance(arm.get(k), int) for k in keys) else None


def _mass(per_layer: Any) -> list[float] | None:
    """First-token mass per layer (a per-layer list of per-head values is averaged over heads)."""
    if not per_layer:
        return None
    return [float(np.mean(m)) for m in per_layer]


LAYER_KEYS = {"n_massive": int, "max_mean_median": (int, float),
              "band_low_share_median": (int, float, type(None))}


def _final(arm: Any, where: str) -> dict[str, SiteSummary]:
    """{site: SiteSummary} of an arm (or the reference) of a rope-cause results.json, every key
    compare reads checked first."""
    out = {}
    for site in require(arm, "final", dict, where):
        layers = require(arm, f"final.{site}.layers", list, where)
        for layer in layers:
            for key, kind in LAYER_KEYS.items():
                require(layer, key, kind, f"{where} final.{site}.layers[]")
        out[site] = SiteSummary(tuple(layers), arm["final"][site].get("agreement"))
    return out


def site_row(summary: SiteSummary) -> dict[str, Any]:
    """compare.json's numbers of one site: λ count, median max/mean, median band share."""
    band = [np.nan if b is None else b for b in summary.column("band_low_share_median")]
    return {"n_massive": int(sum(summary.column("n_massive"))),
            "max_mean_median": float(np.median(summary.column("max_mean_median"))),
            "band_low_share_median": None if np.all(np.isnan(band)) else float(np.nanmedian(band))}


def _fmt(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _cells(values: list[Any], digits: int = 2) -> str:
    return " / ".join(_fmt(v, digits) for v in values)


def table_row(entry: Entry) -> dict[str, Any]:
    """The numbers of one compare.md row, per site Q, K, V (post-RoPE where it exists): λ=5
    count, first layer with a massive entry, median low-frequency band share, top-pair agreement
    and its chance, top-dim energy share (max and median over heads and layers), first-token mass
    (mean over layers of the per-layer mean over heads)."""
    row: dict[str, Any] = {"label": entry.label, "shape": entry.shape, "sites": {}}
    for choices in SITES:
        name = entry.site_name(choices)
        if name is None:
            row["sites"][choices[0]] = None
            continue
        t = entry.sites[name].totals()
        shares = np.asarray(entry.top_share[name], np.float64) if name in entry.top_share else None
        row["sites"][choices[0]] = {
            "site": name, "n_massive": t.n_massive, "first_massive_layer": t.first_massive_layer,
            "band_low_share_median": t.band_low_share_median,
            "top_pair_agreement": t.top_pair_agreement, "agreement_chance": t.agreement_chance,
            "top_share_max": None if shares is None else float(shares.max()),
            "top_share_median": None if shares is None else float(np.median(shares))}
    mass = entry.first_token_mass
    row["first_token_mass"] = None if mass is None else float(np.mean(mass))
    return row


TABLE_COLUMNS = (
    ("n_massive", "λ=5 count", 0), ("top_share_max", "top-dim share max", 3),
    ("top_share_median", "top-dim share median", 3),
    ("band_low_share_median", "low-freq band share", 2),
    ("first_massive_layer", "first massive layer", 0))


def render_table(entries: list[Entry]) -> str:
    """compare.md: one row per entry, every cell ``Q / K / V``; pure rendering of ``entries``."""
    d = DEFINITION.to_dict()
    lines = [
        f"Massive: M[h,d] > λ · mean of M over the {d.get('mean_over', 'head')} (λ = "
        f"{d.get('lam', d.get('lambda'))}, per-head mean), M = the L2 norm over tokens of one "
        "site's activation. Cells are Q / K / V; Q and K are post-RoPE (q_rot, k_rot) where the "
        "model has them. λ=5 count: massive (layer, head, dim) entries summed over layers. "
        "Top-dim share: per head, the share of Σ_d M² in its largest dim (flat = 1/head_dim), "
        "max and median over heads × layers. Low-freq band share: share of the rotating energy "
        "in the low-frequency half, median over heads then layers (0.5 = even). First massive "
        "layer: 0-based, – = none. Top-pair agreement: largest share of (layer, head)s whose "
        "strongest RoPE pair is the same pair, with its chance level. First-token mass: "
        "attention on position 0, mean over heads and layers (– = not recorded).",
        "",
        "| model / arm | layers × heads × head_dim (flat 1/d) | "
        + " | ".join(f"{name} Q / K / V" for _, name, _ in TABLE_COLUMNS)
        + " | top-pair agreement (chance) Q / K / V | first-token mass |",
        "|" + "---|" * (len(TABLE_COLUMNS) + 4)]
    for entry in entries:
        row = table_row(entry)
        sites = [row["sites"][c[0]] for c in SITES]
        shape = "–" if row["shape"] is None else (
            " × ".join(map(str, row["shape"])) + f" ({1 / row['shape'][2]:.3f})")
        cells = [_cells([None if s is None else s[key] for s in sites], digits)
                 for key, _, digits in TABLE_COLUMNS]
        agreement = " / ".join(
            "–" if s is None or s["top_pair_agreement"] is None else
            f"{s['top_pair_agreement']:.2f} ({_fmt(s['agreement_chance'], 2)})" for s in sites)
        lines.append(f"| {row['label']} | {shape} | " + " | ".join(cells)
                     + f" | {agreement} | {_fmt(row['first_token_mass'], 3)} |")
    return "\n".join(lines) + "\n"


def compare(dirs: list[str], out: str | Path) -> dict[str, Any]:
    """Write compare.png and compare.json; returns the table."""
    import matplotlib  # local: matplotlib is heavy and only drawing this figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local: as matplotlib

    out = check_own_dir(out, OWN_FILES, "compare outputs")
    entries = [e for d in dirs for e in load_entries(d)]
    out.mkdir(parents=True, exist_ok=True)
    metrics = (("max_mean_median", "max/mean (median over heads)"),
               ("n_massive", "λ=5 massive entries"),
               ("band_low_share_median", "low-frequency band share"))
    fig, axes = plt.subplots(len(metrics), len(SITES), figsize=(12, 9), squeeze=False)
    table: dict[str, Any] = {}
    for i, entry in enumerate(entries):
        table[entry.label] = {}
        for c, choices in enumerate(SITES):
            summary = entry.site(choices)
            if summary is None:
                continue
            x = np.arange(len(summary.layers)) / max(len(summary.layers) - 1, 1)
            for r, (key, _) in enumerate(metrics):
                y = [np.nan if v is None else v for v in summary.column(key)]
                axes[r, c].plot(x, y, "-o", ms=2.5, color=f"C{i % 10}", label=entry.label)
            table[entry.label][choices[0]] = site_row(summary)
    for c, choices in enumerate(SITES):
        axes[0, c].set_title(choices[0].split("_")[0].upper(), fontsize=9)
        axes[-1, c].set_xlabel("relative depth", fontsize=8)
    for r, (_, name) in enumerate(metrics):
        axes[r, 0].set_ylabel(name, fontsize=8)
        for ax in axes[r]:
            ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=6)
    with atomic_file(out / "compare.png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    for entry in entries:
        table[entry.label]["row"] = table_row(entry)
    write_json(out / "compare.json", table)
    with atomic_file(out / "compare.md") as tmp:
        Path(tmp).write_text(render_table(entries))
    return table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="draw analyze / experiment results side by side "
                       "(max/mean, λ counts, low-frequency share vs relative depth)")
    p.add_argument("dirs", nargs="+", metavar="RESULTS_DIR",
                   help="directories written by `mvjax analyze` or `mvjax experiment`")
    p.add_argument("--out", required=True, help="where compare.png, compare.json and compare.md go")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    table = compare(args.dirs, args.out)
    print(json.dumps({"out": args.out, "entries": table}, indent=1))
    return 0
