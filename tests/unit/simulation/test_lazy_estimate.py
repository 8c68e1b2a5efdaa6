"""``simulation.data=auto`` sizes the federation from sites spread over it, not site 0 alone:
an uneven federation (site 0 tiny, the others large) that site 0 times the number of sites
says fits goes lazy, and the sites read to size it are each read once."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from fedops.data import FederatedData
from fedops.data.partial import load_site
from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.simulation import lazy_federation
from fedops.simulation.lazy_federation import (
    MEMORY_SHARE,
    LazyFederation,
    estimate_bytes,
    open_federation,
    sampled_sites,
)
from fedops.tasks import load_task

UNEVEN = """
import numpy as np
from torch import nn

LOG = {log!r}


def build_model():
    return nn.Sequential(nn.Linear(6, 2))


def load_data(site, num_sites):
    with open(LOG, "a") as log:  # every call, by site
        log.write(f"{{site}}\\n")
    n = 4 if site == 0 else 250  # site 0 tiny, every other site large
    x = np.random.default_rng(site).normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return (x[: n // 2], y[: n // 2]), (x[n // 2 :], y[n // 2 :])
"""


def _uneven(tmp_path: Path, clients: int) -> tuple[SimulateConfig, Path]:
    log = tmp_path / "reads.log"
    path = tmp_path / "uneven.py"
    path.write_text(UNEVEN.format(log=str(log)))
    cfg = SimulateConfig(rounds=1, seed=0, task=str(path))
    cfg.simulation = SimulationConfig(
        backend="vectorized", num_clients=clients, clients_per_round=min(3, clients), data="auto"
    )
    return validate(cfg), log


def _reads(log: Path) -> Counter[int]:
    return Counter(int(site) for site in log.read_text().split())


def test_an_uneven_federation_site_0_misjudges_goes_lazy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, log = _uneven(tmp_path, clients=9)
    task = load_task(cfg.task)
    tiny, large = (load_site(task, site, 9) for site in (0, 1))
    room = 10 * large.nbytes  # the whole federation (8 large sites) needs more than half
    assert tiny.nbytes * 9 <= MEMORY_SHARE * room  # site 0 times 9: "fits"
    assert (tiny.nbytes + 3 * large.nbytes) * 9 // 4 > MEMORY_SHARE * room  # the sample's mean
    log.unlink()
    monkeypatch.setattr(lazy_federation, "available_memory", lambda device: room)
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        _, federation = open_federation(cfg)
    assert isinstance(federation, LazyFederation) and not federation.round_aware
    assert federation.first.nbytes == tiny.nbytes  # site 0: the shape every site shares
    assert _reads(log) == Counter([0, 2, 5, 8])  # site 0, the last and two between, once
    lines = [r.getMessage() for r in caplog.records if r.name == "fedops.simulate"]
    assert len(lines) == 1 and "(from mean of 4 sites times 9) > half of the" in lines[0]


def test_an_uneven_federation_that_fits_reads_each_site_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sampled sites are reused by the in-memory build, not read again."""
    cfg, log = _uneven(tmp_path, clients=9)
    monkeypatch.setattr(lazy_federation, "available_memory", lambda device: 10**12)
    _, data = open_federation(cfg)
    assert isinstance(data, FederatedData) and data.num_clients == 9
    assert _reads(log) == Counter(range(9))
    assert data.train_offsets[1] == 2 and data.train_offsets[2] == 2 + 125  # in site order


@pytest.mark.parametrize("clients", [1, 2, 3, 4])
def test_a_small_federation_is_read_whole_to_size_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, clients: int
) -> None:
    """Four sites or fewer: every one read, once, and the estimate is exact."""
    assert sampled_sites(clients) == list(range(clients))
    cfg, log = _uneven(tmp_path, clients)
    monkeypatch.setattr(lazy_federation, "available_memory", lambda device: 1)
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        _, federation = open_federation(cfg)
    assert isinstance(federation, LazyFederation)
    assert _reads(log) == Counter(range(clients))
    assert f"(from all {clients} sites)" in caplog.text


def test_sampled_sites_spread_over_the_federation() -> None:
    assert sampled_sites(5) == [0, 1, 2, 4]
    assert sampled_sites(1000) == [0, 333, 666, 999]
    assert all(len(sampled_sites(n)) == 4 for n in range(4, 200))


def test_the_estimate_is_the_mean_times_the_sites(tmp_path: Path) -> None:
    cfg, _ = _uneven(tmp_path, clients=3)
    task = load_task(cfg.task)
    read = {site: load_site(task, site, 3) for site in range(3)}
    assert estimate_bytes(read, 3) == sum(rows.nbytes for rows in read.values())  # exact
    sample = {0: read[0], 2: read[2]}
    assert estimate_bytes(sample, 100) == (read[0].nbytes + read[2].nbytes) * 50
