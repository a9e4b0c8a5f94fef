"""Semantic Granularity Annealing: mu(t), p(l|t) and the level schedules, checked by hand."""

import math

import numpy as np
import pytest

from rslab.curriculum import LevelSchedule, sga_level_probs, sga_mu


def test_mu_runs_from_coarse_to_fine_on_a_cosine():
    assert sga_mu(0, 100, 3) == 1.0
    assert sga_mu(100, 100, 3) == 3.0
    assert sga_mu(50, 100, 3) == pytest.approx(2.0)  # cosine midpoint: (1 + L) / 2
    # a quarter of the way: 1 + 2 * (1 - cos(pi/4)) / 2
    assert sga_mu(25, 100, 3) == pytest.approx(1 + (1 - math.cos(math.pi / 4)))
    mus = [sga_mu(t, 100, 3) for t in range(101)]
    assert all(b >= a for a, b in zip(mus, mus[1:]))  # monotone


def test_level_probs_at_start_and_end_match_hand_computation():
    e = np.exp([0.0, -2.0, -4.0])  # |l - mu| / tau with mu = 1, tau = 0.5
    np.testing.assert_allclose(sga_level_probs(0, 10, 3, tau=0.5), e / e.sum(), rtol=1e-12)
    np.testing.assert_allclose(sga_level_probs(10, 10, 3, tau=0.5), (e / e.sum())[::-1], rtol=1e-12)
    mid = sga_level_probs(5, 10, 3, tau=1.0)  # mu = 2: symmetric, peak at level 2
    np.testing.assert_allclose(mid, np.exp([-1.0, 0.0, -1.0]) / np.exp([-1.0, 0.0, -1.0]).sum())
    # a larger tau flattens the distribution
    assert sga_level_probs(0, 10, 3, tau=5.0)[0] < sga_level_probs(0, 10, 3, tau=0.5)[0]


@pytest.mark.parametrize("bad", [dict(tau=0.0), dict(tau=-1.0)])
def test_level_probs_reject_bad_tau(bad):
    with pytest.raises(ValueError, match="tau"):
        sga_level_probs(0, 10, 3, **bad)


def test_step_and_depth_are_validated():
    with pytest.raises(ValueError, match="step"):
        sga_mu(11, 10, 3)
    with pytest.raises(ValueError, match="total_steps"):
        sga_mu(0, 0, 3)
    with pytest.raises(ValueError, match="mode"):
        LevelSchedule(3, 10, mode="random")


def test_schedule_is_deterministic_and_seed_dependent():
    a = [LevelSchedule(3, 200, "sga", 0.5, seed=1).level(t) for t in range(201)]
    b = [LevelSchedule(3, 200, "sga", 0.5, seed=1).level(t) for t in range(201)]
    c = [LevelSchedule(3, 200, "sga", 0.5, seed=2).level(t) for t in range(201)]
    assert a == b and a != c
    assert set(a) <= {1, 2, 3}
    # coarse early, fine late
    assert np.mean(a[:40]) < 1.6 and np.mean(a[-40:]) > 2.4


def test_sampled_levels_follow_p_l_given_t():
    probs = sga_level_probs(0, 10, 3, tau=0.5)
    levels = np.array([LevelSchedule(3, 10, "sga", 0.5, seed=s).level(0) for s in range(3000)])
    freq = np.bincount(levels, minlength=4)[1:] / len(levels)
    np.testing.assert_allclose(freq, probs, atol=0.03)


def test_fine_and_hard_baselines():
    fine = LevelSchedule(3, 90, "fine")
    assert {fine.level(t) for t in range(91)} == {3}
    hard = LevelSchedule(3, 90, "hard")
    assert [hard.level(t) for t in (0, 29, 30, 59, 60, 89, 90)] == [1, 1, 2, 2, 3, 3, 3]
