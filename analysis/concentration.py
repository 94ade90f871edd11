"""Concentration metrics beside the fixed λ=5 count: *where* a head's energy goes, not only whether
one entry clears a threshold.

Why these: at small scale a NoPE model can clear λ=5 too (a few dims in scattered heads), so the
count alone cannot tell RoPE's signature from any other concentration. The paper's claim is
structural — the energy of Q and K sits in the *same low-frequency RoPE pairs* across heads and
layers, K more than V — so each function measures one part of that claim on norm matrices
M[h, d] = sqrt(Σ_tokens x²) (``analysis.massive.norm_matrix``). The massive definition itself is
untouched (``analysis.massive.MassiveDefinition``, λ=5, per-head mean).

Dims are grouped into RoPE *pairs* by the scheme's own ``dim_pairs`` (``scheme_labels``). A pair's energy
M[h,d]² + M[h,partner]² is the same before and after rotation, so pair metrics do not depend on
which site (``k`` or ``k_rot``) they are read at. Models without RoPE (NoPE, ALiBi) are labelled
with the pairs and frequencies of a reference RoPE layout at the same head_dim: their dims have no
frequency, so their "low-frequency share" should sit at chance (0.5) and their agreement near
1/n_pairs — the contrast the RoPE arms are judged against.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mvjax.analysis.massive import low_frequency_dims, massive_mask
from mvjax.config import PositionalConfig
from mvjax.massive_rule import max_mean_ratio
from mvjax.positional import scheme_class


def pair_energy(M_HxD: np.ndarray, pairs: Sequence[int | None]) -> np.ndarray:
    """H×P energy per RoPE pair (ΣM² over the pair's dims); dims with no pair are dropped."""
    M2 = np.asarray(M_HxD, np.float64) ** 2
    ids = [p for p in pairs if p is not None]
    n = max(ids) + 1 if ids else 0
    out = np.zeros((M2.shape[0], n))
    for d, p in enumerate(pairs):
        if p is not None:
            out[:, p] += M2[:, d]
    return out


def band_concentration(M_HxD: np.ndarray, low: np.ndarray, rotating: np.ndarray) -> np.ndarray:
    """Per head, the share of the rotating dims' energy ΣM² that lies in the low-frequency half
    (``low`` / ``rotating`` boolean masks from ``analysis.massive.low_frequency_dims``).
    0.5 = spread evenly; 1 = all in the low-frequency half. NaN for a head with no energy."""
    M2 = np.asarray(M_HxD, np.float64) ** 2
    low, rotating = np.asarray(low, bool), np.asarray(rotating, bool)
    total = M2[:, rotating].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, M2[:, low & rotating].sum(axis=1) / total, np.nan)


def top_pair_share(M_HxD: np.ndarray, pairs: Sequence[int | None]) -> np.ndarray:
    """Per head, the share of its rotating energy held by its single strongest pair
    (1/n_pairs when spread evenly)."""
    E = pair_energy(M_HxD, pairs)
    total = E.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, E.max(axis=1) / total, np.nan)


def top_agreement(M_LxHxD: np.ndarray, pairs: Sequence[int | None] | None = None
                  ) -> dict[str, float | int | None]:
    """How many (layer, head)s share one top unit: the largest count of heads whose strongest
    dim (``pairs=None``) or strongest RoPE pair lies at the same index, as a share of all heads.

    Returns ``{"share", "unit", "n_heads", "chance"}``: the modal unit, and ``chance`` = the
    expected modal share if every head picked its unit uniformly at random (``modal_share_chance``;
    never below 1/n_heads, so a model with few heads is not credited for agreement it must have)."""
    M = np.asarray(M_LxHxD, np.float64)
    if M.ndim != 3:
        raise ValueError(f"top_agreement needs an L×H×D array; got shape {M.shape}")
    heads = M.reshape(-1, M.shape[-1])
    if pairs is None:
        tops, n_units = heads.argmax(axis=1), heads.shape[1]
    else:
        E = pair_energy(heads, pairs)
        tops, n_units = E.argmax(axis=1), E.shape[1]
    if n_units == 0 or heads.shape[0] == 0:
        return {"share": None, "unit": None, "n_heads": int(heads.shape[0]), "chance": None}
    counts = np.bincount(tops, minlength=n_units)
    unit = int(counts.argmax())
    return {"share": float(counts[unit] / heads.shape[0]), "unit": unit,
            "n_heads": int(heads.shape[0]), "chance": modal_share_chance(heads.shape[0], n_units)}


def modal_share_chance(n_heads: int, n_units: int, trials: int = 4000) -> float:
    """Expected largest share of ``n_heads`` uniform random picks among ``n_units`` that land on
    one unit (seeded simulation, so the same arguments give the same number)."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, n_units, (trials, n_heads))
    counts = np.zeros((trials, n_units), np.int64)
    np.add.at(counts, (np.repeat(np.arange(trials), n_heads), picks.ravel()), 1)
    return float(counts.max(axis=1).mean() / n_heads)


def k_over_q(ratio_k: float, ratio_q: float) -> float | None:
    """K's concentration relative to Q's (>1: K concentrates more), from two max/mean ratios."""
    return None if not ratio_q else float(ratio_k / ratio_q)


def scheme_labels(pos, head_dim: int) -> tuple[list[int | None], list[float | None], bool]:
    """(pairs, frequencies, own) of every head dim under positional config ``pos``: its scheme's
    own rotation pairs and frequencies, or — for a scheme that does not rotate — those of RoPE
    θ=1e4 (half layout) at the same head_dim, with ``own=False`` (the labels NoPE/ALiBi are read
    with)."""
    own = pos.rotary_dims(head_dim) > 0
    if not own:
        pos = PositionalConfig()
    cls = scheme_class(pos.scheme)
    return cls.dim_pairs(pos, head_dim), cls.dim_frequencies(pos, head_dim), own


def rotated_energy_share(M_HxD: np.ndarray, rotating: np.ndarray) -> float | None:
    """Share of the layer's ΣM² in rotating dims (partial RoPE: compare with the rotated fraction)."""
    M2 = np.asarray(M_HxD, np.float64) ** 2
    total = M2.sum()
    return None if total <= 0 else float(M2[:, np.asarray(rotating, bool)].sum() / total)


def labels_for(cfg, layer: int = 0) -> tuple[list[int | None], list[float | None], bool]:
    """(pairs, frequencies, own) for a model layer (``scheme_labels`` of its positional config)."""
    return scheme_labels(cfg.layer_positional(layer), cfg.head_dim)


def layer_summary(M_HxD: np.ndarray, pairs: Sequence[int | None], freqs: Sequence[float | None],
                  definition) -> dict:
    """Every per-layer number the RoPE-cause experiment tracks for one site: the fixed λ count,
    max/mean, band concentration, top-pair share, the top dim's wavelength, rotated-energy share."""
    M = np.asarray(M_HxD, np.float64)
    low, rotating = low_frequency_dims(list(freqs))
    ratio = max_mean_ratio(M)
    band = band_concentration(M, low, rotating)
    top = M.argmax(axis=1)
    f = np.array([np.nan if x is None else x for x in freqs], np.float64)
    wavelengths = [None if np.isnan(f[d]) else float(2 * np.pi / f[d]) for d in top]
    known = [w for w in wavelengths if w is not None]
    return {
        "n_massive": int(massive_mask(M, definition).sum()),
        "max_mean_median": float(np.median(ratio)),
        "max_mean_max": float(ratio.max()),
        "band_low_share_median": None if np.all(np.isnan(band)) else float(np.nanmedian(band)),
        "top_pair_share_median": (None if not any(p is not None for p in pairs)
                                  else float(np.nanmedian(top_pair_share(M, pairs)))),
        "top_dims": top.tolist(),
        "top_dim_wavelengths": wavelengths,
        "top_dim_wavelength_median": float(np.median(known)) if known else None,
        "rotated_energy_share": rotated_energy_share(M, rotating),
    }
