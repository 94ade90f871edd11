"""Dim selection for the disruption experiment: massive (top-k, λ), lowest-norm, random and
energy-matched controls keep their promises."""

from __future__ import annotations

import numpy as np
import pytest

from mvjax.analysis.dims import (energy_matched, energy_ratio, lowest_norm, massive_layers, random_dims,
                           select_massive)
from mvjax.analysis.massive import MassiveDefinition


def _energies(seed=0, L=4, H=3, D=64):
    """A SmolLM2-like spread: one big dim per head plus a long tail."""
    rng = np.random.default_rng(seed)
    E = rng.gamma(1.0, 1.0, (L, H, D))
    E[:, :, 40] = rng.uniform(10, 30, (L, H))  # below the other dims' total: matchable
    return E


def test_topk_and_lambda_selection():
    E = _energies()
    M = np.sqrt(E)
    sel = select_massive(M, "topk", 1)
    assert sel.sum(-1).tolist() == [[1] * 3] * 4 and sel[:, :, 40].all()
    sel2 = select_massive(M, "topk", 3)
    assert (sel2.sum(-1) == 3).all()
    lam = select_massive(M, "lambda", definition=MassiveDefinition(lam=3.0))
    assert lam[:, :, 40].all()
    assert massive_layers(M, MassiveDefinition(lam=3.0)) == [0, 1, 2, 3]


@pytest.mark.parametrize("k", [0, 65])
def test_k_out_of_range_is_a_one_line_error(k):
    with pytest.raises(ValueError, match="head_dim=64") as e:
        select_massive(np.ones((1, 2, 64)), "topk", k)
    assert "\n" not in str(e.value)


def test_unknown_selection():
    with pytest.raises(ValueError, match="selection='median'"):
        select_massive(np.ones((1, 2, 64)), "median")


def test_controls_keep_counts_and_avoid_the_massive_dims():
    E = _energies(1)
    M = np.sqrt(E)
    sel = select_massive(M, "topk", 2)
    low = lowest_norm(M, sel)
    assert (low.sum(-1) == 2).all() and not (low & sel).any()
    for l, h in np.ndindex(3, 3):
        assert M[l, h][low[l, h]].max() <= np.sort(M[l, h])[1]
    r0, r1 = random_dims(sel, 0), random_dims(sel, 1)
    assert (r0.sum(-1) == 2).all() and not (r0 & sel).any() and not np.array_equal(r0, r1)
    assert np.array_equal(r0, random_dims(sel, 0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_energy_matched_within_five_percent(seed):
    E = _energies(seed)
    sel = select_massive(np.sqrt(E), "topk", 1)
    em = energy_matched(E, sel, seed)
    assert not (em & sel).any()
    for l, h in np.ndindex(E.shape[:2]):  # per head, not only in total
        ratio = E[l, h][em[l, h]].sum() / E[l, h][sel[l, h]].sum()
        assert abs(ratio - 1) <= 0.05, (l, h, ratio)
    assert abs(energy_ratio(E, em, sel) - 1) <= 0.05
    assert (em.sum(-1) > 1).all()  # it takes many small dims to match one massive dim


def test_energy_matched_reports_an_unreachable_target():
    """A dim holding more than all others together cannot be matched: everything is taken and the
    ratio (< 1) says so."""
    E = np.ones((1, 1, 8))
    E[0, 0, 0] = 100.0
    sel = select_massive(np.sqrt(E), "topk", 1)
    em = energy_matched(E, sel, 0)
    assert em[0, 0, 1:].all() and abs(energy_ratio(E, em, sel) - 0.07) < 1e-9
