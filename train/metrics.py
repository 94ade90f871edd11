"""What a run records: JSONL metrics, a progress bar, MFU, and the per-layer Q/K/V concentration
the project studies (so training dynamics of massive values come for free with every run).

MFU counts matmul FLOPs only: 6 per parameter that enters a matmul (the output projection included,
the embedding lookup not) plus causal attention's 6·L·T·H·D per token (QK^T and PV, forward and
backward, halved by the causal mask), against ``train.peak_flops`` per device.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from mvjax.atomic import append_line, read_jsonl
from mvjax.config import ModelConfig
from mvjax.massive_rule import MassiveDefinition, massive_mask, max_mean_ratio
from mvjax.model import SiteContext
from mvjax.probe import first_token_mass, masked_float32, sum_squares
from mvjax.sites import STAT_SITES

CONCENTRATION_SITES = ("q_rot", "k_rot", "v")


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token, matmuls only."""
    d = cfg.hidden_size
    # everything but the lookup table and the norm weights; a tied head multiplies by the table
    matmul_params = cfg.num_params() - cfg.vocab_size * d - cfg.num_layers * 2 * d - d
    if cfg.tie_embeddings:
        matmul_params += cfg.vocab_size * d
    attention = 6 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim
    return 6.0 * matmul_params + attention


RULE = MassiveDefinition()  # the paper's λ = 5, per-head mean: what `mvjax analyze` counts
NORM_SITES = STAT_SITES  # sites whose full H×D norm matrix is logged


@dataclasses.dataclass(frozen=True)
class _ConcentrationProbe:
    """Σx² per (head, dim) at the Q/K/V sites, and each head's attention mass on the first token
    (``mvjax.probe.first_token_mass``: query 0 can only attend to itself, so it is left out)."""

    sites: frozenset[str] = frozenset(NORM_SITES) | {"attn"}

    def __call__(self, site: str, layer: int, x: jax.Array, ctx: SiteContext):
        if site != "attn":
            return x, sum_squares(masked_float32(x, ctx.valid_BxT))
        return x, first_token_mass(x, ctx.valid_BxT)


def make_concentration_fn(graphdef: nnx.GraphDef) -> Callable[[dict, jax.Array], dict]:
    """Jitted ``(params, tokens) -> {"concentration": {site: per-layer median over heads of
    max_d M / mean_d M}, "massive": {site: per-layer count of M[h,d] > λ·mean_d M[h,·]},
    "norms": {site: L×H×D matrix M}, "first_token_mass": L×H}``, where M = sqrt(Σ_tokens x²) per
    (head, dim) — the same definition ``mvjax analyze`` records. The first two cover
    ``CONCENTRATION_SITES``; ``norms`` keeps every Q/K/V site so any later metric can be computed
    from the log. Observing ``attn`` runs the unfused attention path (B×H×T×T), fine for one batch."""
    probe = _ConcentrationProbe()

    @jax.jit
    def concentration(params: dict, tokens: jax.Array) -> dict:
        records = nnx.merge(graphdef, params)(tokens, probe=probe, logits=False).records
        ratio, massive, norms = {}, {}, {}
        for site in NORM_SITES:
            per_layer = records[site]
            M_LxHxD = jnp.stack([jnp.sqrt(per_layer[i]) for i in sorted(per_layer)])
            norms[site] = M_LxHxD
            if site not in CONCENTRATION_SITES:
                continue
            ratio[site] = jnp.median(max_mean_ratio(M_LxHxD), axis=-1)
            massive[site] = jnp.sum(massive_mask(M_LxHxD, RULE), axis=(1, 2))
        sink = jnp.stack([records["attn"][i] for i in sorted(records["attn"])])
        return {"concentration": ratio, "massive": massive, "norms": norms, "first_token_mass": sink}

    return concentration


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` and drives an optional tqdm bar."""

    def __init__(self, path: Path, total_steps: int, start_step: int, progress: bool):
        self.path = Path(path)
        self.file = self.path.open("a")
        self.bar = None
        if progress:
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
        self.t0 = time.perf_counter()

    def write(self, record: dict[str, Any]) -> None:
        append_line(self.file, json.dumps(_plain(record)))

    def advance(self, n: int, **postfix: float) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.file.close()


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.ndarray, jax.Array)):
        return _plain(np.asarray(x).tolist())
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    return x


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl as the run's history: a ``resume`` marker (written when a run
    continues from a checkpoint) drops the records logged after that step before the resume, whose
    steps were trained again. The markers themselves are kept."""
    records: list[dict[str, Any]] = []
    for record in read_jsonl(path):  # a last line cut by a kill is dropped with a warning
        if record.get("event") == "resume":
            records = [r for r in records if r.get("step", 0) <= record["step"]]
        records.append(record)
    return records


def last_logged(path: Path, key: str) -> float:
    """The newest value of ``key`` in a run's history (NaN when none): a resumed run that has no
    step left to train still reports its loss."""
    if not Path(path).is_file():
        return float("nan")
    values = [r[key] for r in read_metrics(path) if key in r and r.get("event") is None]
    return float(values[-1]) if values else float("nan")
