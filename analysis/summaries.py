"""Norm matrices and training logs turned into typed summaries, for any experiment: per site, the
per-layer concentration numbers and the top-pair agreement (``SiteSummary``), their headline over
layers (``SiteTotals``), and the same numbers over training (``Curves``: layers × logged steps).

``rope-cause``, ``compare`` and ``emergence`` all measure with these, with the massive definition
fixed here (λ=5, per-head mean) and never a tuned one. Each record reads and writes the JSON the
experiments have always written (``from_json`` / ``to_json``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mvjax.analysis.concentration import labels_for, layer_summary, top_agreement
from mvjax.analysis.massive import MassiveDefinition
from mvjax.sites import STAT_SITES

DEFINITION = MassiveDefinition()
CURVE_SITES = STAT_SITES
CURVE_KEYS = ("n_massive", "max_mean_median", "max_mean_max", "band_low_share_median",
              "top_pair_share_median", "top_dim_wavelength_median", "rotated_energy_share")
DEFINITIONS = {
    "massive": DEFINITION.to_dict(),
    "norm_matrix": "M[h,d] = sqrt(sum over the tokens of one batch of held-out natural text of "
                   "x[h,d]^2) (training logs), or over the analyze sample (final)",
    "max_mean": "per head max_d M / mean_d M; median (or max) over the heads of a layer",
    "band_low_share": "per head, share of sum M^2 over rotating dims that lies in the "
                      "low-frequency half (frequency below the median of the rotating dims'); "
                      "median over heads; 0.5 = even. NoPE/ALiBi dims are labelled with RoPE "
                      "theta=1e4 (half layout) at the same head_dim, so they should sit near 0.5",
    "top_pair_share": "per head, share of the rotating energy in its strongest RoPE pair "
                      "(2/head_dim when even); median over heads",
    "top_agreement": "over all (layer, head)s, the largest share whose strongest RoPE pair "
                     "(pair energy, rotation-invariant) is the same pair; chance = expected "
                     "modal share of uniform random picks (>= 1/number of heads)",
    "first_token_mass": "per head, mean over valid queries t >= 1 of the attention probability "
                        "on key position 0 (BOS); mean over heads",
    "top_dim_wavelength": "2*pi / RoPE frequency of each head's largest dim (NoPE/ALiBi: the "
                          "theta=1e4 label of that dim), median over heads",
    "k_over_q": "max_mean median of K / that of Q (post-RoPE sites), per layer",
    "rotated_energy_share": "share of a layer's sum M^2 in rotating dims (partial RoPE: compare "
                            "with the rotated fraction 0.25)",
}


@dataclasses.dataclass(frozen=True)
class SiteTotals:
    """Headline numbers of one site over layers."""

    n_massive: int
    first_massive_layer: int | None
    max_mean_median: float
    max_mean_max: float
    band_low_share_median: float | None
    top_pair_agreement: float | None
    agreement_chance: float | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SiteSummary:
    """One site of one model: ``layers`` holds ``analysis.concentration.layer_summary`` per layer
    (keys ``CURVE_KEYS`` and more), ``agreement`` the ``top_agreement`` over layers × heads."""

    layers: tuple[dict[str, Any], ...]
    agreement: dict[str, Any]

    def column(self, key: str) -> list[Any]:
        """One per-layer number, over layers."""
        return [m[key] for m in self.layers]

    def totals(self) -> SiteTotals:
        band = [b for b in self.column("band_low_share_median") if b is not None]
        counts = self.column("n_massive")
        return SiteTotals(
            n_massive=int(sum(counts)),
            first_massive_layer=next((i for i, n in enumerate(counts) if n), None),
            max_mean_median=float(np.median(self.column("max_mean_median"))),
            max_mean_max=float(max(self.column("max_mean_max"))),
            band_low_share_median=float(np.median(band)) if band else None,
            top_pair_agreement=self.agreement["share"], agreement_chance=self.agreement["chance"])

    def to_json(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "agreement": self.agreement}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SiteSummary":
        return cls(tuple(data["layers"]), data["agreement"])


def summarize_norms(norms: dict[str, Any], cfg) -> dict[str, SiteSummary]:
    """{site: SiteSummary} of L×H×D norm matrices, labelled with the model's own dims."""
    out: dict[str, SiteSummary] = {}
    for site, M_LxHxD in norms.items():
        M = np.asarray(M_LxHxD, np.float64)
        labels = [labels_for(cfg, layer) for layer in range(M.shape[0])]
        out[site] = SiteSummary(
            tuple(layer_summary(M[layer], pairs, freqs, DEFINITION)
                  for layer, (pairs, freqs, _) in enumerate(labels)),
            top_agreement(M, labels[0][0]))
    return out


def sites_json(sites: dict[str, SiteSummary]) -> dict[str, Any]:
    return {s: v.to_json() for s, v in sites.items()}


def sites_from_json(data: dict[str, Any]) -> dict[str, SiteSummary]:
    return {s: SiteSummary.from_json(v) for s, v in data.items()}


@dataclasses.dataclass(frozen=True)
class Curves:
    """Numbers over training: ``sites[site][key]`` is layers × logged steps for every
    ``CURVE_KEYS`` key, ``agreement[site]`` one share per step, ``first_token_mass`` layers ×
    steps (mean over heads)."""

    steps: list[int]
    tokens: list[int]
    sites: dict[str, dict[str, list[list[Any]]]]
    agreement: dict[str, list[Any]]
    first_token_mass: list[list[float]]

    def series(self, site: str, key: str) -> np.ndarray:
        """layers × steps as floats (None → NaN)."""
        return np.array([[np.nan if v is None else v for v in layer]
                         for layer in self.sites[site][key]], np.float64)

    def rows(self) -> list[dict[str, Any]]:
        """The curves as a tidy table: one row per (site, layer, step, metric) with its value."""
        return [{"site": site, "layer": layer, "step": step, "tokens": tokens, "metric": key,
                 "value": per_layer[layer][i]}
                for site, metrics in self.sites.items() for key, per_layer in metrics.items()
                for layer in range(len(per_layer))
                for i, (step, tokens) in enumerate(zip(self.steps, self.tokens))]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Curves":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def training_curves(metrics: list[dict[str, Any]], cfg, tokens_per_step: int) -> Curves:
    """Every curve metric, per site, layers × logged steps, from ``metrics.jsonl`` records."""
    logs = [r for r in metrics if "norms" in r]
    steps = [int(r["step"]) for r in logs]
    per_step = [summarize_norms({s: r["norms"][s] for s in CURVE_SITES if s in r["norms"]}, cfg)
                for r in logs]
    sites: dict[str, Any] = {}
    agreement: dict[str, Any] = {}
    for site in CURVE_SITES:
        if not per_step or site not in per_step[0]:
            continue
        sites[site] = {key: [[ps[site].layers[layer][key] for ps in per_step]
                             for layer in range(cfg.num_layers)] for key in CURVE_KEYS}
        agreement[site] = [ps[site].agreement["share"] for ps in per_step]
    mass = [[float(np.mean(r["first_token_mass"][layer])) for r in logs]
            for layer in range(cfg.num_layers)]
    return Curves(steps, [s * tokens_per_step for s in steps], sites, agreement, mass)
