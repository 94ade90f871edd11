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

from mvjax.config import ModelConfig
from mvjax.model import SiteContext

CONCENTRATION_SITES = ("q_rot", "k_rot", "v")


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token, matmuls only."""
    d = cfg.hidden_size
    matmul_params = cfg.num_params() - cfg.vocab_size * d - cfg.num_layers * 2 * d - d
    matmul_params += cfg.vocab_size * d  # output projection (tied or not), never the lookup
    attention = 6 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim
    return 6.0 * matmul_params + attention


@dataclasses.dataclass(frozen=True)
class ConcentrationProbe:
    """Records Σ_tokens x² per (head, dim) at q_rot/k_rot/v, leaving activations unchanged."""

    sites: frozenset[str] = frozenset(CONCENTRATION_SITES)

    def __call__(self, site: str, layer: int, x: jax.Array, ctx: SiteContext) -> tuple[jax.Array, Any]:
        xf = x.astype(jnp.float32)
        w = ctx.valid_BxT.astype(jnp.float32)[:, :, None, None]
        return x, jnp.sum(xf * xf * w, axis=(0, 1))  # H×D


def make_concentration_fn(graphdef: nnx.GraphDef) -> Callable[[dict, jax.Array], dict]:
    """Jitted ``(params, tokens) -> {site: L-vector of max/mean over (head, dim) of L2 norms}``."""
    probe = ConcentrationProbe()

    @jax.jit
    def concentration(params: dict, tokens: jax.Array) -> dict:
        model = nnx.merge(graphdef, params)
        records = model(tokens, probe=probe, logits=False).records
        out = {}
        for site, per_layer in records.items():
            norms = [jnp.sqrt(per_layer[i]) for i in sorted(per_layer)]
            out[site] = jnp.stack([n.max() / jnp.maximum(n.mean(), 1e-30) for n in norms])
        return out

    return concentration


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` and drives an optional tqdm bar."""

    def __init__(self, path: Path, total_steps: int, start_step: int, progress: bool):
        self.path = Path(path)
        self.file = self.path.open("a")
        self.bar = None
        if progress:
            from tqdm import tqdm
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
        self.t0 = time.perf_counter()

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(_plain(record)) + "\n")
        self.file.flush()

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
    """All records of a metrics.jsonl (tests and analysis read runs back with this)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
