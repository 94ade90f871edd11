"""The concentration metrics beside the λ count: band share, top-pair share, agreement, K vs Q."""

from __future__ import annotations

import numpy as np
import pytest

from mvjax.analysis.concentration import (band_concentration, k_over_q, layer_summary,
                                    modal_share_chance, pair_energy,
                                    rotated_energy_share, scheme_labels, top_agreement,
                                    top_pair_share)
from mvjax.analysis.massive import MassiveDefinition, low_frequency_dims
from mvjax.config import PositionalConfig


def rope_labels(head_dim, pos=PositionalConfig()):
    return scheme_labels(pos, head_dim)[:2]


def test_scheme_labels_half_layout_pairs_and_low_band():
    pairs, freqs = rope_labels(8)
    assert pairs == [0, 1, 2, 3, 0, 1, 2, 3]
    low, rot = low_frequency_dims(freqs)
    assert rot.all() and low.tolist() == [False, False, True, True] * 2  # high pair index = low freq
    pairs, freqs = rope_labels(8, PositionalConfig(rotary_fraction=0.5))
    assert pairs == [0, 1, 0, 1, None, None, None, None] and freqs[4:] == [None] * 4
    full = scheme_labels(PositionalConfig(), 8)
    assert full[2] and scheme_labels(PositionalConfig(scheme="nope"), 8) == (*full[:2], False)


def test_band_concentration_even_spread_is_half_and_low_band_is_one():
    _, freqs = rope_labels(8)
    low, rot = low_frequency_dims(freqs)
    even = np.ones((2, 8))
    assert np.allclose(band_concentration(even, low, rot), 0.5)
    lowonly = np.zeros((2, 8))
    lowonly[:, 3] = 5.0
    lowonly[1, 0] = 5.0  # head 1 splits evenly between a high and a low pair
    assert band_concentration(lowonly, low, rot).tolist() == [1.0, 0.5]
    assert np.isnan(band_concentration(np.zeros((1, 8)), low, rot)[0])


def test_pair_energy_is_rotation_invariant():
    pairs, _ = rope_labels(4)
    a = np.array([[3.0, 0.0, 4.0, 0.0]])  # pair 0: dims 0 and 2
    b = np.array([[0.0, 0.0, 5.0, 0.0]])  # the same pair energy, rotated into dim 2
    assert np.allclose(pair_energy(a, pairs), pair_energy(b, pairs))
    assert np.allclose(pair_energy(a, pairs), [[25.0, 0.0]])
    assert top_pair_share(a, pairs).tolist() == [1.0]


def test_top_agreement_counts_the_modal_unit():
    M = np.ones((2, 3, 8))
    M[:, :, 6] = 9.0  # every head's top dim is 6 (pair 2 in the half layout)
    M[1, 2, 6], M[1, 2, 1] = 1.0, 9.0  # except one head
    dims = top_agreement(M)
    assert dims["unit"] == 6 and dims["share"] == pytest.approx(5 / 6)
    assert 1 / 6 < dims["chance"] < 0.5  # 6 random picks of 8 dims: some collide, rarely many
    pairs, _ = rope_labels(8)
    by_pair = top_agreement(M, pairs)
    assert by_pair["unit"] == 2 and by_pair["chance"] > dims["chance"]
    assert modal_share_chance(2, 1000) == pytest.approx(0.5, abs=0.01)  # 2 heads: floor is 1/2
    assert modal_share_chance(1, 5) == 1.0
    with pytest.raises(ValueError, match="L×H×D"):
        top_agreement(np.ones((3, 8)))


def test_k_over_q_and_rotated_share():
    assert k_over_q(6.0, 3.0) == 2.0 and k_over_q(1.0, 0.0) is None
    M = np.ones((2, 8))
    M[:, :2] = 3.0
    rot = np.array([True, True] + [False] * 6)
    assert rotated_energy_share(M, rot) == pytest.approx(36 / 48)
    assert rotated_energy_share(np.zeros((1, 8)), rot) is None


def test_layer_summary_uses_the_fixed_definition():
    pairs, freqs = rope_labels(16)
    M = np.ones((2, 16))
    M[0, 15] = 20.0  # max/mean = 20/(35/16) ≈ 9.1 > 5 → massive, low-frequency pair 7
    s = layer_summary(M, pairs, freqs, MassiveDefinition())
    assert s["n_massive"] == 1 and s["top_dims"][0] == 15
    assert s["max_mean_max"] == pytest.approx(20 / (35 / 16))
    assert s["band_low_share_median"] > 0.5 and s["rotated_energy_share"] == 1.0
    assert s["top_dim_wavelengths"][0] == pytest.approx(2 * np.pi / freqs[15])
    assert s["top_dim_wavelength_median"] == pytest.approx(np.median(s["top_dim_wavelengths"]))
    strict = layer_summary(M, pairs, freqs, MassiveDefinition(lam=10.0))
    assert strict["n_massive"] == 0
