"""``simulation.data=auto`` holds the in-memory build to the budget its estimate was held to:
one site far larger than the four sampled ones (which the estimate misses) stops the reading
as soon as it is read, the run goes lazy with one log line, and its results are the
in-memory run's; a federation that fits is read once per site, and ``memory`` is never
held to a budget."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from procs import final_model
from test_lazy_federation import _same

from fedops.data import FederatedData
from fedops.data.build import DataOverBudget, ReadBudget, from_task, load_split
from fedops.data.partial import load_site
from fedops.runtime.simulate_settings import SimulateConfig, SimulationConfig, validate
from fedops.simulation import lazy_federation
from fedops.simulation.engine import run_simulation
from fedops.simulation.lazy_federation import (
    MEMORY_SHARE,
    LazyFederation,
    estimate_bytes,
    open_federation,
    sampled_sites,
)
from fedops.tasks import load_task

SITES, HUGE = 40, 20  # site 20: none of the sampled 0, 13, 26, 39

SKEWED = """
import numpy as np
from torch import nn

LOG = {log!r}


def build_model():
    return nn.Sequential(nn.Linear(6, 2))


def rows(site, shift):
    with open(LOG, "a") as log:  # every call, by site
        log.write(f"{{site}}\\n")
    n = 600 if site == {huge} else 12  # one site far larger than every other
    x = np.random.default_rng([site, shift + 1]).normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + 0.1 * shift > 0).astype(np.int64)
    return (x[: n // 2], y[: n // 2]), (x[n // 2 :], y[n // 2 :])
"""

STATIC = """
def load_data(site, num_sites):
    return rows(site, 0)
"""

PER_ROUND = """
def load_data(site, num_sites, round):
    return rows(site, round)
"""

LAZY_MEMORY = ("auto", "memory")  # the run that goes lazy, the one it must equal

#: what open_federation reads before it stops: the sampled sites, then 1..20 in order
READ_TO_HUGE = Counter(sorted(set(sampled_sites(SITES)) | set(range(1, HUGE + 1))))


def _skewed(tmp_path: Path, name: str, data: str, *, kind: str = "static") -> SimulateConfig:
    path = tmp_path / f"{name}.py"
    source = SKEWED.format(log=str(tmp_path / f"{name}.log"), huge=HUGE)
    path.write_text(source + (PER_ROUND if kind == "per_round" else STATIC))
    cfg = SimulateConfig(rounds=3, seed=3, task=str(path))
    cfg.simulation = SimulationConfig(
        backend="vectorized", num_clients=SITES, clients_per_round=8, data=data
    )
    cfg.client.epochs, cfg.client.batch_size, cfg.client.lr = 1, 8, 0.1
    return validate(cfg)


def _reads(cfg: SimulateConfig) -> Counter[int]:
    log = Path(str(cfg.task)).with_suffix(".log")
    reads = Counter(int(site) for site in log.read_text().split()) if log.exists() else Counter()
    log.unlink(missing_ok=True)  # the next count starts from nothing
    return reads


def _sizes(cfg: SimulateConfig) -> tuple[int, int, int]:
    """The estimate (sampled mean times the sites), a small site's bytes, the huge one's."""
    task = load_task(str(cfg.task))
    first = 0 if lazy_federation.takes_round(task.load_data) else None
    sampled = {s: load_site(task, s, SITES, first) for s in sampled_sites(SITES)}
    huge = load_site(task, HUGE, SITES, first).nbytes
    _reads(cfg)
    return estimate_bytes(sampled, SITES), sampled[0].nbytes, huge


def _room(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    monkeypatch.setattr(lazy_federation, "available_memory", lambda device: room)


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "> half of the" in r.getMessage()]


def test_a_site_the_sample_misses_stops_the_in_memory_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _skewed(tmp_path, "skewed", "auto")
    estimate, small, huge = _sizes(cfg)
    room = 2 * (estimate + 2 * small)  # the estimate fits, with two small sites to spare
    assert estimate == small * SITES and estimate <= MEMORY_SHARE * room
    assert (SITES - 1) * small + huge > MEMORY_SHARE * room  # the federation does not
    _room(monkeypatch, room)
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        _, federation = open_federation(cfg)
    assert isinstance(federation, LazyFederation) and federation.first.nbytes == small
    assert _reads(cfg) == READ_TO_HUGE  # each once, none after the huge one
    read = len(READ_TO_HUGE)
    assert _lines(caplog) == [
        f"federation data ~{((read - 1) * small + huge) / 1e6:,.1f} MB+ (from the {read} of "
        f"{SITES} sites read so far) > half of the {room / 1e6:,.1f} MB available: loading "
        "the 8 clients of each round as it starts"
    ]


@pytest.mark.parametrize("kind", ["static", "per_round"])
def test_the_run_that_stopped_reading_is_the_in_memory_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    configs = {data: _skewed(tmp_path, f"{kind}_{data}", data, kind=kind) for data in LAZY_MEMORY}
    estimate, small, _ = _sizes(configs["auto"])
    factor = 2 if kind == "per_round" else 1
    _room(monkeypatch, 2 * factor * (estimate + 2 * small))  # the estimate fits
    runs = {data: tmp_path / f"run-{kind}-{data}" for data in configs}
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        for data, cfg in configs.items():
            assert run_simulation(cfg, runs[data])["status"] == "completed"
    assert len(_lines(caplog)) == 1 and "sites read so far" in _lines(caplog)[0]  # auto's
    lazy, memory = final_model(runs["auto"]), final_model(runs["memory"])
    assert lazy.keys() == memory.keys()
    for name in memory:
        np.testing.assert_allclose(lazy[name], memory[name], rtol=1e-5, atol=1e-6, err_msg=name)
    metrics = {
        data: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for data, run in runs.items()
    }
    assert len(metrics["auto"]) == 3
    _same(metrics["auto"], metrics["memory"])


def test_a_federation_within_the_budget_is_read_once_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _skewed(tmp_path, "fits", "auto")
    _, small, huge = _sizes(cfg)
    _room(monkeypatch, 2 * ((SITES - 1) * small + huge))  # the whole federation, exactly
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        _, data = open_federation(cfg)
    assert isinstance(data, FederatedData) and data.num_clients == SITES
    assert _reads(cfg) == Counter(range(SITES))
    assert not _lines(caplog)


def test_memory_is_held_to_no_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _skewed(tmp_path, "memory", "memory")
    _room(monkeypatch, 1)
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        _, data = open_federation(cfg)
    assert isinstance(data, FederatedData) and data.num_clients == SITES
    assert _reads(cfg) == Counter(range(SITES))
    assert not _lines(caplog)


def test_a_round_aware_task_counts_what_it_reads_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its round-0 window and each round's both held, as in the estimate: a federation
    whose bytes fit once but not twice goes lazy (a static one of the same sizes does not)."""
    configs = {kind: _skewed(tmp_path, kind, "auto", kind=kind) for kind in ("static", "per_round")}
    estimate, small, huge = _sizes(configs["per_round"])
    total = (SITES - 1) * small + huge
    room = 2 * total  # the federation fits once (and the estimate twice: it misses the huge)
    assert 2 * estimate <= MEMORY_SHARE * room < 2 * total
    _room(monkeypatch, room)
    with caplog.at_level(logging.INFO, logger="fedops.simulate"):
        federations = {kind: open_federation(cfg)[1] for kind, cfg in configs.items()}
    assert isinstance(federations["per_round"], LazyFederation)
    assert _reads(configs["per_round"]) == READ_TO_HUGE
    assert isinstance(federations["static"], FederatedData)
    assert _reads(configs["static"]) == Counter(range(SITES))
    assert len(_lines(caplog)) == 1 and f"the {len(READ_TO_HUGE)} of 40 sites read" in caplog.text


def test_from_task_stops_at_the_first_site_over_its_budget(tmp_path: Path) -> None:
    """The sites given as read count from the start; the rest are read in order, and the
    first that puts the bytes read (times the budget's factor) over it stops the reading."""
    cfg = _skewed(tmp_path, "direct", "auto")
    task = load_task(str(cfg.task))
    read = {s: load_split(task, s, SITES) for s in (0, 39)}
    small = sum(a.nbytes for split in read[0] for a in split if a is not None)
    huge = load_site(task, HUGE, SITES).nbytes
    _reads(cfg)
    with pytest.raises(DataOverBudget) as caught:  # fits but for the huge site
        from_task(task, SITES, read=read, budget=ReadBudget(SITES * small))
    over = caught.value
    assert (over.sites_read, over.bytes_read) == (HUGE + 2, (HUGE + 1) * small + huge)
    assert over.need == over.bytes_read
    assert _reads(cfg) == Counter(range(1, HUGE + 1))
    with pytest.raises(DataOverBudget) as caught:  # three sites, twice: over six
        from_task(task, SITES, read=read, budget=ReadBudget(6 * small - 1, factor=2))
    assert (caught.value.sites_read, caught.value.need) == (3, 6 * small)
    assert _reads(cfg) == Counter([1])
    exact = (SITES - 1) * small + huge  # the whole federation: within, read whole
    assert from_task(task, SITES, read=read, budget=ReadBudget(exact)).num_clients == SITES
    assert _reads(cfg) == Counter(set(range(SITES)) - {0, 39})
