"""A local-DP site that plans with a public record count shows nothing else of its n.

Red team, issue 16 (B2, B3): the DP-SGD steps per round were epochs·n/batch, so
the update's noise energy told n apart; a capped site's accept or decline, and
the ε in its reason, followed n through the sample rate. With
``--dp-public-records N`` (kit rule ``dp_public_records``) the sample rate,
the steps, σ=auto, ε and every decision are functions of N: two sites with
different n look alike outside the noised gradient sums. Each test runs the
same check without the public count as its control, so it can fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedops.client.agent import site_policy
from fedops.config import ClientConfig
from fedops.core.training import TrainConfig
from fedops.tasks import load_task
from fedops.tasks.site import PolicyRefusal, Site
from fedops.tasks.site_policy import SitePolicy

TRAIN = TrainConfig(epochs=1, batch_size=32, lr=0.5, momentum=0.0)
#: noise far above the clipped gradients: the update is almost pure noise
LOUD = {"dp_noise_multiplier": 50.0, "dp_max_grad_norm": 0.01, "dp_delta": 1e-5}
DP = {"dp_noise_multiplier": 1.0, "dp_max_grad_norm": 1.0, "dp_delta": 1e-5}
PUBLIC = 256


pytestmark = pytest.mark.usefixtures("quiet_warnings")  # Opacus warns on every DP-SGD step


@pytest.fixture(scope="module")
def digits():
    task = load_task("digits")
    train, test = task.load_data(0, 1)
    return task, train, test


def _site(digits, n: int, **policy) -> Site:
    task, (x, y), test = digits
    return Site(
        task, site=0, num_sites=1, train_config=TRAIN, data=((x[:n], y[:n]), test), **policy
    )


def _noise_energy(site: Site, rounds: int) -> float:
    start = site.initial_params()
    total = 0.0
    for r in range(1, rounds + 1):
        trained, count, metrics = site.fit(start, r, LOUD)
        assert (count, metrics) == (1, {})
        total += sum(float(np.sum((trained[k] - start[k]) ** 2)) for k in start)
    return total / rounds


@pytest.mark.parametrize("public", [PUBLIC, None])
def test_the_updates_noise_energy_does_not_tell_n(digits, public):
    small = _noise_energy(_site(digits, 150, public_records=public), rounds=3)
    large = _noise_energy(_site(digits, 600, public_records=public), rounds=3)
    ratio = large / small
    if public is not None:  # the same steps, the same divisor: the same noise
        assert 0.8 < ratio < 1.25, ratio
    else:  # control: n/batch steps, 4x the records, ~4x the noise energy
        assert ratio > 2.5, ratio


@pytest.mark.parametrize("public", [PUBLIC, None])
def test_a_capped_sites_decisions_do_not_tell_n(digits, public):
    def decisions(n: int) -> list[str]:
        site = _site(digits, n, public_records=public, max_epsilon=2.0)
        start, out = site.initial_params(), []
        for r in range(1, 9):
            try:
                site.fit(start, r, DP)
                out.append("trained")
            except PolicyRefusal as exc:
                out.append(str(exc))
        return out

    small, large = decisions(150), decisions(600)
    assert any(d != "trained" for d in small), "the cap was never reached: no test"
    if public is not None:
        assert small == large  # the same rounds, refused with the same words
    else:
        assert small != large


def test_sigma_auto_is_the_same_for_any_n(digits):
    target = {**DP, "dp_target_epsilon": 3.0, "dp_rounds": 5.0}
    del target["dp_noise_multiplier"]
    sigmas = {
        n: _site(digits, n, public_records=PUBLIC)._local_dp(target, TRAIN).noise_multiplier
        for n in (150, 600)
    }
    assert sigmas[150] == sigmas[600]
    plain = {n: _site(digits, n)._local_dp(target, TRAIN).noise_multiplier for n in (150, 600)}
    assert plain[150] != plain[600]


def test_a_public_count_hides_the_count_the_site_announces(digits):
    assert _site(digits, 150, public_records=PUBLIC).hides_count
    assert _site(digits, 150, max_epsilon=1.0).hides_count
    assert not _site(digits, 150).hides_count


def test_the_public_count_comes_from_the_flag_or_the_kit():
    assert site_policy(ClientConfig(dp_public_records=500), None).dp_public_records == 500
    assert SitePolicy.from_mapping({"dp_public_records": 300}).dp_public_records == 300
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="dp_public_records"):
            SitePolicy.from_mapping({"dp_public_records": bad})
    with pytest.raises(ValueError, match="public_records"):
        Site(load_task("digits"), site=0, num_sites=1, train_config=TRAIN, public_records=0)


def test_a_site_with_a_public_count_refuses_plain_training(digits):
    """Red team, issue 16: a plain fit's answer carried the true n and the exact loss."""
    site = _site(digits, 150, public_records=PUBLIC)
    with pytest.raises(PolicyRefusal, match=r"only with local DP.*--dp-public-records"):
        site.fit(site.initial_params(), 1, {})
    assert _site(digits, 150).fit(_site(digits, 150).initial_params(), 1, {})[1] == 150
