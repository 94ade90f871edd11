"""The paper's claims on a rope-cause run, each an ``analysis.claims.Claim`` with its fixed rule
(written before any run, printed in the report beside the numbers) and the code that applies it to
the typed results (``analysis.experiments.rope_cause.results``). They use the fixed massive
definition (λ=5, per-head mean) and never a tuned one. Claim (5) reads each arm's
``ArmAccuracy``; ``retention``, ``pooled``, ``per_seed`` and ``below_every_seed`` are its readings,
shared with the report and with ``mvjax experiment rope-cause-seeds``."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mvjax.analysis.claims import HOLDS, NOT_TESTED, Claim, Outcome, verdict_of
from mvjax.analysis.concentration import labels_for
from mvjax.analysis.experiments.rope_cause.results import ArmAccuracy, ArmResult, RopeCauseResults, counted
from mvjax.analysis.massive import low_frequency_dims
from mvjax.analysis.summaries import DEFINITION, SiteTotals
from mvjax.config import ModelConfig
from mvjax.massive_rule import massive_mask


def _qk(t: dict[str, SiteTotals]) -> int:
    return t["q_rot"].n_massive + t["k_rot"].n_massive


def _totals(res: RopeCauseResults, arm: str, sites=("q_rot", "k_rot", "v")) -> dict[str, SiteTotals]:
    return {s: res.arms[arm].totals(s) for s in sites}


def check_1(res: RopeCauseResults) -> Outcome:
    r = _totals(res, "rope")
    others = {a: _totals(res, a) for a in ("nope", "alibi") if a in res.arms}
    numbers = {**{s: t.to_json() for s, t in r.items()}, "rope_qk_massive": _qk(r),
               **{f"{a}_qk_massive": _qk(o) for a, o in others.items()},
               **{f"{a}_v_massive": o["v"].n_massive for a, o in others.items()}}
    held = (_qk(r) > 0 and r["v"].n_massive == 0 and all(_qk(r) > _qk(o) for o in others.values()))
    return Outcome(numbers, held if others else None)


def check_2(res: RopeCauseResults) -> Outcome:
    r = _totals(res, "rope")
    firsts = [x for x in (r["q_rot"].first_massive_layer, r["k_rot"].first_massive_layer)
              if x is not None]
    return Outcome({"first_qk_massive_layer": min(firsts) if firsts else None},
                   bool(firsts) and min(firsts) == 0)


def check_3(res: RopeCauseResults) -> Outcome:
    r = _totals(res, "rope")
    qk = _qk(r)
    others = {a: _totals(res, a, ("q_rot", "k_rot")) for a in ("nope", "alibi") if a in res.arms}
    numbers = {"rope_qk_massive": qk, **{f"{a}_qk_massive": _qk(o) for a, o in others.items()},
               **{f"{a}_{s}_band_low_share": o[s].band_low_share_median
                  for a, o in {"rope": r, **others}.items() for s in ("q_rot", "k_rot")}}
    weaker = all(_qk(o) <= qk / 2 for o in others.values())
    return Outcome(numbers, None if not others or qk == 0 else weaker)


MIN_ENTRIES_4 = 5  # claim (4) is not decided on fewer pooled Q+K entries of the RoPE arm


def massive_entries(arm: ArmResult) -> list[dict[str, Any]]:
    """Every λ-massive entry of the final model's post-positional Q and K (pooled), with its RoPE
    pair, band (low/high frequency half of the rotating dims) and wavelength in tokens and in
    multiples of the training context (None where the dim does not rotate)."""
    cfg = ModelConfig.from_dict(arm.config["model"])
    context = arm.config["data"]["seq_len"]
    entries = []
    for site in ("q_rot", "k_rot"):
        for layer, M_HxD in enumerate(arm.final_M.get(site, [])):
            pairs, freqs, own = labels_for(cfg, layer)
            low, rotating = low_frequency_dims(list(freqs))
            for h, d in zip(*np.nonzero(massive_mask(np.asarray(M_HxD), DEFINITION))):
                rot = bool(own and rotating[d])
                wl = float(2 * np.pi / freqs[d]) if rot else None
                entries.append({"site": site, "layer": layer, "head": int(h), "dim": int(d),
                                "pair": pairs[d] if rot else None,
                                "band": ("low" if low[d] else "high") if rot else None,
                                "wavelength": wl, "wavelength_over_context":
                                wl / context if wl is not None else None})
    return entries


def _entries_summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    rot = [e for e in entries if e["band"] is not None]
    wl = [e["wavelength_over_context"] for e in rot]
    return {"n_entries": len(entries), "n_rotating": len(rot),
            "low_band_share": sum(e["band"] == "low" for e in rot) / len(rot) if rot else None,
            "wavelength_over_context_median": float(np.median(wl)) if wl else None,
            "wavelength_over_context_range": [min(wl), max(wl)] if wl else None,
            "entries": entries}


def check_4(res: RopeCauseResults) -> Outcome:
    """Q and K pooled; every RoPE-type arm's entries located in tokens (wavelength vs the
    training context), not only by band."""
    numbers: dict[str, Any] = {a: _entries_summary(massive_entries(res.arms[a]))
                               for a in ("rope", "rope-theta1e6", "partial-rope") if a in res.arms}
    share = numbers["rope"]["low_band_share"]
    ok = share is not None and share > 0.5
    if "partial-rope" in numbers:
        p = numbers["partial-rope"]
        numbers["partial_massive_unrotated"] = p["n_entries"] - p["n_rotating"]
        numbers["partial_rotated_energy_share"] = {
            s: res.arms["partial-rope"].final[s].column("rotated_energy_share")
            for s in ("q_rot", "k_rot")}
        ok = ok and numbers["partial_massive_unrotated"] == 0
    return Outcome(numbers, None if numbers["rope"]["n_entries"] < MIN_ENTRIES_4 else ok)


def retention(acc: ArmAccuracy, cond: str, kind: str) -> float | None:
    """Accuracy of ``kind`` under ``cond`` as a share of the unmodified model's (None when the
    unmodified model scores nothing there)."""
    base, hit = acc.score("original", kind), acc.score(cond, kind)
    if not base or not base.accuracy or hit is None:
        return None
    return hit.accuracy / base.accuracy


MIN_SOLVED_5 = 20  # claim (5) needs this many contextual episodes solved by the unmodified arm
CONTROL_FAMILIES = ("random", "energy_matched", "lowest_norm")


def pooled(acc: ArmAccuracy, family: str, kind: str) -> dict[str, Any] | None:
    """One control family's accuracy, pooled over its seeds (k and n summed), with its Wilson CI."""
    hits = [h for c in acc.conditions
            if (c == family or c.startswith(f"{family}_s")) and (h := acc.score(c, kind))]
    if not hits:
        return None
    k, n = sum(h.solved for h in hits), sum(h.n for h in hits)
    return counted(k, n)


def per_seed(acc: ArmAccuracy, family: str, kind: str) -> dict[str, dict[str, Any]]:
    """One control family's seeds, each with its own accuracy and Wilson CI ({condition: entry};
    older results kept only the accuracy, so the interval is recomputed from the count)."""
    return {c: counted(h.solved, h.n) for c in acc.conditions
            if c.startswith(f"{family}_s") and (h := acc.score(c, kind))}


def below_every_seed(acc: ArmAccuracy, kind: str = "contextual") -> bool | None:
    """The stricter reading beside the rule: is the massive accuracy's CI wholly below every seed's
    own CI (pooling seeds into one binomial sample hides how far apart the seeds land)? None
    without a massive entry or a seeded control."""
    hit = acc.score("massive", kind)
    seeds = [e for f in ("random", "energy_matched") for e in per_seed(acc, f, kind).values()]
    if hit is None or not seeds:
        return None
    upper = counted(hit.solved, hit.n)["ci95"][1]
    return all(upper < e["ci95"][0] for e in seeds)


def arm_disruption(acc: ArmAccuracy) -> dict[str, Any]:
    """Claim (5) on one arm by its rule: retentions, pooled controls and the arm's verdict (with
    each seed's control and the per-seed reading reported beside it, not deciding it)."""
    out: dict[str, Any] = {"original": acc.condition_json("original"),
                           "massive": acc.condition_json("massive") or {},
                           "lambda_massive": acc.condition_json("lambda_massive"),
                           **{f"{kind}_retention_massive": retention(acc, "massive", kind)
                              for kind in ("contextual", "parametric")},
                           "controls": {f: pooled(acc, f, "contextual") for f in CONTROL_FAMILIES},
                           "controls_per_seed": {f: per_seed(acc, f, "contextual")
                                                 for f in ("random", "energy_matched")},
                           "massive_below_every_seed": below_every_seed(acc)}
    ctx = acc.score("original", "contextual")
    if (ctx is None or ctx.solved < MIN_SOLVED_5 or not acc.score("original", "parametric")
            or None in (out["contextual_retention_massive"], out["parametric_retention_massive"])):
        return out | {"verdict": verdict_of(None)}
    upper = acc.score("massive", "contextual").ci95[1]
    below = all(c is not None and upper < c["ci95"][0] for c in out["controls"].values())
    more = out["contextual_retention_massive"] < out["parametric_retention_massive"]
    return out | {"verdict": verdict_of(below and more)}


def disruption_outcome(accuracy: dict[str, ArmAccuracy]) -> Outcome:
    """Claim (5) from each arm's accuracy per condition and kind: a verdict per arm in the
    numbers; the claim's verdict is the RoPE arm's."""
    numbers = {arm: arm_disruption(acc) for arm, acc in accuracy.items()}
    r = numbers.get("rope")
    if r is None or r["verdict"] == NOT_TESTED:
        return Outcome(numbers, None)
    return Outcome(numbers, r["verdict"] == HOLDS)


def check_5(res: RopeCauseResults) -> Outcome:
    return disruption_outcome({a: arm.accuracy for a, arm in res.arms.items()})


# The paper's claims, each with its fixed rule (written before any run) and the code that applies it.
CLAIMS = (
    Claim("1", "Q/K concentrate with RoPE, V does not",
          "holds iff the RoPE arm has > 0 massive entries in Q+K (post-RoPE) and 0 in V, and more "
          "Q+K entries than each non-RoPE arm (NoPE, ALiBi; concentration that NoPE shows as well "
          "is not concentration with RoPE); not tested without a non-RoPE arm", check_1),
    Claim("2", "from the first layer",
          "holds iff the first layer with a massive Q or K entry in the RoPE arm is layer 0", check_2),
    Claim("3", "not (or far weaker) with NoPE and ALiBi",
          "holds iff NoPE's and ALiBi's Q+K massive counts are each at most half of RoPE's "
          "(not tested when RoPE has none)", check_3),
    Claim("4", "in low-frequency dims, and only among rotated dims with partial RoPE",
          "holds iff more than half of RoPE's massive Q and K entries, pooled, lie in the "
          "low-frequency half of the rotating dims and partial RoPE has none outside its rotated "
          f"dims; not tested when RoPE has fewer than {MIN_ENTRIES_4} pooled entries. Every RoPE "
          "arm's entries are also located in tokens (wavelength / training context), since a band "
          "label alone hides that two θ put their entries at the same wavelength", check_4),
    Claim("5", "disrupting them hurts contextual more than parametric accuracy",
          "per arm: holds iff mean-replacing the arm's own top-1 Q and K dims per head (all "
          "layers, post-positional) leaves a contextual accuracy whose 95% Wilson interval lies "
          "wholly below that of every control family (random dims, 3 seeds pooled; energy-matched, "
          "3 seeds pooled; the lowest-norm dims), and keeps a smaller share of the original "
          "contextual accuracy than of the parametric (over the facts the unmodified arm answers); "
          f"not tested when the unmodified arm solves fewer than {MIN_SOLVED_5} contextual "
          "episodes or knows no fact. The claim's verdict is the RoPE arm's; the λ-massive set's "
          "accuracies are reported beside it", check_5),
)
RULES = {c.name: c.rule for c in CLAIMS}
NEEDS_ROPE = ("1", "2", "3", "4")  # read the RoPE arm's totals: checked only when it was run


def claims(res: RopeCauseResults) -> dict[str, Claim]:
    """The paper's claims checked on the arms with their fixed rules (``CLAIMS``)."""
    return {c.name: c.apply(res) for c in CLAIMS if c.name not in NEEDS_ROPE or "rope" in res.arms}


def claim_disruption(accuracy: dict[str, ArmAccuracy]) -> Claim:
    """Claim (5) on {arm: its accuracies per condition and kind} alone."""
    return dataclasses.replace(CLAIMS[4], check=disruption_outcome).apply(accuracy)
