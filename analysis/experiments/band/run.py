"""``mvjax experiment band RUN_DIR... --out DIR``: what sets where massive K dims sit — their RoPE
band against the training context.

Why: in the scale runs and the ``cpu`` preset, θ=1e4 and θ=1e6 put their strongest K pair at about
the same wavelength *in tokens* (2–2.5× the 256-token context) although at different pair indices.
If that is a law, a model's base and context predict its massive band. The sweep
(``docs/rope-band/sweep.sh``) trains the same RoPE arm at several contexts and both bases; this
command reads the runs' last logged K norm matrices, finds each head's strongest pair, and applies
the rule fixed before the runs (``RULE`` in ``analysis.experiments.band.claims``, also in
``docs/rope-band/RULE.md``).
Pretrained models (``--reference``) are measured the same way, reported beside, never in the verdict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvjax.analysis.concentration import labels_for, pair_energy
from mvjax.analysis.experiments.band.results import Band
from mvjax.analysis.experiments.emergence.run import read_run
from mvjax.analysis.experiments.rope_cause.measure import measure_reference
from mvjax.config import ModelConfig
from mvjax.massive_rule import MassiveDefinition, massive_mask

SITE = "k"            # training runs: the rule's site (before RoPE; pair energy is rotation-invariant)
REFERENCE_SITE = "k_rot"  # pretrained: the K that RoPE rotated (after QK-norm where a model has one)


def strongest_pairs(M_LxHxD: np.ndarray, cfg) -> tuple[list[list[int]], list[list[float]], int]:
    """Per layer and head, the RoPE pair with the most energy (ΣM² over its two dims; the same
    before and after rotation) and its wavelength 2π/frequency, under each layer's own scheme."""
    pairs_out, waves_out, n_pairs = [], [], 0
    for layer, M_HxD in enumerate(np.asarray(M_LxHxD, np.float64)):
        pairs, freqs, own = labels_for(cfg, layer)
        if not own:
            raise ValueError(f"layer {layer} of {cfg.layer_positional(layer).scheme!r} does not "
                             "rotate: the band is only defined for RoPE layers")
        top = pair_energy(M_HxD, pairs).argmax(axis=1)
        freq_of_pair = {p: f for p, f in zip(pairs, freqs) if p is not None}
        pairs_out.append([int(p) for p in top])
        waves_out.append([float(2 * np.pi / freq_of_pair[int(p)]) for p in top])
        n_pairs = max(n_pairs, len(freq_of_pair))
    return pairs_out, waves_out, n_pairs


def _layer_thetas(cfg) -> list[float]:
    return [float(cfg.layer_positional(l).theta) for l in range(cfg.num_layers)]


def _layer_windows(cfg) -> list[int | None]:
    """Per layer sliding window (Gemma 3's local layers), None for full attention."""
    return [cfg.layer_window(l) for l in range(cfg.num_layers)]


def run_band(run_dir: str | Path) -> Band:
    """The band of a ``mvjax train`` run at its last logged norm matrices."""
    d = Path(run_dir)
    exp, metrics = read_run(d)
    logs = [r for r in metrics if SITE in r.get("norms", {})]
    if not logs:
        raise ValueError(f"{d} logged no K norm matrices: train with train.concentration_every > 0")
    pairs, waves, n_pairs = strongest_pairs(np.asarray(logs[-1]["norms"][SITE]), exp.model)
    per_step = exp.data.batch_size * exp.data.seq_len
    first = next((int(r["step"]) * per_step for r in logs
                  if any(massive_mask(np.asarray(M), MassiveDefinition()).any() for M in r["norms"][SITE])),
                 None)
    return Band(d.name, _layer_thetas(exp.model), exp.data.seq_len, _layer_windows(exp.model),
                pairs, waves, n_pairs, int(logs[-1]["step"]) * per_step, exp.train.seed, first)


def reference_band(model: str, context: int | None = None, seq_len: int = 512) -> Band:
    """A pretrained model's band, measured on the embedded analysis sample (same probe as the
    rope-cause reference). ``context``: its training context, else the config's max_seq_len."""
    ref = measure_reference(model, seq_len)
    cfg = ModelConfig.from_dict(ref.config)
    pairs, waves, n_pairs = strongest_pairs(np.asarray(ref.norms[REFERENCE_SITE]), cfg)
    name = Path(model).name if Path(model).exists() else model  # a model dir: its name, not the machine's path
    return Band(name, _layer_thetas(cfg), int(context or cfg.max_seq_len), _layer_windows(cfg),
                pairs, waves, n_pairs)
