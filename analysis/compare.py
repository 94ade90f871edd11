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
from typing import TYPE_CHECKING, Any

from mvjax.atomic import atomic_file, check_own_dir, read_json_state, require, write_json

if TYPE_CHECKING:  # imported lazily: `mvjax --help` stays instant
    from mvjax.analysis.summaries import SiteSummary

SITES = (("q_rot", "q"), ("k_rot", "k"), ("v", "v"))  # preferred site, fallback
OWN_FILES = ("compare.json", "compare.png")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One model in the comparison: its label and {site: SiteSummary}."""

    label: str
    sites: dict[str, SiteSummary]

    def site(self, choices: tuple[str, str]) -> SiteSummary | None:
        """The preferred site, else its fallback (post- vs pre-RoPE), else None."""
        return next((self.sites[s] for s in choices if s in self.sites), None)


def load_entries(directory: str | Path) -> list[Entry]:
    """Every model of an analyze dir (massive_values.json) or an experiment dir (results.json:
    every arm, and the reference when present)."""
    from mvjax.analysis.analyze import RESULTS_FILE
    from mvjax.analysis.summaries import summarize_norms
    from mvjax.config import ModelConfig

    d = Path(directory)
    if (d / "results.json").is_file():
        path = d / "results.json"
        res = read_json_state(path, f"rerun the experiment that wrote {d}")
        kind = res.get("experiment") if isinstance(res, dict) else None
        if kind in ("disrupt", "quantize"):
            raise ValueError(f"{path} is a {kind} result, which holds no per-layer norms: compare "
                             "takes `mvjax analyze` and `mvjax experiment rope-cause` results")
        entries = [Entry(f"{d.name}/{arm}", _final(a, f"{path} (arm {arm})"))
                   for arm, a in require(res, "arms", dict, path).items()]
        if res.get("reference"):
            ref = res["reference"]
            entries.append(Entry(f"{d.name}/reference {require(res, 'reference.model', str, path)}",
                                 _final(ref, f"{path} (reference)")))
        return entries
    if (d / RESULTS_FILE).is_file():
        path = d / RESULTS_FILE
        res = read_json_state(path, f"rerun `mvjax analyze` into {d}")
        cfg = ModelConfig.from_dict(require(res, "model.config", dict, path))
        norms = {s: [require(m, "M", list, f"{path} (site {s})") for m in
                     require(res, f"sites.{s}", list, path)] for s in require(res, "sites", dict, path)}
        return [Entry(f"{d.name} ({require(res, 'model.name', str, path)})",
                      summarize_norms(norms, cfg))]
    raise FileNotFoundError(f"{d} holds neither results.json (mvjax experiment) nor "
                            "massive_values.json (mvjax analyze): pass such a directory")


LAYER_KEYS = {"n_massive": int, "max_mean_median": (int, float),
              "band_low_share_median": (int, float, type(None))}


def _final(arm: Any, where: str) -> dict[str, SiteSummary]:
    """{site: SiteSummary} of an arm (or the reference) of a rope-cause results.json, every key
    compare reads checked first."""
    from mvjax.analysis.summaries import SiteSummary

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
    import numpy as np

    band = [np.nan if b is None else b for b in summary.column("band_low_share_median")]
    return {"n_massive": int(sum(summary.column("n_massive"))),
            "max_mean_median": float(np.median(summary.column("max_mean_median"))),
            "band_low_share_median": None if np.all(np.isnan(band)) else float(np.nanmedian(band))}


def compare(dirs: list[str], out: str | Path) -> dict[str, Any]:
    """Write compare.png and compare.json; returns the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
    write_json(out / "compare.json", table)
    return table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="draw analyze / experiment results side by side "
                       "(max/mean, λ counts, low-frequency share vs relative depth)")
    p.add_argument("dirs", nargs="+", metavar="RESULTS_DIR",
                   help="directories written by `mvjax analyze` or `mvjax experiment`")
    p.add_argument("--out", required=True, help="where compare.png and compare.json go")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    table = compare(args.dirs, args.out)
    print(json.dumps({"out": args.out, "entries": table}, indent=1))
    return 0
