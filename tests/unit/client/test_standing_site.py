"""A standing site against a coordinator that offers whatever it likes (red team, issue 20).

The Federation stub is a plain object, and the site's waits run on a virtual clock, so
nothing sleeps: the site must pause after every decision (longer while it keeps
declining), remember runs by their full id in bounded memory, and survive a run whose
task it cannot build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedops.client import standing
from fedops.client.site_build import task_site
from fedops.client.standing import MAX_PAUSE_S, OFFER_POLL_S, StandingSite
from fedops.runtime.settings import ClientConfig
from fedops.tasks.site_policy import SitePolicy
from fedops.v1 import fedops_pb2 as pb


class _Waits:
    """The site's stop event on a virtual clock: every wait is recorded, none sleeps."""

    def __init__(self, stop_after: int) -> None:
        self.waits: list[float] = []
        self.stop_after = stop_after

    def wait(self, delay: float) -> bool:
        self.waits.append(delay)
        return len(self.waits) >= self.stop_after

    def is_set(self) -> bool:
        return len(self.waits) >= self.stop_after


class _Offers:
    """A coordinator's Offer: a new run id on every call, or always the same one."""

    def __init__(self, make: Any) -> None:
        self.make, self.calls = make, 0

    def Offer(self, request: pb.OfferRequest, timeout: float) -> pb.RunOffer:
        self.calls += 1
        return self.make(self.calls)


def _offer(run_id: str, task: str = "not-mine") -> pb.RunOffer:
    train = pb.TrainSettings(epochs=1, batch_size=16, lr=0.1, optimizer="sgd")
    return pb.RunOffer(open=True, run_id=run_id, task=task, partition="iid", alpha=1.0, train=train)


def _site(tmp_path: Path, offers: _Offers, stop_after: int, make_site=task_site) -> StandingSite:
    cfg = ClientConfig(standing=True, tasks=("digits",), run_dir=tmp_path, task=None)
    site = StandingSite(cfg, SitePolicy(), make_site)
    site.stub = offers  # type: ignore[assignment]
    site._stop = _Waits(stop_after)  # type: ignore[assignment]
    return site


def test_fresh_offers_meet_a_growing_pause_and_bounded_memory(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(standing, "MAX_REMEMBERED", 5)
    site = _site(tmp_path, _Offers(lambda n: _offer(f"run-{n}")), stop_after=12)
    assert site.run() == 0
    waits = site._stop.waits  # type: ignore[attr-defined]
    assert waits[0] == OFFER_POLL_S * 2  # a pause after every decision, doubling ...
    assert waits == sorted(waits) and waits[-1] == MAX_PAUSE_S  # ... up to its cap
    assert len(site.decided) == 5 and "run-12" in site.decided  # the newest, no more


def test_a_long_run_id_is_remembered_whole_and_declined_once(tmp_path: Path):
    long_id = "r" * 200  # not a plain name: declined, and the same offer not again
    offers = _Offers(lambda n: _offer(long_id))
    site = _site(tmp_path, offers, stop_after=6)
    site.run()
    log = (tmp_path / "audit.jsonl").read_text()
    assert log.count('"run_declined"') == 1
    assert long_id in site.decided


def test_a_task_the_site_cannot_build_is_declined_and_the_site_stays_up(tmp_path: Path):
    def broken(cfg: ClientConfig, task: Any, policy: SitePolicy) -> Any:
        raise ValueError("no Dirichlet split gives every site a sample")

    offers = _Offers(lambda n: _offer("run-a", task="digits"))
    site = _site(tmp_path, offers, stop_after=3, make_site=broken)
    assert site.run() == 0
    assert site.decided["run-a"].startswith("declined: the site could not build the task")
    assert "no Dirichlet split" in (tmp_path / "audit.jsonl").read_text()


@pytest.mark.parametrize("alpha", [float("nan"), -1.0])
def test_a_crafted_split_is_declined_before_any_data_is_read(tmp_path: Path, alpha: float):
    def never(cfg: ClientConfig, task: Any, policy: SitePolicy) -> Any:
        raise AssertionError("the site built a task for a refused offer")

    offer = _offer("run-a", task="digits")
    offer.alpha = alpha
    site = _site(tmp_path, _Offers(lambda n: offer), stop_after=2, make_site=never)
    site.run()
    assert site.decided == {"run-a": "declined"}


def test_runs_that_ask_nothing_meet_the_same_growing_pause(tmp_path: Path):
    site = _site(tmp_path, _Offers(lambda n: _offer(f"run-{n}")), stop_after=1)
    for n in range(10):
        site._decided(f"run-{n}", "empty: the run ended without a task for this site")
    assert site._pause == MAX_PAUSE_S
    site._decided("run-x", "finished (the run is complete)")
    assert site._pause == OFFER_POLL_S
