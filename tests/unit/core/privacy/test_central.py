"""Unit tests for fedops.core.privacy.central: DP-FedAvg's noised mean, adaptive clipping.

``private_mean`` returns ``current + (Σ clip(Δ_i, C) + N(0, (σC)²)) / sampled``: a
fixed denominator (the clients the round *sampled*, not those that answered),
so the noise on the mean has standard deviation ``σ·C / sampled``. The noise
checks are statistical, on a 200,000-coordinate vector with a fixed seed, and
their tolerances come from the sample size: the sample standard deviation of
``N`` normal draws has a standard error of ``s/√(2N)``, their mean ``s/√N``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedops.core.privacy.central import AdaptiveClipping, RoundNoise, private_mean
from fedops.core.privacy.clipping import clip, delta

COORDS = 200_000
SIGMAS_OF_SLACK = 5


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _model(rng: np.random.Generator, dtype=np.float64) -> dict[str, np.ndarray]:
    return {
        "w": rng.normal(size=(4, 3)).astype(dtype),
        "b": rng.normal(size=3).astype(dtype),
    }


def _trained(current, rng, scales) -> list[dict[str, np.ndarray]]:
    """One trained model per scale: ``current`` plus a random update of about that norm."""
    out = []
    for s in scales:
        step = {k: rng.normal(size=v.shape) for k, v in current.items()}
        norm = math.sqrt(sum(float(np.sum(a**2)) for a in step.values()))
        out.append({k: (v + step[k] * (s / norm)).astype(v.dtype) for k, v in current.items()})
    return out


def _expected_noiseless(current, trained, sampled, clip_norm):
    total = {k: np.zeros(v.shape) for k, v in current.items()}
    for params in trained:
        clipped, _ = clip(delta(current, params), clip_norm)
        for k in total:
            total[k] += clipped[k]
    return {k: np.asarray(v, np.float64) + total[k] / sampled for k, v in current.items()}


# -- the noiseless mean: clip, sum, divide by the sampled count -------------------------------
@pytest.mark.parametrize(
    ("scales", "sampled"),
    [
        ([0.5, 2.0, 3.0], 3),  # one within C=1, two clipped
        ([0.5, 2.0, 3.0], 5),  # two of five sampled clients dropped out: still / 5
        ([0.1, 0.2], 2),  # nothing clipped: the plain mean update
        ([4.0], 10),  # one answer of ten
    ],
)
def test_without_noise_the_result_is_current_plus_the_clipped_sum_over_sampled(scales, sampled):
    rng = _rng(1)
    current = _model(rng)
    trained = _trained(current, rng, scales)
    new, noise = private_mean(
        current, trained, denominator=sampled, clip_norm=1.0, noise_multiplier=0.0, rng=_rng(2)
    )
    expected = _expected_noiseless(current, trained, sampled, 1.0)
    assert set(new) == set(current)
    for k in current:
        np.testing.assert_allclose(new[k], expected[k], rtol=1e-12, atol=1e-12)
    # nothing about the updates is released beside the model: no exact clipped fraction
    assert noise == RoundNoise(clip_norm=1.0, noise_std=0.0, next_clip_norm=1.0)


def test_the_denominator_is_fixed_not_the_number_of_answers():
    current = {"w": np.zeros(2)}
    trained = [{"w": np.array([0.3, 0.0])}, {"w": np.array([0.0, 0.6])}]
    new, _ = private_mean(
        current, trained, denominator=4, clip_norm=10.0, noise_multiplier=0.0, rng=_rng()
    )
    np.testing.assert_allclose(new["w"], [0.3 / 4, 0.6 / 4])  # not / 2


def test_clients_are_weighted_equally_and_each_is_clipped_separately():
    current = {"w": np.zeros(1)}
    trained = [{"w": np.array([5.0])}, {"w": np.array([-0.5])}]
    new, noise = private_mean(
        current, trained, denominator=2, clip_norm=1.0, noise_multiplier=0.0, rng=_rng()
    )
    np.testing.assert_allclose(new["w"], [(1.0 - 0.5) / 2])
    assert noise.noised_unclipped_fraction is None


def test_the_result_keeps_each_array_dtype():
    rng = _rng(3)
    current = _model(rng, np.float32)
    trained = _trained(current, rng, [0.5, 3.0])
    new, _ = private_mean(
        current, trained, denominator=2, clip_norm=1.0, noise_multiplier=1.0, rng=_rng(4)
    )
    assert {k: v.dtype for k, v in new.items()} == {k: v.dtype for k, v in current.items()}
    assert {k: v.shape for k, v in new.items()} == {k: v.shape for k, v in current.items()}


@pytest.mark.parametrize("denominator", [0, -1.0, math.nan, math.inf])
def test_a_denominator_that_is_not_a_positive_number_is_refused(denominator):
    current = {"w": np.zeros(2)}
    with pytest.raises(ValueError, match="denominator"):
        private_mean(
            current,
            [current],
            denominator=denominator,
            clip_norm=1.0,
            noise_multiplier=1.0,
            rng=_rng(),
        )


def test_no_answers_still_release_only_noise_over_sampled():
    current = {"w": np.zeros(COORDS)}
    new, noise = private_mean(
        current, [], denominator=4, clip_norm=2.0, noise_multiplier=1.5, rng=_rng(5)
    )
    assert noise.noise_std == 3.0
    s = 1.5 * 2.0 / 4
    assert abs(float(np.std(new["w"])) - s) <= SIGMAS_OF_SLACK * s / math.sqrt(2 * COORDS)


# -- the noise: N(0, (σC)²) on the sum, σC/sampled on the mean ---------------------------------
def _noise_on_the_mean(sigma, clip_norm, sampled, answers, adaptive=None, seed=7):
    """``(noise added to the mean, RoundNoise)`` on a COORDS-long model split in two arrays."""
    rng = _rng(seed)
    current = {"w": rng.normal(size=(COORDS // 2,)), "b": rng.normal(size=(COORDS // 2,))}
    trained = _trained(current, rng, [clip_norm * f for f in (0.5, 3.0, 1.5, 0.2)][:answers])
    new, noise = private_mean(
        current,
        trained,
        denominator=sampled,
        clip_norm=clip_norm,
        noise_multiplier=sigma,
        rng=_rng(seed + 1),
        adaptive=adaptive,
    )
    expected = _expected_noiseless(current, trained, sampled, clip_norm)
    return np.concatenate([new[k] - expected[k] for k in ("w", "b")]), noise


@pytest.mark.parametrize(
    ("sigma", "clip_norm", "sampled", "answers"),
    [(1.0, 1.0, 4, 4), (1.3, 0.7, 10, 4), (0.5, 5.0, 3, 3), (2.0, 0.1, 100, 2)],
)
def test_the_noise_on_the_mean_has_std_sigma_c_over_sampled(sigma, clip_norm, sampled, answers):
    noise, info = _noise_on_the_mean(sigma, clip_norm, sampled, answers)
    assert info.noise_std == pytest.approx(sigma * clip_norm)  # on the sum
    s = sigma * clip_norm / sampled  # on the mean
    n = noise.size
    assert n == COORDS
    assert abs(float(np.std(noise)) - s) <= SIGMAS_OF_SLACK * s / math.sqrt(2 * n)
    assert abs(float(np.mean(noise))) <= SIGMAS_OF_SLACK * s / math.sqrt(n)
    # Gaussian, not merely of the right scale: ~68.3% within one std, ~95.4% within two
    assert abs(float(np.mean(np.abs(noise) <= s)) - 0.6827) < 0.005
    assert abs(float(np.mean(np.abs(noise) <= 2 * s)) - 0.9545) < 0.003


def test_the_noise_of_each_array_is_independent():
    noise, _ = _noise_on_the_mean(1.0, 1.0, 4, 4)
    half = COORDS // 2
    w, b = noise[:half], noise[half:]
    assert abs(float(np.corrcoef(w, b)[0, 1])) <= SIGMAS_OF_SLACK / math.sqrt(half)
    assert abs(float(np.corrcoef(w[:-1], w[1:])[0, 1])) <= SIGMAS_OF_SLACK / math.sqrt(half)


def test_the_same_generator_state_gives_the_same_noise_and_another_differs():
    a, _ = _noise_on_the_mean(1.0, 1.0, 4, 4, seed=11)
    b, _ = _noise_on_the_mean(1.0, 1.0, 4, 4, seed=11)
    c, _ = _noise_on_the_mean(1.0, 1.0, 4, 4, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_adaptive_clipping_noises_the_update_with_the_reduced_multiplier():
    adaptive = AdaptiveClipping(count_noise=2.0)
    sigma = 1.2
    noise, info = _noise_on_the_mean(sigma, 0.8, 5, 4, adaptive=adaptive)
    sigma_update = adaptive.update_noise(sigma)
    assert sigma < sigma_update  # the count's share is paid for by more noise on the update
    assert info.noise_std == pytest.approx(sigma_update * 0.8)
    s = sigma_update * 0.8 / 5
    assert abs(float(np.std(noise)) - s) <= SIGMAS_OF_SLACK * s / math.sqrt(2 * noise.size)


# -- adaptive clipping (Andrew et al. 2021) ----------------------------------------------------
@pytest.mark.parametrize(("sigma", "count_noise"), [(1.0, 10.0), (0.5, 0.3), (3.9, 2.0), (1, 5)])
def test_update_noise_and_count_noise_together_spend_exactly_sigma(sigma, count_noise):
    sigma_update = AdaptiveClipping(count_noise=count_noise).update_noise(sigma)
    assert sigma_update > sigma
    assert sigma_update**-2 + (2 * count_noise) ** -2 == pytest.approx(sigma**-2, rel=1e-12)


@pytest.mark.parametrize(("sigma", "count_noise"), [(20.0, 10.0), (25.0, 10.0), (1.0, 0.5)])
def test_update_noise_refuses_sigma_at_or_above_twice_the_count_noise(sigma, count_noise):
    with pytest.raises(ValueError, match="sigma < 2 \\* count_noise"):
        AdaptiveClipping(count_noise=count_noise).update_noise(sigma)


def test_adaptive_clipping_without_noise_releases_the_exact_clipped_mean_and_still_adapts():
    """Decided (issue 21): no noise is a non-private run, not an error; the update is the
    exact clipped mean and the clip norm still follows the (noised) unclipped count."""
    new, noise = private_mean(
        {"w": np.zeros(3)},
        [{"w": np.ones(3)}],
        denominator=1,
        clip_norm=1.0,
        noise_multiplier=0.0,
        rng=_rng(),
        adaptive=AdaptiveClipping(),
    )
    np.testing.assert_allclose(new["w"], np.ones(3) / np.sqrt(3), rtol=1e-12)
    assert noise.noise_std == 0.0
    assert noise.clip_norm == 1.0
    assert noise.next_clip_norm != 1.0  # the one update was clipped: the norm moves


def _norm_population(n: int = 41, seed: int = 3):
    rng = _rng(seed)
    norms = np.sort(rng.lognormal(mean=0.0, sigma=0.6, size=n))
    current = {"w": np.zeros(4)}
    trained = []
    for norm in norms:
        direction = rng.normal(size=4)
        trained.append({"w": direction / np.linalg.norm(direction) * norm})
    return current, trained, norms


def _adapt(clip_norm, rounds, adaptive, *, sigma=0.05, seed=0):
    current, trained, norms = _norm_population()
    rng = _rng(seed)
    path = [clip_norm]
    for _ in range(rounds):
        _, noise = private_mean(
            current,
            trained,
            denominator=len(trained),
            clip_norm=path[-1],
            noise_multiplier=sigma,
            rng=rng,
            adaptive=adaptive,
        )
        assert noise.clip_norm == path[-1]
        path.append(noise.next_clip_norm)
    return np.array(path), norms


@pytest.mark.parametrize("start", [0.05, 20.0])
@pytest.mark.parametrize("quantile", [0.5, 0.8])
def test_the_clip_norm_converges_to_the_target_quantile_of_the_update_norms(start, quantile):
    adaptive = AdaptiveClipping(target_quantile=quantile, learning_rate=0.2, count_noise=0.05)
    path, norms = _adapt(start, 200, adaptive)
    target = float(np.quantile(norms, quantile))
    # far from the target it moves towards it every round, geometrically
    if start < target:
        assert np.all(np.diff(path[:10]) > 0)
    else:
        assert np.all(np.diff(path[:10]) < 0)
    final = path[-30:]
    assert np.all(np.abs(final / target - 1) <= 0.2), (target, final)
    # and it tracks the quantile: about the target share of the updates lie within it
    assert abs(float(np.mean(norms <= np.median(final))) - quantile) <= 0.1


def test_next_clip_norm_follows_the_geometric_update_rule():
    adaptive = AdaptiveClipping(target_quantile=0.5, learning_rate=0.3, count_noise=0.5)
    current, trained, norms = _norm_population()
    for clip_norm in (0.3, float(np.median(norms)), 5.0):
        _, noise = private_mean(
            current,
            trained,
            denominator=len(trained) + 9,  # nine dropped out: b̄ is over the denominator
            clip_norm=clip_norm,
            noise_multiplier=0.5,
            rng=_rng(4),
            adaptive=adaptive,
        )
        unclipped = int(np.sum(norms <= clip_norm))
        # C' = C·exp(−η(b̄ − γ)) with b̄ = (Σ(b_i − ½) + N(0, σ_b²)) / denominator + ½
        b = adaptive.target_quantile - math.log(noise.next_clip_norm / clip_norm) / 0.3
        assert b == pytest.approx(noise.noised_unclipped_fraction, rel=1e-9)
        count_noise = (b - 0.5) * (len(trained) + 9) - (unclipped - len(trained) / 2)
        assert abs(count_noise) <= SIGMAS_OF_SLACK * adaptive.count_noise


@pytest.mark.parametrize("extra_norm", [0.01, 100.0])  # the added client: within C, or clipped
def test_one_client_moves_the_noised_count_by_exactly_one_half_over_the_denominator(extra_norm):
    """The sensitivity that σ_Δ⁻² + (2σ_b)⁻² = σ⁻² pays for is ½ (the centred indicator).

    Finding 5 of issue 16: the uncentred sum Σb_i moves by 1 when a client that is
    within the clip joins, which doubles the count's sensitivity (σ=0.9 with count
    noise 0.5 then spent ε≈19 where 5.2 was reported)."""
    adaptive = AdaptiveClipping(count_noise=0.5)
    current, trained, _ = _norm_population()
    extra = {"w": np.array([extra_norm, 0.0, 0.0, 0.0])}
    counts = []
    for cohort in (trained, [*trained, extra]):
        _, noise = private_mean(
            current,
            cohort,
            denominator=50,
            clip_norm=1.0,
            noise_multiplier=0.9,
            rng=_rng(11),  # the same noise for both neighbours
            adaptive=adaptive,
        )
        counts.append(noise.noised_unclipped_fraction)
    assert abs(counts[1] - counts[0]) * 50 == pytest.approx(0.5, rel=1e-9)


def test_without_adaptive_clipping_the_clip_norm_stays():
    current, trained, _ = _norm_population()
    _, noise = private_mean(
        current, trained, denominator=len(trained), clip_norm=0.7, noise_multiplier=1.0, rng=_rng()
    )
    assert noise.next_clip_norm == noise.clip_norm == 0.7
