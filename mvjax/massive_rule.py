"""The massive-value rule, in one place: what ``mvjax analyze``, the experiments and the training
log all count (see ``analysis/massive.py`` for the reasoning behind the definition).

The functions take numpy or jax arrays with any leading axes (layers) before heads × dims, so the
same rule runs on the host and inside a jitted training-time probe.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

MEAN_OVER = ("head", "global")
AGGREGATIONS = ("pooled",)


@dataclasses.dataclass(frozen=True)
class MassiveDefinition:
    """What "massive" means for a result; stored beside it."""

    lam: float = 5.0
    mean_over: str = "head"
    top_k: int = 1
    aggregation: str = "pooled"

    def __post_init__(self) -> None:
        if not 0 < self.lam < float("inf"):  # inf would silently find nothing
            raise ValueError(f"lambda={self.lam!r} is invalid: use a positive finite threshold, e.g. 5")
        if self.mean_over not in MEAN_OVER:
            raise ValueError(f"mean_over={self.mean_over!r} is invalid: use one of {MEAN_OVER}")
        if not (isinstance(self.top_k, int) and self.top_k >= 1):
            raise ValueError(f"top_k={self.top_k!r} is invalid: use a positive integer, e.g. 1")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation={self.aggregation!r} is invalid: use one of {AGGREGATIONS}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rule"] = (f"M[h,d] = sqrt(sum over all valid tokens of x[h,d]^2); massive iff "
                     f"M[h,d] > {self.lam} * mean of M over "
                     f"{'the head dims' if self.mean_over == 'head' else 'all heads x dims'}; "
                     f"top-{self.top_k} dims per head reported separately")
        return d


def norm_matrix(sumsq_HxD: np.ndarray) -> np.ndarray:
    """Pooled L2 norm over tokens, M = sqrt(Σx²)."""
    return np.sqrt(np.asarray(sumsq_HxD, np.float64))


def _host(M: Any) -> Any:
    """Host values in float64; jax arrays (traced ones too) pass through."""
    return M if isinstance(M, jax.Array) else np.asarray(M, np.float64)


def massive_mask(M_xHxD: Any, definition: MassiveDefinition) -> Any:
    """Boolean ...×H×D: entries above λ times the (per-head or global) mean of M."""
    M = _host(M_xHxD)
    axes = -1 if definition.mean_over == "head" else (-2, -1)
    return M > definition.lam * M.mean(axis=axes, keepdims=True)


def max_mean_ratio(M_xHxD: Any) -> Any:
    """...×H: each head's max_d M / mean_d M (0 for an all-zero head): how concentrated it is."""
    M = _host(M_xHxD)
    mean = M.mean(axis=-1)
    positive = mean > 0
    return (M.max(axis=-1) / (mean + (1 - positive))) * positive
