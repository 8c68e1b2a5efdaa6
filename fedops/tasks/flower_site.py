"""A Flower app as a fedops site: what the agent and the sequential simulator drive.

:class:`FlowerSite` answers the calls a :class:`~fedops.tasks.site.Site` answers
(:class:`~fedops.tasks.local_site.LocalSite`), so a deployed agent (``fedops client
--flower-app``) and a simulated federation (``flower_app=``) run a Flower app where
they would run a task, and everything fedops does around a site's update applies
unchanged: SecAgg+ masks it, central and distributed DP clip and noise it, the audit
log records its digest. Local DP and drift/fairness monitoring need fedops' own
training loop and the site's rows, which a Flower app keeps inside itself: they are
refused by name (:data:`~fedops.tasks.flower_app.LOCAL_DP_REFUSAL`,
:data:`~fedops.tasks.flower_app.MONITORING_REFUSAL`), never silently skipped.

Virtual client / site ``i`` of ``N`` gets Flower's ``node_config``
``{"partition-id": i, "num-partitions": N}``, so an app that partitions its data by
them (as Flower's examples do) runs unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedops.core.monitoring.profile import MonitorSpec, SiteReport
from fedops.core.params import Params
from fedops.core.train_settings import TrainSettings
from fedops.core.training import TrainConfig
from fedops.tasks.contract import Task
from fedops.tasks.fit_settings import (
    PolicyRefusal,
    TrainCaps,
    capped_training,
    checked_round_config,
)
from fedops.tasks.flower_app import (
    LOCAL_DP_REFUSAL,
    MONITORING_REFUSAL,
    FlowerApp,
    FlowerAppError,
)
from fedops.tasks.flower_calls import LegacyCalls, MessageCalls, named
from fedops.tasks.ledger import SiteLedger, Spent

__all__ = ["FlowerSite", "flower_task", "initial_of"]

#: the run's training settings an app reads from its config (after the site's checks)
TRAIN_FIELDS = ("epochs", "batch_size", "lr", "optimizer", "momentum")
#: fit-config keys a Flower app reads as whole numbers (``range(config["epochs"])``)
_WHOLE = ("epochs", "batch_size", "seed", "server-round")


def flower_task(app: FlowerApp) -> Task:
    """The app as a fedops :class:`Task` for what reads a task's name and digest (the
    site's ``allowed_tasks``, the run's records); it has no model or data of fedops'."""

    def no_model() -> torch.nn.Module:
        raise FlowerAppError(f"{app.spec}: a Flower app builds its model itself")

    def no_data(*_: Any) -> Any:
        raise FlowerAppError(f"{app.spec}: a Flower app loads its data itself")

    return Task(
        name=f"flower_app {app.spec}", build_model=no_model, load_data=no_data, digest=app.digest
    )


def initial_of(made: Any) -> Params:
    """A ``flower_initial`` callable's result as named arrays: a torch module or state
    dict by its keys, an ArrayRecord by its keys, a list of arrays as ``p0``, ``p1``..."""
    if isinstance(made, torch.nn.Module):
        made = made.state_dict()
    if isinstance(made, Mapping):
        out: Params = {}
        for name, value in made.items():
            if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
                value = value.detach().cpu().numpy() if torch.is_tensor(value) else value.numpy()
            out[str(name)] = np.asarray(value)
        return out
    if isinstance(made, list | tuple):
        return named([np.asarray(a) for a in made])
    raise FlowerAppError(
        f"flower_initial returned a {type(made).__name__}; expected a torch module, a "
        "state_dict, an ArrayRecord or a list of numpy arrays"
    )


class FlowerSite:
    """One site (or virtual client) running a Flower app.

    Args:
        app: the loaded app (:func:`~fedops.tasks.flower_app.load_flower_app`).
        site: this site's index, Flower's ``partition-id``.
        num_sites: the number of sites, Flower's ``num-partitions``.
        train_config: the site's local settings, the defaults of the config the app
            is sent (the coordinator's round config overrides them).
        seed: seeds torch while the app's initial model is built, so every virtual
            client and every rerun starts from the same model.
        ledger_dir: where a :class:`~fedops.tasks.site.Site` keeps its privacy
            ledger; a Flower app site trains without local DP, so it stays empty.
        train_caps: site policy: the largest epochs, batch size and learning rate the
            app may be sent (``--max-epochs`` ...); a task above one is declined.
    """

    hides_count = False  # local DP, the only reason to hide it, is refused

    def __init__(
        self,
        app: FlowerApp,
        *,
        site: int,
        num_sites: int,
        train_config: TrainConfig,
        seed: int = 0,
        ledger_dir: Path | None = None,
        train_caps: TrainCaps | None = None,
    ) -> None:
        from flwr.app import Context, RecordDict

        self.app = app
        self.task = flower_task(app)
        self.site = site
        self.num_sites = num_sites
        self.train_config = train_config
        self.train_caps = train_caps if train_caps is not None else TrainCaps()
        self.seed = seed
        self.ledger = SiteLedger(ledger_dir)
        self.on_spend: Callable[[Spent], None] | None = None
        self.calls = MessageCalls(app.app) if app.message_api else LegacyCalls(app.app)
        # one Context for the site's life: the app's context.state persists across rounds
        self.context = Context(
            run_id=0,
            node_id=site,
            node_config={"partition-id": site, "num-partitions": num_sites},
            state=RecordDict(),
            run_config=dict(app.run_config),
        )
        self._count = 0

    @property
    def num_train_examples(self) -> int:
        """The example count of the app's last train reply; 1 before its first, since a
        Flower app tells its count only when it trains and SecAgg+'s weight word needs
        one (so round 1 of a secure run weighs every Flower site alike)."""
        return self._count or 1

    def initial_params(self) -> Params:
        """The app's first model: ``flower_initial``'s, else a NumPyClient's
        ``get_parameters``; built with torch seeded by ``seed``."""
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            if self.app.initial is not None:
                return initial_of(self.app.initial())
            return self.calls.initial(self.context)

    def fit(
        self,
        params: Params,
        server_round: int,
        config: Mapping[str, float],
        *,
        run_id: str = "",
        train: TrainSettings | None = None,
    ) -> tuple[Params, int, dict[str, float]]:
        """The app's own training from ``params``; ``(new params, examples, metrics)``.

        The app's config holds the run's training settings ``train`` (checked against
        the site's caps; the site's own without them), the coordinator's round config
        and Flower's ``server-round``."""
        if any(k in config for k in ("dp_noise_multiplier", "dp_target_epsilon")):
            raise PolicyRefusal(f"this site runs a Flower app: {LOCAL_DP_REFUSAL}")
        settings = self._config(server_round, config, self.training(train))
        new, n, metrics = self.calls.train(self.context, params, settings)
        self._count = n
        return new, n, metrics

    def training(self, train: TrainSettings | None) -> TrainConfig:
        """The round's training settings once they pass this site's bounds and caps
        (else :class:`PolicyRefusal`, naming the setting), as a Site checks them."""
        return capped_training(self.train_config, train, self.train_caps)

    @staticmethod
    def _config(
        server_round: int, config: Mapping[str, float], train: TrainConfig
    ) -> dict[str, Any]:
        """What the app reads as its round's config (whole numbers as ints, as an app
        writing ``range(config["epochs"])`` needs them)."""
        checked_round_config(config)  # μ and seed usable; no training setting in config
        # the checked settings last: nothing in the coordinator's config replaces them
        merged: dict[str, Any] = {
            **config,
            **{key: getattr(train, key) for key in TRAIN_FIELDS},
            "server-round": server_round,
        }
        for key in _WHOLE:
            value = merged.get(key)
            if isinstance(value, float) and value.is_integer():
                merged[key] = int(value)
        return merged

    def evaluate(
        self, params: Params, server_round: int | None = None
    ) -> tuple[int, dict[str, float]]:
        """The app's own evaluation of ``params`` (its ``loss``/``accuracy``, under
        fedops' names when the app used Flower's ``eval_loss``/``eval_acc``)."""
        config = {"server-round": server_round or 0}
        return self.calls.evaluate(self.context, params, config)

    def check_report(self, spec: MonitorSpec) -> None:
        raise PolicyRefusal(f"this site runs a Flower app: {MONITORING_REFUSAL}")

    def report(self, params: Params, spec: MonitorSpec) -> SiteReport | None:
        raise PolicyRefusal(f"this site runs a Flower app: {MONITORING_REFUSAL}")
