"""Massive values in Q/K/V: the definition, fixed before any result, and concentration metrics.

M[h, d] is the L2 norm over tokens of one site's activation at head h, dim d (H×D per layer).

Aggregation (``MassiveDefinition.aggregation``): the paper computes M on one prompt. mvjax streams a
whole dataset and uses the **pooled** norm M = sqrt(Σ over all valid tokens of x²) by default, i.e.
M² is the sum of the per-prompt M² — the energy-weighted reading of "massive across prompts", and
the only one that needs no per-prompt storage. Thresholds are scale-free (λ times a mean of M), so
pooling over N tokens vs one prompt changes M's scale, not which entries are massive, when every
prompt has the same pattern. Per-token RMS is M / sqrt(count).

Massive (``MassiveDefinition``): M[h,d] > λ · mean_{d'} M[h,d'] with λ = 5 and the mean taken per
head (``mean_over="head"``, the paper's Definition 1 as quoted by the drope-activations replication);
``mean_over="global"`` takes the mean over all H×D (that replication's code). Separately, the top-k
dims per head (the authors' code; k = 1 for Llama) are reported.

Frequency bands come from ``mvjax.positional.dim_to_frequency`` so both pair layouts and partial
rotary work: the low-frequency half is the rotating dims whose frequency is below the median of the
rotating dims' frequencies. V does not rotate; it is labelled with the same layer's Q/K dims as a
contrast (its "low-frequency share" should sit at chance, 50%).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from mvjax.config import ModelConfig
from mvjax.massive_rule import MassiveDefinition, massive_mask, max_mean_ratio, norm_matrix  # noqa: F401
from mvjax.positional import dim_to_frequency
from mvjax.sites import ALL_STAT_SITES, QK_SITES


def top_share(M_HxD: np.ndarray) -> np.ndarray:
    """Per head, the share of its energy (Σ_d M²) that its largest dim holds: a concentration
    measure that means the same at every head size (1/D when flat, 1 when one dim holds it all),
    unlike a λ threshold on M/mean(M), whose bar on the top dim's share moves with D."""
    E = np.asarray(M_HxD, np.float64) ** 2
    total = E.sum(axis=1)
    return np.where(total > 0, E.max(axis=1) / np.where(total > 0, total, 1), 0.0)


def topk_mask(M_HxD: np.ndarray, k: int) -> np.ndarray:
    """Boolean H×D: the k largest dims of every head (ties broken by lower dim index)."""
    M = np.asarray(M_HxD, np.float64)
    order = np.argsort(-M, axis=1, kind="stable")[:, :k]
    mask = np.zeros(M.shape, bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def low_frequency_dims(freqs: list[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """(low, rotating) boolean masks over head dims: rotating dims with frequency below the median
    frequency of the rotating dims. With no rotating dims both are all False."""
    f = np.array([np.nan if x is None else x for x in freqs], np.float64)
    rotating = ~np.isnan(f)
    low = np.zeros(f.shape, bool)
    if rotating.any():
        low[rotating] = f[rotating] < np.median(f[rotating])
    return low, rotating


def frequency_order(freqs: list[float | None]) -> np.ndarray:
    """Dim indices from highest to lowest frequency, non-rotating dims last (plot order)."""
    f = np.array([np.nan if x is None else x for x in freqs], np.float64)
    key = np.where(np.isnan(f), np.inf, -f)
    return np.argsort(key, kind="stable")


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = uniform, → 1 = all mass in one entry)."""
    v = np.sort(np.asarray(values, np.float64).ravel())
    n, total = v.size, v.sum()
    if n == 0 or total <= 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ v / (n * total))


def _share(mask: np.ndarray, where: np.ndarray) -> float | None:
    n = int(mask.sum())
    return None if n == 0 else float((mask & where).sum() / n)


def layer_metrics(M_HxD: np.ndarray, freqs: list[float | None],
                  definition: MassiveDefinition) -> dict[str, Any]:
    """Concentration of one layer's M at one site. Shares are None when undefined (no massive
    entry, or no rotating dim)."""
    M = np.asarray(M_HxD, np.float64)
    H, D = M.shape
    low, rotating = low_frequency_dims(freqs)
    f = np.array([np.nan if x is None else x for x in freqs], np.float64)
    low_HxD, rot_HxD = np.broadcast_to(low, M.shape), np.broadcast_to(rotating, M.shape)
    ratio_h = max_mean_ratio(M)
    massive = massive_mask(M, definition)
    top = topk_mask(M, definition.top_k)
    top1 = M.argmax(axis=1)
    has_rot = bool(rotating.any())
    rot_massive = massive & rot_HxD
    return {
        "max_mean_ratio_median": float(np.median(ratio_h)),
        "max_mean_ratio_max": float(ratio_h.max()),
        "max_mean_ratio_per_head": ratio_h.tolist(),
        "n_massive": int(massive.sum()),
        "n_heads_with_massive": int(massive.any(axis=1).sum()),
        "n_massive_rotating": int(rot_massive.sum()),
        "n_massive_low_freq": int((rot_massive & low_HxD).sum()),
        "massive": [[int(h), int(d)] for h, d in zip(*np.nonzero(massive))],
        "massive_low_freq_share": _share(rot_massive, low_HxD) if has_rot else None,
        "massive_unrotated_share": _share(massive, ~rot_HxD) if has_rot else None,
        "topk": [[int(d) for d in np.nonzero(top[h])[0]] for h in range(H)],
        "topk_low_freq_share": _share(top & rot_HxD, low_HxD) if has_rot else None,
        "top_dim_low_freq_share": float(low[top1].mean()) if has_rot else None,
        "top_dim_wavelengths": [None if np.isnan(f[d]) else float(2 * np.pi / f[d]) for d in top1],
        "gini_mean_over_heads": float(np.mean([gini(M[h]) for h in range(H)])),
        "energy_low_freq_share": (float((M[:, low] ** 2).sum() / max((M[:, rotating] ** 2).sum(), 1e-300))
                                  if has_rot else None),
    }


def band_energy(M_HxD: np.ndarray, freqs: list[float | None], n_bands: int) -> np.ndarray:
    """Share of the layer's energy ΣM² in each of ``n_bands`` equal bands of rotating dims ordered
    high → low frequency, plus a last entry for non-rotating dims (length n_bands + 1)."""
    M2 = (np.asarray(M_HxD, np.float64) ** 2).sum(axis=0)
    order = frequency_order(freqs)
    _, rotating = low_frequency_dims(freqs)
    rot_order = [d for d in order if rotating[d]]
    out = np.zeros(n_bands + 1)
    for b, chunk in enumerate(np.array_split(np.array(rot_order, int), n_bands)):
        out[b] = M2[chunk].sum() if len(chunk) else 0.0
    out[-1] = M2[~rotating].sum()
    total = M2.sum()
    return out / total if total > 0 else out


def layer_freqs(cfg: ModelConfig, layer: int) -> list[float | None]:
    return dim_to_frequency(cfg, layer)


def analyze(records: dict[str, dict[int, Any]], cfg: ModelConfig,
            definition: MassiveDefinition, n_bands: int = 8) -> dict[str, Any]:
    """Per-site, per-layer metrics and M matrices from ``collect_stats`` records, plus the summary
    (first layer with massive entries per site, totals, pooled low-frequency shares)."""
    sites: dict[str, Any] = {}
    order = ALL_STAT_SITES
    for site in sorted(records, key=lambda s: order.index(s) if s in order else len(order)):
        per_layer = records[site]
        layers = []
        for layer in sorted(per_layer):
            st = per_layer[layer]
            freqs = layer_freqs(cfg, layer)
            M = norm_matrix(st.sumsq)
            m = layer_metrics(M, freqs, definition)
            m.update(layer=layer, count=int(st.count), M=M.tolist(),
                     band_energy=band_energy(M, freqs, n_bands).tolist())
            layers.append(m)
        sites[site] = layers
    return {"definition": definition.to_dict(), "n_bands": n_bands,
            "frequencies": {str(l): layer_freqs(cfg, l) for l in range(cfg.num_layers)},
            "sites": sites, "summary": summarize(sites)}


def summarize(sites: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Headline numbers per site: total massive entries, the share of them (over all layers) in the
    low-frequency half, the first layer with any, and the median max/mean ratio over layers."""
    out: dict[str, Any] = {}
    for site, layers in sites.items():
        n_low = sum(m["n_massive_low_freq"] for m in layers)
        n_rot = sum(m["n_massive_rotating"] for m in layers)
        top_low, top_n = 0.0, 0
        for m in layers:
            if m["top_dim_low_freq_share"] is not None:
                top_low += m["top_dim_low_freq_share"]
                top_n += 1
        first = next((m["layer"] for m in layers if m["n_massive"] > 0), None)
        ratios = [m["max_mean_ratio_median"] for m in layers]
        wl = [w for m in layers for w in m["top_dim_wavelengths"] if w is not None]
        out[site] = {
            "n_massive": int(sum(m["n_massive"] for m in layers)),
            "massive_low_freq_share": (n_low / n_rot) if n_rot else None,
            "top_dim_low_freq_share": (top_low / top_n) if top_n else None,
            "first_massive_layer": first,
            "layers_with_massive": int(sum(m["n_massive"] > 0 for m in layers)),
            "max_mean_ratio_median_over_layers": float(np.median(ratios)) if ratios else math.nan,
            "top_dim_wavelength_median": float(np.median(wl)) if wl else None,
        }
    qk = [out[s]["first_massive_layer"] for s in QK_SITES if s in out
          and out[s]["first_massive_layer"] is not None]
    out["first_qk_concentration_layer"] = min(qk) if qk else None
    return out


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What ``analysis.analyze.analyze`` measured. ``sites`` is {site: [per-layer metrics, with
    the H×D matrix ``M``]} and ``summary`` the per-site headline (``analyze`` above, ``summarize``);
    ``model`` and ``data``
    describe what was measured; ``provenance`` is filled by whoever runs it as a command.
    ``to_json`` is the ``massive_values.json`` schema, ``from_json`` reads it back."""

    definition: dict[str, Any]
    model: dict[str, Any]
    data: dict[str, Any]
    n_bands: int
    frequencies: dict[str, Any]
    sites: dict[str, list[dict[str, Any]]]
    summary: dict[str, Any]
    provenance: dict[str, Any] | None = None
    # per layer, per head: attention on the first token (BOS), mean over every query after it;
    # None in results written before it was recorded
    first_token_mass: list[list[float]] | None = None

    def to_json(self) -> dict[str, Any]:
        head = {"definition": self.definition}
        if self.provenance is not None:
            head["provenance"] = self.provenance
        tail = {} if self.first_token_mass is None else {"first_token_mass": self.first_token_mass}
        return {**head, "model": self.model, "data": self.data, "n_bands": self.n_bands,
                "frequencies": self.frequencies, "sites": self.sites, "summary": self.summary,
                **tail}

    def first_token_mass_by_layer(self) -> list[float] | None:
        """Per layer, the first-token mass averaged over heads (None when not recorded)."""
        if self.first_token_mass is None:
            return None
        return [float(np.mean(heads)) for heads in self.first_token_mass]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Analysis":
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{k: data.get(k) for k in names})

    def norms(self) -> dict[str, list]:
        """{site: L×H×D nested lists of M}."""
        return {s: [m["M"] for m in layers] for s, layers in self.sites.items()}

    def headline(self) -> dict[str, Any]:
        """Per site: λ count, low-frequency share, first massive layer; the first layer where Q/K
        concentrate; and, when recorded, the per-layer first-token mass (mean over heads)."""
        mass = self.first_token_mass_by_layer()
        return {s: {k: v[k] for k in ("n_massive", "massive_low_freq_share", "first_massive_layer")}
                for s, v in self.summary.items() if isinstance(v, dict)} | {
            "first_qk_concentration_layer": self.summary["first_qk_concentration_layer"]} | (
            {} if mass is None else {"first_token_mass": [round(m, 4) for m in mass]})

    def bar_layer(self) -> int:
        """The layer whose K (else Q, V) has the highest median max/mean ratio."""
        site = next((s for s in ("k", "q", "k_rot", "q_rot", "v") if s in self.sites))
        return max(self.sites[site], key=lambda m: m["max_mean_ratio_median"])["layer"]
