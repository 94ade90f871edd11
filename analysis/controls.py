"""Control draws that compare like with like: random dims that stand in for the massive edit.

A random control answers "does editing *any* dims this way hurt as much?" only if it removes what
the massive edit removes, minus the massive dims. The first draw (uniform over the non-selected
dims of each head, Q and K independently) did not: it could hit the selected dim's RoPE partner
(d and its partner rotate together, so that pair's energy is shared between them) or another dim
the massive-value definition marks, and it rarely hit the same pair in Q and K, while the massive
edit removes whole q·k terms in most heads. The ``pair-aware`` draw, per (layer, KV head group):

- units are RoPE pairs for rotated dims and single dims for those that do not rotate (partial
  RoPE's pass-through dims, every dim of NoPE/ALiBi); a selected dim is replaced by a dim of a
  drawn unit (both members where the edit takes both);
- a unit is never drawn if the edit touches it in any Q head of the group or in its KV head, or
  if it holds a dim the definition marks massive in any of them;
- where the edit hits the same unit in a Q head and its KV head, the control hits one drawn unit in
  both (one draw for both sites, the members related as the edit's are); elsewhere Q avoids the
  units drawn for K, so the control shares units between Q and K exactly where the edit does.

Every draw is recorded (``record``) with its dims and the share of each head's energy it removes,
so a result can be re-scored without the statistics (``masks_from_entries``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mvjax.positional import pair_index

DRAW = "pair-aware"
DRAWS = {"massive": "the definition's selection", "lowest": "lowest-norm (the authors' control)",
         "random": DRAW, "energy": "energy-matched, excluding the selected pairs and marked dims"}


def layer_pairs(cfg, layer: int) -> list[int | None]:
    """Per head dim of ``layer``, its RoPE pair index (None where the dim does not rotate)."""
    pos = cfg.layer_positional(layer)
    return pair_index(cfg.head_dim, pos.rotary_dims(cfg.head_dim), pos.layout)


def model_pairs(cfg) -> list[list[int | None]]:
    """``layer_pairs`` of every layer."""
    return [layer_pairs(cfg, layer) for layer in range(cfg.num_layers)]


def units_of(pairs: list[int | None]) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """(units, unit index of every dim): a unit is a RoPE pair's two dims or one unrotated dim."""
    units: list[tuple[int, ...]] = []
    by_pair: dict[int, int] = {}
    unit_of = np.zeros(len(pairs), int)
    for d, p in enumerate(pairs):
        if p is None:
            unit_of[d] = len(units)
            units.append((d,))
        elif p in by_pair:
            unit_of[d] = by_pair[p]
            units[by_pair[p]] += (d,)
        else:
            unit_of[d] = by_pair[p] = len(units)
            units.append((d,))
    return units, unit_of


def _picked(mask_D: np.ndarray, units, unit_of) -> dict[int, tuple[int, ...]]:
    """{unit: positions within the unit} of the dims ``mask_D`` selects."""
    out: dict[int, tuple[int, ...]] = {}
    for d in np.flatnonzero(mask_D):
        u = int(unit_of[d])
        out[u] = out.get(u, ()) + (units[u].index(int(d)),)
    return out


def _take(rng, units, candidates: list[int], need: tuple[int, ...]) -> tuple[int, tuple[int, ...]] | None:
    """A random unit among ``candidates`` able to stand for a unit whose ``need`` positions are
    selected, and the positions taken in it (as many as ``need``; random members of a pair)."""
    fits = [u for u in candidates if len(units[u]) >= len(need)]
    if not fits:
        return None
    u = int(fits[rng.integers(len(fits))])
    size = len(units[u])
    return u, tuple(range(size)) if len(need) == size else tuple(int(p) for p in rng.choice(size, len(need), replace=False))


def pair_aware_random(sel_q: np.ndarray, sel_k: np.ndarray, marked_q: np.ndarray,
                      marked_k: np.ndarray, pairs: list[list[int | None]], seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Random control masks (L×H×D for Q, L×G×D for K) that stand for ``sel_q``/``sel_k`` as the
    module docstring says; ``marked_*`` are the dims the massive-value definition marks,
    ``pairs[l]`` the pair index of every dim at layer l (``layer_pairs``)."""
    rng = np.random.default_rng([seed, 0x9A1D])
    L, H, D = sel_q.shape
    G = sel_k.shape[1]
    if H % G:
        raise ValueError(f"Q has {H} heads and K {G}: the query heads must split evenly over KV heads")
    out_q, out_k = np.zeros(sel_q.shape, bool), np.zeros(sel_k.shape, bool)
    for l in range(L):
        units, unit_of = units_of(pairs[l])
        for g in range(G):
            heads = range(g * (H // G), (g + 1) * (H // G))
            pick_k = _picked(sel_k[l, g], units, unit_of)
            touched = set(pick_k) | {u for h in heads for u in _picked(sel_q[l, h], units, unit_of)}
            marks = marked_k[l, g] | np.any(marked_q[l, list(heads)], axis=0)
            banned_k = touched | {int(unit_of[d]) for d in np.flatnonzero(marks)}
            drawn_k: dict[int, tuple[int, tuple[int, ...]]] = {}
            for u, need in sorted(pick_k.items()):
                got = _take(rng, units, [v for v in range(len(units)) if v not in banned_k
                                         and v not in {w for w, _ in drawn_k.values()}], need)
                if got is not None:
                    drawn_k[u] = got
                    out_k[l, g, [units[got[0]][p] for p in got[1]]] = True
            used_k = {w for w, _ in drawn_k.values()}
            for h in heads:
                banned = banned_k | used_k
                taken: set[int] = set()
                for u, need in sorted(_picked(sel_q[l, h], units, unit_of).items()):
                    if u in drawn_k and len(need) == len(pick_k[u]):  # the edit hits this unit in Q and K
                        w, pos_k = drawn_k[u]
                        if len(need) == len(units[w]):
                            pos = pos_k
                        else:  # one member each: Q takes the member K took iff the edit's members agree
                            pos = pos_k if need == pick_k[u] else tuple(len(units[w]) - 1 - p for p in pos_k)
                        got = (w, pos)
                    else:
                        got = _take(rng, units, [v for v in range(len(units))
                                                 if v not in banned and v not in taken], need)
                    if got is not None:
                        taken.add(got[0])
                        out_q[l, h, [units[got[0]][p] for p in got[1]]] = True
    return out_q, out_k


def excluded_dims(sel: np.ndarray, marked: np.ndarray, pairs: list[list[int | None]]) -> np.ndarray:
    """Per site: the selected dims, their RoPE partners and the marked dims (what no control draws)."""
    out = sel | marked
    for l in range(sel.shape[0]):
        units, unit_of = units_of(pairs[l])
        for idx in zip(*np.nonzero(sel[l])):
            out[(l, *idx[:-1], list(units[unit_of[idx[-1]]]))] = True
    return out


def head_energy_share(E_LxHxD: np.ndarray, mask: np.ndarray) -> list[list[float]]:
    """Per (layer, head): the share of the head's removable energy that ``mask`` removes."""
    total = E_LxHxD.sum(-1)
    share = np.where(total > 0, (E_LxHxD * mask).sum(-1) / np.where(total > 0, total, 1), 0.0)
    return np.round(share, 6).tolist()


def record(rule: str, masks: dict[str, np.ndarray], E: dict[str, np.ndarray], seed: int | None,
           as_entries, draw: str = DRAW) -> dict[str, Any]:
    """What a control drew, JSON-ready: the draw's name, seed, dims per site, dim count per site
    and the share of each head's removable energy it takes (``draw``: the random and
    energy-matched draws' kind, ``DRAW`` or the first, ``uniform``, draw)."""
    name = DRAWS[rule] if draw == DRAW or rule not in ("random", "energy") else f"{draw} ({rule})"
    out: dict[str, Any] = {"draw": name, "dims": {s: as_entries(m) for s, m in masks.items()},
                           "n_dims": {s: int(m.sum()) for s, m in masks.items()},
                           "head_energy_share": {s: head_energy_share(E[s], m) for s, m in masks.items()}}
    return out | ({} if seed is None else {"seed": seed})


def masks_from_entries(entries: dict[str, list[list[int]]], shape: tuple[int, int, int]) -> np.ndarray:
    """The L×H×D mask a recorded ``{layer: [[head, dim], ...]}`` describes (``dims.as_entries``)."""
    out = np.zeros(shape, bool)
    for layer, hd in entries.items():
        for h, d in hd:
            out[int(layer), h, d] = True
    return out
