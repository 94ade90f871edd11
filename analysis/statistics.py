"""Statistics for comparing conditions on the same items, with seeds as units.

Pure functions on counts and per-item outcomes (``"0110…"`` strings, one character per item, as
``analysis.evaluate.score_task`` records them): a control seed is one draw of a null distribution,
never a share of one pooled binomial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054


def empirical_p(value: float, null: Sequence[float]) -> float:
    """One-sided rank p of ``value`` among ``null`` draws, low values extreme:
    (1 + #{null ≤ value}) / (n + 1) — the smallest p ``n`` draws can give is 1 / (n + 1)."""
    if not null:
        raise ValueError("an empirical p needs at least one null draw")
    return (1 + sum(v <= value for v in null)) / (len(null) + 1)


def discordant(a: str, b: str) -> tuple[int, int]:
    """(items right under ``a`` and wrong under ``b``, items wrong under ``a`` and right under ``b``)."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same items: {len(a)} vs {len(b)}")
    return (sum(x == "1" and y == "0" for x, y in zip(a, b)),
            sum(x == "0" and y == "1" for x, y in zip(a, b)))


def mcnemar_exact(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p: the discordant pairs under Binomial(lost + gained, 1/2)."""
    n, k = lost + gained, min(lost, gained)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_difference(a: str, b: str) -> dict[str, float | int]:
    """Accuracy of ``b`` minus accuracy of ``a`` on the same items, with its 95% paired (Wald)
    interval, the discordant counts and the exact McNemar p."""
    lost, gained = discordant(a, b)
    n = len(a)
    d = (gained - lost) / n
    se = math.sqrt(max(lost + gained - (gained - lost) ** 2 / n, 0.0)) / n
    return {"n": n, "lost": lost, "gained": gained, "difference": d,
            "ci95": [d - Z95 * se, d + Z95 * se], "mcnemar_p": mcnemar_exact(lost, gained)}
