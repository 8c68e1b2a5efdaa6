"""Distributed DP under SecAgg+: the clients' Skellam noise sums to the configured noise."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import FakeCrypto

from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.server import SecAggServer
from fedops.core.secagg.update import decode_mean, encode_update


def _round(updates, *, sigma, clip, drop=(), seed=0):
    n = len(updates)
    crypto = FakeCrypto(seed)
    server = SecAggServer(
        context=b"dp",
        cohort=[f"site-{i}" for i in range(1, n + 1)],
        vector_length=updates[0].size + 1,
        clip=clip,
        crypto=crypto,
        noise=(sigma, clip),
    )
    clients = {i: SecAggClient(server.setup_for(i), crypto) for i in server.clients}
    for i, c in clients.items():
        server.receive_keys(i, c.advertise(10))
    for i, req in server.close_keys().items():
        server.receive_shares(i, clients[i].share(req))
    rng = np.random.default_rng(seed)
    start = {"w": np.zeros(updates[0].size)}
    for i, req in server.close_shares().items():
        if i in drop:
            continue
        vec, _ = encode_update(start, {"w": updates[i - 1]}, 10, req.encoding, rng)
        server.receive_masked(i, clients[i].mask(req, vec))
    for i, req in server.close_masked().items():
        server.receive_signature(i, clients[i].sign_survivors(req))
    for i, req in server.close_consistency().items():
        server.receive_reveal(i, clients[i].unmask(req))
    result = server.finish()
    new, weight = decode_mean(start, result.total, len(result.survivors), result.encoding)
    return new["w"], result.survivors, weight


@pytest.mark.parametrize("drop", [(), (2, 5)])
def test_noise_on_the_mean_has_the_configured_std(drop):
    n, d, sigma, clip = 12, 40_000, 1.5, 0.5
    rng = np.random.default_rng(1)
    updates = [rng.normal(0, 1e-3, d) for _ in range(n)]  # norm ~0.2 < clip: nothing clipped
    mean, survivors, weight = _round(updates, sigma=sigma, clip=clip, drop=drop)
    m = len(survivors)
    assert weight == m  # equal weights
    err = mean - np.mean([updates[i - 1] for i in survivors], axis=0)
    expected = sigma * clip * np.sqrt(m / n) / m  # the dropped clients' noise is missing
    # the sample std of d normal draws is within 5 * expected / sqrt(2d) of the truth
    assert abs(err.std() - expected) < 5 * expected / np.sqrt(2 * d), (err.std(), expected)
    assert abs(err.mean()) < 5 * expected / np.sqrt(d)


def test_updates_are_clipped_to_the_l2_norm_and_extremes_do_not_wrap():
    n, d, clip = 6, 1000, 0.5
    # every client at the extreme of the range (and far beyond the L2 bound): the centred
    # decoding must not wrap around 2^32 even with the noise on top
    big = [np.full(d, 10.0 * (1 if i % 2 else -1)) for i in range(n)]
    mean, _, _ = _round(big, sigma=0.0, clip=clip)
    clipped = [u * min(1.0, clip / np.linalg.norm(u)) for u in big]
    np.testing.assert_allclose(mean, np.mean(clipped, axis=0), atol=1e-6)
    same = [np.full(d, 10.0) for _ in range(n)]
    mean, _, _ = _round(same, sigma=2.0, clip=clip)
    per_coord = clip / np.sqrt(d)
    noise = 2.0 * clip / n
    assert abs(mean.mean() - per_coord) < 5 * noise / np.sqrt(d)
    assert np.all(np.abs(mean - per_coord) < 8 * noise)
