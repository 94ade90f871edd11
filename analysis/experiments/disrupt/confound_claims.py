"""The pre-registered rules of the confounds run (``--preset confounds``), as code. Their words
are in ``docs/disrupt-smollm2-confounds/RULES.md``, written and committed before the run; a test
checks that every rule text below appears there verbatim.

Why these rules: the full SmolLM2 table's "parametric survives better: does not hold" was read
through four confounds — prompt length (parametric 6–12 tokens, contextual 33–1,015), the edit of
position 0 (the sink), passkey key depth, and a passkey ranking that is 100% in every condition —
and random controls pooled over 3 seeds. Here every verdict reads greedy exact match, within
length bins, with position 0 edited and kept, passkey by depth, and control seeds as units.

Pure functions of a scored run (``analysis.records``): per item, per condition, the exact-match
outcomes as ``"0110…"`` strings (``Score.hits`` of the exact metric), and per task its kind and
prompt length range (``min_prompt_tokens``, ``max_prompt_tokens``) and, for passkey, its keys'
depth bins.
"""

from __future__ import annotations

import math
import statistics as st

from mvjax.analysis.claims import Claim, Outcome
from mvjax.analysis.experiments.length_bins import KINDS, bins_of, hits, joined, kind_hits
from mvjax.analysis.records import ScoredRun
from mvjax.analysis.statistics import Z95, empirical_p, paired_difference
from mvjax.data.tasks.base import difference_interval
from mvjax.data.tasks.lengths import BINS, DEPTH_BINS

MIN_KNOWN = 10  # fewest known items per kind (and bin) a retention comparison is decided on
MIN_DEPTH_ITEMS = 10  # fewest passkey items per depth bin a depth verdict is decided on
POSITION0 = {"massive": "position 0 edited", "keep0_massive": "position 0 kept"}
RANDOM = {"massive": "random", "keep0_massive": "keep0_random"}  # the random control beside each
# the metric every verdict reads, per task family, and why (RULES.md, "Metric")
METRIC = {
    "passkey": ("exact", ("its 4 choices are random keys absent from the prompt: ranking is 100% "
                          "in every condition, so only greedy exact match can move")),
    "arithmetic": ("exact", ("the result is a number the model must produce; ranking among "
                             "neighbours is reported, not read")),
    "kv_recall": ("exact", ("the value must be copied from the list; exact chance is 1/4 (any "
                            "listed value), said beside it")),
    "facts": ("exact", "the answer must be produced from memory; ranking reported, not read"),
    "world": ("exact", "as facts"),
}


def retained(orig: str, cond: str) -> tuple[int, int]:
    """(items still right under the condition, items the original gets right)."""
    known = [i for i, x in enumerate(orig) if x == "1"]
    return sum(cond[i] == "1" for i in known), len(known)


def retention_gap(run: ScoredRun, cond: str, length: int | None) -> dict | None:
    """Parametric minus contextual share of the original's exact hits kept under ``cond`` (in a
    bin, or pooled), Newcombe 95% interval; None where a kind has < ``MIN_KNOWN`` known items."""
    shares = {}
    for kind in KINDS:
        pair = joined(run, cond, kind, length)
        if pair is None:
            return None
        k, n = retained(*pair)
        if n < MIN_KNOWN:
            return None
        shares[kind] = (k, n)
    (kp, np_), (kc, nc) = shares["parametric"], shares["contextual"]
    d, lo, hi = difference_interval(kp, np_, kc, nc)
    return {"parametric": [kp, np_], "contextual": [kc, nc], "difference": d, "ci95": [lo, hi]}


RULE_BIN = ("in this length bin, on the items the unmodified model gets right by greedy exact "
            "match, the share still right under the edit is higher for parametric than for "
            "contextual items: the difference's 95% Newcombe interval lies above 0 (not tested "
            f"if either kind has fewer than {MIN_KNOWN} such items in the bin)")
RULE_MATCHED = ("the mean over the length bins tested of (parametric − contextual share of the "
                "original's greedy exact hits kept under the edit) has its 95% interval above 0; "
                "each bin's standard error is its Newcombe interval's half-width / 1.96, combined "
                "in quadrature and divided by the number of bins")


def survives_in_bin(cond: str, length: int) -> Claim:
    def check(run: ScoredRun) -> Outcome:
        g = retention_gap(run, cond, length)
        if g is None:
            return Outcome({}, None, f"fewer than {MIN_KNOWN} known items of a kind in bin ≤{length}")
        return Outcome(g, g["ci95"][0] > 0, _gap_text(g))
    return Claim(f"survives_{cond}_L{length}", f"Parametric knowledge survives the massive edit "
                 f"({POSITION0[cond]}) better than contextual, prompts ≤{length} tokens", RULE_BIN, check)


def _gap_text(g: dict) -> str:
    (kp, np_), (kc, nc) = g["parametric"], g["contextual"]
    lo, hi = g["ci95"]
    return (f"kept: parametric {kp}/{np_}, contextual {kc}/{nc}; difference "
            f"{100 * g['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] points")


def survives_length_matched(cond: str) -> Claim:
    def check(run: ScoredRun) -> Outcome:
        gaps = {b: g for b in bins_of(run) if (g := retention_gap(run, cond, b)) is not None}
        if not gaps:
            return Outcome({}, None, "no length bin has both kinds with enough known items")
        mean = sum(g["difference"] for g in gaps.values()) / len(gaps)
        se = math.sqrt(sum(((g["ci95"][1] - g["ci95"][0]) / (2 * Z95)) ** 2 for g in gaps.values())) / len(gaps)
        lo, hi = mean - Z95 * se, mean + Z95 * se
        by = "; ".join(f"≤{b}: {100 * g['difference']:+.1f}" for b, g in gaps.items())
        return Outcome({"bins": {str(b): g for b, g in gaps.items()}, "mean": mean, "ci95": [lo, hi]},
                       lo > 0, f"mean over {len(gaps)} bins {100 * mean:+.1f} [{100 * lo:+.1f}, "
                       f"{100 * hi:+.1f}] points ({by})")
    return Claim(f"survives_{cond}_length_matched", "Parametric knowledge survives the massive edit "
                 f"({POSITION0[cond]}) better than contextual, length-matched", RULE_MATCHED, check)


def seed_hits(run: ScoredRun, column: str, kind: str) -> dict[str, tuple[int, int]]:
    """{control seed's condition: (greedy exact hits, items) over every item of ``kind``}, one
    entry per seed of the seeded ``column``."""
    return {c.name: h for c in run.seeded(column) if (h := kind_hits(run, c.name, kind)) is not None}


RULE_SEEDS = ("over every item of the kind (every length bin), the massive edit's greedy exact "
              "accuracy is below that of every seed of the pair-aware random control with the same "
              "position-0 treatment (seeds are units: empirical p = (1 + #seeds at or below the "
              "massive edit) / (seeds + 1), 1/11 with 10 seeds; not tested with fewer than 10 seeds "
              "or when the unmodified model gets no item of the kind right)")


def beyond_random(kind: str, cond: str) -> Claim:
    def check(run: ScoredRun) -> Outcome:
        hits = seed_hits(run, RANDOM[cond], kind)
        pair = joined(run, cond, kind)
        if len(hits) < 10 or pair is None:
            return Outcome({"seeds": len(hits)}, None, f"{len(hits)} random-control seeds (10 needed)")
        if "1" not in pair[0]:
            return Outcome({"seeds": len(hits)}, None, f"the unmodified model gets no {kind} item right")
        # compared and printed as percentages from counts (100 * h / n), as the report's tables print them
        percent = {c: 100 * h / n for c, (h, n) in hits.items()}
        kept, items = pair[1].count("1"), len(pair[1])
        edit = 100 * kept / items
        null = list(percent.values())
        rank, last = 1 + sum(v < edit for v in null), 1 + sum(v <= edit for v in null)
        p = empirical_p(edit, null)
        mcn = [paired_difference(joined(run, c, kind)[1], pair[1])["mcnemar_p"] for c in hits]
        return Outcome({"massive": kept / items, "seeds": {c: h / n for c, (h, n) in hits.items()},
                        "rank_of_massive": [rank, last], "empirical_p": p,
                        "median_paired_mcnemar_p": st.median(mcn)}, edit < min(null),
                       f"{kind} exact: massive {edit:.1f}%, random seeds {min(null):.1f}–"
                       f"{max(null):.1f}% ({len(null)} seeds); massive ranks "
                       f"{rank if rank == last else f'{rank}–{last} (ties)'} of {len(null) + 1} from "
                       f"the bottom, empirical p {p:.3f}")
    return Claim(f"beyond_random_{kind}_{cond}", f"The massive edit ({POSITION0[cond]}) costs "
                 f"{kind} tasks more than any random-dims control draw", RULE_SEEDS, check)


RULE_POSITION0 = ("on the same items of the kind (every bin), greedy exact accuracy with position "
                  "0 kept minus with it edited has its 95% paired (Wald) interval above 0 (exact "
                  "McNemar p beside it)")


def position0_spares(kind: str) -> Claim:
    def check(run: ScoredRun) -> Outcome:
        a, b = joined(run, "massive", kind), joined(run, "keep0_massive", kind)
        if a is None or b is None:
            return Outcome({}, None, "massive or keep0_massive was not scored")
        d = paired_difference(a[1], b[1])
        return Outcome(d, d["ci95"][0] > 0, f"{kind}: kept − edited {100 * d['difference']:+.1f} "
                       f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}] points (n={d['n']}, "
                       f"{d['gained']} gained, {d['lost']} lost; McNemar p {d['mcnemar_p']:.3g})")
    return Claim(f"position0_spares_{kind}", f"Keeping position 0 spares {kind} tasks part of the "
                 "massive edit's damage", RULE_POSITION0, check)


def depth_pairs(run: ScoredRun, cond: str) -> dict[str, tuple[str, str]]:
    """{depth bin: (original's hits, ``cond``'s hits)} over every passkey item of every length."""
    out: dict[str, tuple[str, str]] = {}
    for t, rec in run.tasks.items():
        o, c = hits(run, "original", t), hits(run, cond, t)
        if rec.key_depth_bin is None or o is None or c is None:
            continue
        for i, label in enumerate(rec.key_depth_bin):
            a, b = out.get(label, ("", ""))
            out[label] = (a + o[i], b + c[i])
    return dict(sorted(out.items()))


RULE_DEPTH = ("in every key-depth bin (quarters of [0, 1], passkey items of every length pooled), "
              "greedy exact accuracy of the original minus under the edit has its 95% paired "
              f"(Wald) interval above 0 (not tested if a bin has fewer than {MIN_DEPTH_ITEMS} items)")


def depth_everywhere(cond: str) -> Claim:
    def check(run: ScoredRun) -> Outcome:
        pairs = depth_pairs(run, cond)
        if len(pairs) < len(DEPTH_BINS) or min(len(a) for a, _ in pairs.values()) < MIN_DEPTH_ITEMS:
            return Outcome({}, None, "passkey items missing or too few in a depth bin")
        numbers = {label: paired_difference(b, a) for label, (a, b) in pairs.items()}  # original − edit
        text = "; ".join(f"depth {k}: {100 * v['difference']:+.1f} [{100 * v['ci95'][0]:+.1f}, "
                         f"{100 * v['ci95'][1]:+.1f}] (n={v['n']})" for k, v in numbers.items())
        return Outcome(numbers, all(v["ci95"][0] > 0 for v in numbers.values()),
                       f"passkey drop original → {cond}, points: {text}")
    return Claim(f"depth_everywhere_{cond}", f"The massive edit ({POSITION0[cond]}) costs passkey "
                 "accuracy at every key depth", RULE_DEPTH, check)


def confound_rules(bins: tuple[int, ...] = BINS) -> list[Claim]:
    """Every pre-registered claim, unapplied, in RULES.md's order: the primary claim first."""
    out: list[Claim] = []
    for cond in POSITION0:
        out.append(survives_length_matched(cond))
        out += [survives_in_bin(cond, b) for b in bins]
    for cond in POSITION0:
        out += [beyond_random(kind, cond) for kind in KINDS]
    out += [position0_spares(kind) for kind in KINDS]
    out += [depth_everywhere(cond) for cond in POSITION0]
    return out
