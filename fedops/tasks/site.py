"""One site's side of a task: its data, its model, and what it does per instruction.

The deployed agent and the in-memory simulation both drive a :class:`Site`,
so local training is the same code in both. Training shuffles with a seed
derived from (run seed, round, site), never from global random state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from fedops.core import training
from fedops.core.monitoring.profile import MonitorSpec, SiteReport
from fedops.core.params import Params
from fedops.core.privacy.accountant import noise_for_target
from fedops.core.privacy.local import LocalDP, SiteLedger, steps_per_round, train_private
from fedops.core.training import (
    Data,
    TrainConfig,
    as_tensors,
    get_params,
    num_examples,
    set_params,
)
from fedops.tasks.base import Task
from fedops.tasks.monitor import SiteMonitor, split_groups, takes_round


class PolicyRefusal(Exception):
    """The site's own policy forbids this task; the message says which rule."""


def local_dp(config: Mapping[str, float], num_examples: int, train: TrainConfig) -> LocalDP | None:
    """The local DP-SGD the coordinator asks for in a fit task's config, if any.

    With ``dp_target_epsilon`` (``noise_multiplier=auto``) the site derives its own σ
    from its own data size: the smallest that keeps it within the target over
    ``dp_rounds`` rounds of its local steps.
    """
    if "dp_noise_multiplier" not in config and "dp_target_epsilon" not in config:
        return None
    delta = float(config.get("dp_delta", 1e-5))
    if "dp_target_epsilon" in config:
        q, steps = steps_per_round(num_examples, train)
        sigma = noise_for_target(
            float(config["dp_target_epsilon"]),
            delta,
            q,
            steps * int(config.get("dp_rounds", 1)),
        )
    else:
        sigma = float(config["dp_noise_multiplier"])
    return LocalDP(
        noise_multiplier=sigma, max_grad_norm=float(config["dp_max_grad_norm"]), delta=delta
    )


def initial_params(task: Task, seed: int) -> Params:
    """A freshly built model's parameters, seeded, without touching global RNG state."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return get_params(task.build_model())


def shuffle_seed(run_seed: int, server_round: int, site: int) -> int:
    """A 63-bit seed that differs per (run seed, round, site) and is reproducible."""
    return int(
        np.random.SeedSequence([run_seed, server_round, site]).generate_state(2, np.uint64)[0] >> 1
    )


class Site:
    """A task bound to one site's train/test split.

    Args:
        task: the task (built-in or user).
        site: this site's index in ``[0, num_sites)``.
        num_sites: how many sites the data is split across.
        train_config: local hyperparameters (the coordinator may add
            ``proximal_mu`` and ``seed`` per round).
        data: the site's (train, test), when the caller already has them
            (a simulation slicing one array); otherwise ``task.load_data``.
        model: a model to train in (sites of one simulation share one, since
            parameters are loaded before every use); otherwise a new one.
        max_epsilon: site policy: train only with local DP-SGD, and only while this
            site's own record-level ε stays at most this (``--max-epsilon``).
    """

    def __init__(
        self,
        task: Task,
        *,
        site: int,
        num_sites: int,
        train_config: TrainConfig,
        data: tuple[Data, Data] | None = None,
        model: nn.Module | None = None,
        max_epsilon: float | None = None,
    ) -> None:
        self.task = task
        self.max_epsilon = max_epsilon
        self.ledger: SiteLedger | None = None
        self._dp_key: tuple[tuple[str, float], ...] | None = None
        self._dp: LocalDP | None = None
        self.site = site
        self.num_sites = num_sites
        self.train_config = train_config
        # a task whose load_data takes the round is asked again each round
        self.round_aware = data is None and takes_round(task.load_data)
        self._data_round = 0
        self._load(data)
        self.monitor = SiteMonitor(self.train_data, task.sensitive_groups)
        self.model = model if model is not None else task.build_model()

    def _load(self, data: tuple[Data, Data] | None = None) -> None:
        if data is None:
            args = (self.site, self.num_sites)
            data = (
                self.task.load_data(*args, self._data_round)
                if self.round_aware
                else (self.task.load_data(*args))
            )
        train, test = data
        test, self.test_groups = split_groups(test)
        self.train_data = as_tensors(train)
        self.test_data = as_tensors(test)

    def at_round(self, server_round: int) -> None:
        """Load this round's data, when the task's data changes with the round."""
        if self.round_aware and server_round != self._data_round:
            self._data_round = server_round
            self._load()

    @property
    def num_train_examples(self) -> int:
        return num_examples(self.train_data)

    def initial_params(self) -> Params:
        """A freshly built model: never the model this site trains in (its update would leak)."""
        return get_params(self.task.build_model())

    def fit(
        self, params: Params, server_round: int, config: Mapping[str, float]
    ) -> tuple[Params, int, dict[str, float]]:
        """Train from ``params``; return (new params, examples used, metrics)."""
        self.at_round(server_round)
        cfg = replace(
            self.train_config,
            epochs=int(config.get("epochs", self.train_config.epochs)),
            proximal_mu=float(config.get("proximal_mu", self.train_config.proximal_mu)),
            seed=shuffle_seed(int(config.get("seed", 0)), server_round, self.site),
        )
        dp = self._local_dp(config, cfg)
        self._check_policy(dp, cfg)
        set_params(self.model, params)
        if dp is not None:
            if self.task.train is not None:
                raise PolicyRefusal(
                    "local DP trains with fedops' DP-SGD loop, not the task's train()"
                )
            metrics = train_private(self.model, self.train_data, cfg, dp)
            if self.ledger is None:
                self.ledger = SiteLedger(dp.delta)
            metrics["local_epsilon"] = self.ledger.spend(dp, self.num_train_examples, cfg)
        else:
            run = self.task.train or training.train
            metrics = run(self.model, self.train_data, cfg)
        return (
            get_params(self.model),
            self.num_train_examples,
            {k: float(v) for k, v in metrics.items()},
        )

    def _local_dp(self, config: Mapping[str, float], cfg: TrainConfig) -> LocalDP | None:
        key = tuple(sorted((k, v) for k, v in config.items() if k.startswith("dp_")))
        if key != self._dp_key:  # derive σ once per setting, not every round
            self._dp_key, self._dp = key, local_dp(config, self.num_train_examples, cfg)
        return self._dp

    def _check_policy(self, dp: LocalDP | None, cfg: TrainConfig) -> None:
        if self.max_epsilon is None:
            return
        if dp is None:
            raise PolicyRefusal(
                f"this site trains only with local DP at ε <= {self.max_epsilon:g} "
                "(--max-epsilon); the task asks for none"
            )
        ledger = self.ledger or SiteLedger(dp.delta)
        after = ledger.epsilon_after(dp, self.num_train_examples, cfg)
        if after > self.max_epsilon:
            raise PolicyRefusal(
                f"training this round would raise this site's ε to {after:.3g}, above its "
                f"limit {self.max_epsilon:g} (--max-epsilon)"
            )

    def evaluate(
        self, params: Params, server_round: int | None = None
    ) -> tuple[int, dict[str, float]]:
        """Loss and accuracy of ``params`` on this site's test split (of that round)."""
        if server_round is not None:
            self.at_round(server_round)
        set_params(self.model, params)
        run = self.task.evaluate or training.evaluate
        metrics = run(self.model, self.test_data)
        return num_examples(self.test_data), {k: float(v) for k, v in metrics.items()}

    def report(self, params: Params, spec: MonitorSpec) -> SiteReport | None:
        """Drift of this round's training data against the first window, and fairness
        counts on the test split (None when the site has no data to report on)."""
        if self.num_train_examples == 0 or len(self.monitor.reference.y) == 0:
            return None
        set_params(self.model, params)
        test = self.monitor.test_window(self.test_data, self.test_groups)
        return self.monitor.report(self.model, spec, self.train_data, test)


def global_evaluator(task: Task) -> Callable[[Params], Mapping[str, float]] | None:
    """``params -> metrics`` on the task's held-out data, if it has any."""
    if task.load_server_data is None:
        return None
    data = as_tensors(task.load_server_data())
    model = task.build_model()
    run = task.evaluate or training.evaluate

    def evaluate_global(params: Params) -> Mapping[str, float]:
        set_params(model, params)
        return run(model, data)

    return evaluate_global
