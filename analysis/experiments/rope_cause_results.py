"""Turn a rope-cause run directory into ``results.json``: per arm, the concentration metrics over
training (layers × logged steps) from the training logs, the final model's ``analyze`` numbers and
task accuracies, a reference model measured the same way, and the claim verdicts.

The verdict rules are written here, before any run, and printed in the report beside the numbers;
they use the fixed massive definition (λ=5, per-head mean) and never a tuned one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from analysis.claims import Claim, Outcome
from analysis.concentration import labels_for, layer_summary, top_agreement
from analysis.massive import MassiveDefinition
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


def summarize_norms(norms: dict[str, Any], cfg) -> dict[str, Any]:
    """{site: {"layers": [layer_summary…], "agreement": top_agreement over layers × heads}}."""
    out: dict[str, Any] = {}
    for site, M_LxHxD in norms.items():
        M = np.asarray(M_LxHxD, np.float64)
        labels = [labels_for(cfg, layer) for layer in range(M.shape[0])]
        out[site] = {
            "layers": [layer_summary(M[layer], pairs, freqs, DEFINITION)
                       for layer, (pairs, freqs, _) in enumerate(labels)],
            "agreement": top_agreement(M, labels[0][0]),
        }
    return out


def training_curves(metrics: list[dict[str, Any]], cfg, tokens_per_step: int) -> dict[str, Any]:
    """Arrays layers × logged steps of every curve metric, per site, from ``metrics.jsonl``."""
    logs = [r for r in metrics if "norms" in r]
    steps = [int(r["step"]) for r in logs]
    curves: dict[str, Any] = {"steps": steps, "tokens": [s * tokens_per_step for s in steps],
                              "sites": {}, "agreement": {}, "first_token_mass": []}
    per_step = [summarize_norms({s: r["norms"][s] for s in CURVE_SITES if s in r["norms"]}, cfg)
                for r in logs]
    for site in CURVE_SITES:
        if not per_step or site not in per_step[0]:
            continue
        curves["sites"][site] = {
            key: [[ps[site]["layers"][layer][key] for ps in per_step]
                  for layer in range(cfg.num_layers)] for key in CURVE_KEYS}
        curves["agreement"][site] = [ps[site]["agreement"]["share"] for ps in per_step]
    curves["first_token_mass"] = [[float(np.mean(r["first_token_mass"][layer])) for r in logs]
                                  for layer in range(cfg.num_layers)]
    return curves


def _sink(mass_LxH) -> list[float]:
    return [float(np.mean(h)) for h in mass_LxH]


def arm_result(arm_dir: Path) -> dict[str, Any]:
    from analysis.experiments.rope_cause import REMEASURE
    from mvjax.atomic import read_json_state
    from mvjax.config import ModelConfig, to_plain
    from train.config import ExperimentConfig
    from train.metrics import read_metrics

    exp = ExperimentConfig.load(arm_dir / "config.yaml")
    cfg: ModelConfig = exp.model
    metrics = read_metrics(arm_dir / "metrics.jsonl")
    analyzed = read_json_state(arm_dir / "analyze" / "massive_values.json",
                               REMEASURE.replace("delete it", "delete its folder"))
    norms = {s: [m["M"] for m in layers] for s, layers in analyzed["sites"].items()}
    logs = [r for r in metrics if "norms" in r]
    evals = [r["eval_loss"] for r in metrics if "eval_loss" in r and r["eval_loss"] is not None]
    final = summarize_norms(norms, cfg)
    return {
        "positional": to_plain(cfg.layer_positional(0)),
        "head_dim": cfg.head_dim, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
        "curves": training_curves(metrics, cfg, exp.data.batch_size * exp.data.seq_len),
        "final": final,
        "final_M": {s: norms[s] for s in ("q_rot", "k_rot") if s in norms},
        "final_analyze_summary": analyzed["summary"],
        "final_counts": {site: {
            "n_massive": sum(m["n_massive"] for m in layers),
            "n_massive_rotating": sum(m["n_massive_rotating"] for m in layers),
            "n_massive_unrotated": sum(m["n_massive"] - m["n_massive_rotating"] for m in layers)
            if cfg.layer_positional(0).rotary_dims(cfg.head_dim) else None,
            "n_massive_low_freq": sum(m["n_massive_low_freq"] for m in layers)}
            for site, layers in analyzed["sites"].items()},
        "final_first_token_mass": _sink(logs[-1]["first_token_mass"]) if logs else None,
        "final_eval_loss": evals[-1] if evals else None,
        "tasks": read_json_state(arm_dir / "tasks.json", REMEASURE),
        "disruption": read_json_state(arm_dir / "disrupt.json", REMEASURE),
        "config": exp.to_dict(),
    }


def measure_reference(model: str, seq_len: int, n_rows: int = 4) -> dict[str, Any]:
    """A pretrained model measured like the arms: norms and first-token mass of every layer, on
    the embedded analysis sample (BOS-first windows), through the same jitted probe."""
    import jax
    from flax import nnx

    from analysis.analyze import make_sequences
    from analysis.sample import sample_texts
    from mvjax.load import load_pretrained
    from train.metrics import make_concentration_fn

    net, tok = load_pretrained(model)
    if tok is None:
        raise ValueError(f"reference model {model} has no tokenizer: save one into its directory")
    length = min(512, net.cfg.max_seq_len, max(seq_len, 128))
    rows = make_sequences(tok, sample_texts(), length, n_rows * length)
    graphdef, params = nnx.split(net, nnx.Param)
    out = jax.device_get(make_concentration_fn(graphdef)(nnx.to_pure_dict(params), rows))
    return {"model": model, "config": net.cfg.to_dict(), "n_tokens": int(rows.size),
            "seq_len": length, "norms": {k: np.asarray(v).tolist() for k, v in out["norms"].items()},
            "first_token_mass": np.asarray(out["first_token_mass"]).tolist()}


def reference_result(ref: dict[str, Any]) -> dict[str, Any]:
    from mvjax.config import ModelConfig

    cfg = ModelConfig.from_dict(ref["config"])
    return {"model": ref["model"], "head_dim": cfg.head_dim, "num_layers": cfg.num_layers,
            "num_heads": cfg.num_heads, "n_tokens": ref["n_tokens"],
            "final": summarize_norms(ref["norms"], cfg),
            "final_first_token_mass": _sink(ref["first_token_mass"])}


def site_totals(final: dict[str, Any], site: str) -> dict[str, Any]:
    """Headline numbers of one site over layers: λ count, first layer with any, median max/mean,
    median band share, agreement."""
    layers = final[site]["layers"]
    band = [m["band_low_share_median"] for m in layers if m["band_low_share_median"] is not None]
    return {
        "n_massive": int(sum(m["n_massive"] for m in layers)),
        "first_massive_layer": next((i for i, m in enumerate(layers) if m["n_massive"]), None),
        "max_mean_median": float(np.median([m["max_mean_median"] for m in layers])),
        "max_mean_max": float(max(m["max_mean_max"] for m in layers)),
        "band_low_share_median": float(np.median(band)) if band else None,
        "top_pair_agreement": final[site]["agreement"]["share"],
        "agreement_chance": final[site]["agreement"]["chance"],
    }


def _qk(t: dict[str, dict[str, Any]]) -> int:
    return t["q_rot"]["n_massive"] + t["k_rot"]["n_massive"]


def _totals(arms: dict[str, Any], arm: str, sites=("q_rot", "k_rot", "v")) -> dict[str, Any] | None:
    return {s: site_totals(arms[arm]["final"], s) for s in sites} if arm in arms else None


def check_1(arms: dict[str, Any]) -> Outcome:
    r = _totals(arms, "rope")
    return Outcome({s: r[s] for s in r}, _qk(r) > 0 and r["v"]["n_massive"] == 0)


def check_2(arms: dict[str, Any]) -> Outcome:
    r = _totals(arms, "rope")
    firsts = [x for x in (r["q_rot"]["first_massive_layer"], r["k_rot"]["first_massive_layer"])
              if x is not None]
    return Outcome({"first_qk_massive_layer": min(firsts) if firsts else None},
                   bool(firsts) and min(firsts) == 0)


def check_3(arms: dict[str, Any]) -> Outcome:
    r = _totals(arms, "rope")
    qk = _qk(r)
    others = {a: _totals(arms, a, ("q_rot", "k_rot")) for a in ("nope", "alibi") if a in arms}
    numbers = {"rope_qk_massive": qk, **{f"{a}_qk_massive": _qk(o) for a, o in others.items()},
               **{f"{a}_{s}_band_low_share": o[s]["band_low_share_median"]
                  for a, o in {"rope": r, **others}.items() for s in ("q_rot", "k_rot")}}
    weaker = all(_qk(o) <= qk / 2 for o in others.values())
    return Outcome(numbers, None if not others or qk == 0 else weaker)


def check_4(arms: dict[str, Any]) -> Outcome:
    r = _totals(arms, "rope")
    low = arms["rope"]["final_analyze_summary"]
    n4 = {"rope_massive_low_freq_share": {s: low[s]["massive_low_freq_share"]
                                          for s in ("q_rot", "k_rot")},
          "rope_band_low_share": {s: r[s]["band_low_share_median"] for s in ("q_rot", "k_rot")}}
    shares = n4["rope_massive_low_freq_share"].values()
    ok = all(v > 0.5 for v in shares if v is not None) and any(v is not None for v in shares)
    if "partial-rope" in arms:
        partial = arms["partial-rope"]["final_counts"]
        n4["partial_massive_unrotated"] = {s: partial[s]["n_massive_unrotated"]
                                           for s in ("q_rot", "k_rot")}
        n4["partial_massive_rotated"] = {s: partial[s]["n_massive_rotating"]
                                         for s in ("q_rot", "k_rot")}
        n4["partial_rotated_energy_share"] = {
            s: [m["rotated_energy_share"] for m in arms["partial-rope"]["final"][s]["layers"]]
            for s in ("q_rot", "k_rot")}
        ok = ok and all(v == 0 for v in n4["partial_massive_unrotated"].values())
    return Outcome(n4, None if _qk(r) == 0 else ok)


def retention(acc: dict[str, Any], cond: str, kind: str) -> float | None:
    """Accuracy of ``kind`` under ``cond`` as a share of the unmodified model's (None when the
    unmodified model scores nothing there)."""
    base, hit = acc["original"][kind], acc.get(cond, {}).get(kind)
    if not base or not base["accuracy"] or hit is None:
        return None
    return hit["accuracy"] / base["accuracy"]


def check_5(arms: dict[str, Any]) -> Outcome:
    """On the RoPE arm; every arm's retentions are in the numbers."""
    numbers = {arm: {"original": a["disruption"]["accuracy"]["original"],
                     **{f"{kind}_retention_{cond}": retention(a["disruption"]["accuracy"], cond, kind)
                        for cond in ("massive", "random_s0") for kind in ("contextual", "parametric")}}
               for arm, a in arms.items() if "disruption" in a}
    r = numbers.get("rope")
    if r is None or None in (r["contextual_retention_massive"], r["parametric_retention_massive"],
                             r["contextual_retention_random_s0"]):
        return Outcome(numbers, None)
    return Outcome(numbers, r["contextual_retention_massive"] < r["parametric_retention_massive"]
                   and r["contextual_retention_massive"] < r["contextual_retention_random_s0"])


# The paper's claims, each with its fixed rule (written before any run) and the code that applies it.
CLAIMS = (
    Claim("1", "Q/K concentrate with RoPE, V does not",
          "holds iff the RoPE arm has > 0 massive entries in Q+K (post-RoPE) and 0 in V", check_1),
    Claim("2", "from the first layer",
          "holds iff the first layer with a massive Q or K entry in the RoPE arm is layer 0", check_2),
    Claim("3", "not (or far weaker) with NoPE and ALiBi",
          "holds iff NoPE's and ALiBi's Q+K massive counts are each at most half of RoPE's "
          "(not tested when RoPE has none)", check_3),
    Claim("4", "in low-frequency dims, and only among rotated dims with partial RoPE",
          "holds iff more than half of RoPE's massive Q and K entries lie in the low-frequency half "
          "and partial RoPE has none outside its rotated dims (not tested when RoPE has none)",
          check_4),
    Claim("5", "disrupting them hurts contextual more than parametric accuracy",
          "holds iff, in the RoPE arm, mean-replacing its top-1 Q and K dims per head (all "
          "layers, post-RoPE) keeps a smaller share of the original contextual accuracy than of "
          "the parametric accuracy (over the facts the unmodified model answers) and a smaller "
          "share than the random-dims control keeps; not tested when the RoPE arm solves no "
          "contextual episode or knows no fact", check_5),
)
RULES = {c.name: c.rule for c in CLAIMS}
NEEDS_ROPE = ("1", "2", "3", "4")  # read the RoPE arm's totals: checked only when it was run


def claims(arms: dict[str, Any]) -> dict[str, Claim]:
    """The paper's claims checked on the arms with their fixed rules (``CLAIMS``)."""
    return {c.name: c.apply(arms) for c in CLAIMS if c.name not in NEEDS_ROPE or "rope" in arms}


def claim_disruption(arms: dict[str, Any]) -> Claim:
    """Claim (5) alone."""
    return CLAIMS[4].apply(arms)


def collect(preset, out: Path, reference: dict[str, Any] | None, sha: str | None) -> dict[str, Any]:
    from mvjax.config import to_plain

    arms = {arm: arm_result(out / "arms" / arm) for arm in preset.arms}
    return {"experiment": "rope-cause", "git_sha": sha, "preset": to_plain(preset),
            "definitions": DEFINITIONS, "claim_rules": RULES,
            "arms": arms,
            "reference": None if reference is None else reference_result(reference),
            "claims": {k: c.to_json() for k, c in claims(arms).items()}}
