"""How the disrupt, quantize and confound reports write a number: one place, so a table cell and
a claim's sentence never disagree on rounding."""

from __future__ import annotations

from mvjax.analysis.records import Score

DASH = "–"  # a cell with nothing to show


def pct(s: Score | None) -> str:
    """Accuracy in percent, one decimal."""
    return DASH if s is None else f"{100 * s.accuracy:.1f}"


def pct_ci(s: Score | None) -> str:
    """Accuracy in percent with its 95% interval in whole points: ``80.0 [70, 88]``."""
    return DASH if s is None else f"{100 * s.accuracy:.1f} [{100 * s.ci95[0]:.0f}, {100 * s.ci95[1]:.0f}]"


def signed_interval(d: float, lo: float, hi: float) -> str:
    """A difference and its interval in signed points: ``+12.0 [+3.1, +20.9]``."""
    return f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def point_ci(p: tuple[float, float, float, int] | None) -> str:
    """(accuracy, lo, hi, n) in percent, interval to one decimal, with n: ``80.0 [70.1, 88.2] (n=40)``."""
    if p is None:
        return DASH
    acc, lo, hi, n = p
    return f"{100 * acc:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] (n={n})"
