"""What the agent and the sequential simulator ask of a site, whatever trains in it.

A :class:`~fedops.tasks.site.Site` trains a fedops task; a
:class:`~fedops.tasks.flower_site.FlowerSite` runs a Flower app. The agent
(:mod:`fedops.client`), its SecAgg+ side and the in-memory simulator are typed against
this protocol, so either is driven by the same code and a new kind of site needs no
change to them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from fedops.core.monitoring.profile import MonitorSpec, SiteReport
from fedops.core.params import Params
from fedops.core.train_settings import TrainSettings
from fedops.core.training import TrainConfig
from fedops.tasks.contract import Task
from fedops.tasks.ledger import SiteLedger, Spent

__all__ = ["LocalSite"]


class LocalSite(Protocol):
    """One site's side of a run: its answers to the coordinator's tasks.

    ``task`` gives the name and digest a site's policy checks; ``ledger`` and
    ``on_spend`` are its local-DP records; ``fit`` and ``check_report`` raise
    :class:`~fedops.tasks.fit_settings.PolicyRefusal` for what the site will not do.
    """

    site: int
    task: Task
    train_config: TrainConfig
    ledger: SiteLedger
    on_spend: Callable[[Spent], None] | None

    @property
    def hides_count(self) -> bool: ...

    @property
    def num_train_examples(self) -> int: ...

    def initial_params(self) -> Params: ...

    def fit(
        self,
        params: Params,
        server_round: int,
        config: Mapping[str, float],
        *,
        run_id: str = "",
        train: TrainSettings | None = None,
    ) -> tuple[Params, int, dict[str, float]]: ...

    def training(self, train: TrainSettings | None) -> TrainConfig: ...

    def evaluate(
        self, params: Params, server_round: int | None = None
    ) -> tuple[int, dict[str, float]]: ...

    def check_report(self, spec: MonitorSpec) -> None: ...

    def report(self, params: Params, spec: MonitorSpec) -> SiteReport | None: ...
