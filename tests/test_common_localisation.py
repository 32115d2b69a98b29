"""The Gaspari–Cohn taper and the R-localisation pairs (methods/common/localisation.py) against
the closed form of Gaspari & Cohn (1999, eq. 4.10) in exact rational arithmetic and against a
brute-force search."""

from fractions import Fraction

import numpy as np
import pytest
from method_fixtures import great_circle_km

from methods.common.localisation import channel_weights, gaspari_cohn, localised_pairs
from methods.common.neighbours import SphereTree


def gc_exact(z: Fraction) -> Fraction:
    """GC(z) written out term by term in rational arithmetic (GC 1999 eq. 4.10)."""
    if z <= 1:
        return -Fraction(1, 4) * z**5 + Fraction(1, 2) * z**4 + Fraction(5, 8) * z**3 \
            - Fraction(5, 3) * z**2 + 1
    if z <= 2:
        return Fraction(1, 12) * z**5 - Fraction(1, 2) * z**4 + Fraction(5, 8) * z**3 \
            + Fraction(5, 3) * z**2 - 5 * z + 4 - Fraction(2, 3) / z
    return Fraction(0)


def test_gaspari_cohn_at_known_distances():
    """1 at 0, 5/24 at c, 0 at 2c and beyond (exactly), and the closed form in between."""
    assert gaspari_cohn(0.0) == 1.0
    assert gaspari_cohn(1.0) == pytest.approx(5 / 24, rel=1e-15)
    assert gaspari_cohn(2.0) == 0.0
    np.testing.assert_array_equal(gaspari_cohn([2.0 + 1e-12, 2.5, 3.0, 1e6]), 0.0)
    z = [Fraction(k, 16) for k in range(0, 33)]
    np.testing.assert_allclose(gaspari_cohn([float(q) for q in z]),
                               [float(gc_exact(q)) for q in z], rtol=0, atol=2e-15)
    # distances given as negative (symmetric) are folded
    assert gaspari_cohn(-0.5) == gaspari_cohn(0.5)


def test_gaspari_cohn_is_monotone_continuous_and_in_unit_interval():
    z = np.linspace(0.0, 2.5, 100_001)
    w = gaspari_cohn(z)
    assert (np.diff(w) <= 0).all() and (w >= 0).all() and (w <= 1).all()
    assert (w[z < 2.0] > 0).all() and (w[z >= 2.0] == 0).all()
    # the two branches meet at z = 1 and the outer one runs continuously down to 0 at 2
    for knot in (1.0, 2.0 - 1e-7):
        left, right = gaspari_cohn(knot - 1e-7), gaspari_cohn(knot + 1e-7)
        assert abs(left - right) < 1e-6
    # near 0 it matches a Gaussian of σ = c √(3/10): 1 − (5/3) z² + O(z³)
    small = 1e-3
    assert gaspari_cohn(small) == pytest.approx(np.exp(-small**2 / (2 * 0.3)), abs=1e-9)


def test_localised_pairs_are_the_brute_force_pairs_with_gc_weights():
    """Every (column, location) pair closer than 2c, once, with GC(r / c); each column's pairs
    in one batch, batches of at most max_sources columns, whatever the pair bound."""
    rng = np.random.default_rng(3)
    lat_g, lon_g = np.repeat(np.linspace(85, -85, 9), 18), np.tile(np.arange(18) * 20.0, 9)
    lat_o, lon_o = rng.uniform(-90, 90, 40), rng.uniform(0, 360, 40)
    lat_o[0], lon_o[0] = 90.0, 0.0  # a pole
    c = 1500.0
    r = great_circle_km(lat_g[:, None], lon_g[:, None], lat_o[None], lon_o[None])
    edge = np.abs(r - 2 * c) < 1e-6
    expected = {(i, j) for i, j in zip(*np.nonzero((r < 2 * c) & ~edge), strict=True)}
    tree = SphereTree(lat_o, lon_o)
    for max_sources, max_pairs in ((10_000, None), (7, None), (5, 3)):
        batches = list(localised_pairs(lat_g, lon_g, tree, c, max_sources=max_sources,
                                       max_pairs=max_pairs))
        found = {}
        for pairs, w in batches:
            assert np.unique(pairs.src).size <= max_sources
            assert (w > 0).all()
            for i, j, wij in zip(pairs.src, pairs.dst, w, strict=True):
                assert (i, j) not in found
                found[(i, j)] = wij
        assert {p for p in found if not edge[p]} == expected
        keys = list(found)
        np.testing.assert_allclose([found[k] for k in keys],
                                   gaspari_cohn(r[tuple(np.array(keys).T)] / c), atol=1e-12)
        # a column's pairs are never split across batches
        owners = [set(p.src.tolist()) for p, _ in batches]
        assert sum(len(o) for o in owners) == len(set().union(*owners))


def test_localised_pairs_without_localisation_are_all_pairs_at_weight_one():
    lat_o, lon_o = np.array([60.0, -10.0, -89.0]), np.array([0.0, 200.0, 45.0])
    lat_g, lon_g = np.array([0.0, 80.0, -45.0, 10.0]), np.array([0.0, 90.0, 180.0, 359.0])
    batches = list(localised_pairs(lat_g, lon_g, SphereTree(lat_o, lon_o), np.inf,
                                   max_sources=3))
    src = np.concatenate([p.src for p, _ in batches])
    dst = np.concatenate([p.dst for p, _ in batches])
    assert sorted(zip(src.tolist(), dst.tolist(), strict=True)) == \
        [(i, j) for i in range(4) for j in range(3)]
    np.testing.assert_array_equal(np.concatenate([w for _, w in batches]), 1.0)
    with pytest.raises(ValueError, match="half_width_km"):
        next(localised_pairs(lat_g, lon_g, SphereTree(lat_o, lon_o), 0.0, max_sources=1))


def test_channel_weights_at_known_log_pressure_distances():
    """"variable": GC(|ln p_a − ln p_b| / c_v) within a variable (c_v half the cut-off), 0 across
    variables, a surface field only from itself; "own" the identity, "all" ones."""
    names = [("t", 850.0), ("t", 700.0), ("t", 500.0), ("t", 200.0), ("z", 500.0), ("t2m", None),
             ("msl", None)]
    variables, levels = [v for v, _ in names], [p for _, p in names]
    cutoff = 1.2
    v = channel_weights(variables, levels, "variable", cutoff)
    d = lambda p, q: abs(np.log(p / q)) / (cutoff / 2)  # noqa: E731
    expected = np.eye(7)
    for a, b in ((0, 1), (0, 2), (1, 2), (2, 3), (1, 3), (0, 3)):
        expected[a, b] = expected[b, a] = float(gc_exact(Fraction(d(levels[a], levels[b]))))
    np.testing.assert_allclose(v, expected, rtol=0, atol=1e-14)
    # ln(850/700) = 0.194 → z = 0.324; ln(850/200) = 1.447 > 1.2: outside the cut-off
    assert 0.8 < v[0, 1] < 1 and v[0, 3] == 0 and v[2, 3] > 0 and v[2, 4] == 0
    assert (v[5:, :5] == 0).all() and v[5, 6] == 0 and v[5, 5] == 1
    everywhere = channel_weights(variables, levels, "variable", np.inf)
    np.testing.assert_array_equal(everywhere[:4, :4], 1.0)
    np.testing.assert_array_equal(everywhere[4:, 4:], np.eye(3))
    np.testing.assert_array_equal(channel_weights(variables, levels, "own"), np.eye(7))
    np.testing.assert_array_equal(channel_weights(variables, levels, "all"), np.ones((7, 7)))
    for bad in (("level", 1.0), ("variable", 0.0)):
        with pytest.raises(ValueError, match="mode"):
            channel_weights(variables, levels, *bad)
