"""One site's side of a task: its data, its model, and what it does per instruction.

The deployed agent and the in-memory simulation both drive a :class:`Site`,
so local training is the same code in both. Training shuffles with a seed
derived from (run seed, round, site), never from global random state; local
DP-SGD alone draws from OS entropy (the coordinator knows that seed), and a
site's own policy (its ε cap, its δ, its persisted ledger) is enforced here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedops.core import training
from fedops.core.monitoring.profile import MonitorSpec, ReportLimits, SiteReport
from fedops.core.params import Params
from fedops.core.privacy.accountant import check_delta
from fedops.core.privacy.local import (
    LocalDP,
    changed_state,
    model_refusal,
    round_event,
    train_private,
    untrained_state,
)
from fedops.core.train_settings import TrainSettings
from fedops.core.training import (
    Data,
    TrainConfig,
    as_tensors,
    get_params,
    num_examples,
    set_params,
)
from fedops.tasks.contract import Task
from fedops.tasks.dp_policy import check_dp_round
from fedops.tasks.fit_settings import (
    DEFAULT_DELTA,
    DP_NUM_EXAMPLES,
    PolicyRefusal,
    TrainCaps,
    accounting_delta,
    capped_training,
    checked_round_config,
    local_dp,
)
from fedops.tasks.ledger import Charge, LedgerError, SiteLedger, Spent
from fedops.tasks.monitor import SiteMonitor, split_groups, takes_round

__all__ = [
    "DEFAULT_DELTA",
    "DP_NUM_EXAMPLES",
    "PolicyRefusal",
    "Site",
    "accounting_delta",
    "global_evaluator",
    "initial_params",
    "local_dp",
    "shuffle_seed",
]


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
        train_config: local hyperparameters when a fit brings none (a caller driving the
            site itself); a run's fit tasks bring the run's (:meth:`training`), and the
            coordinator adds ``proximal_mu`` and ``seed`` per round.
        train_caps: site policy: the largest epochs, batch size and learning rate this
            site trains with (``--max-epochs`` ...); a task above one is refused.
        data: the site's (train, test), when the caller already has them
            (a simulation slicing one array); otherwise ``task.load_data``.
        model: a model to train in (sites of one simulation share one, since
            parameters are loaded before every use); otherwise a new one.
        max_epsilon: site policy: train only with local DP-SGD, and only while this
            site's own record-level ε stays at most this (``--max-epsilon``).
        max_delta: site policy: the largest δ this site accounts at (``--dp-delta``);
            a coordinator may ask for a smaller one.
        ledger_dir: where the site's privacy ledger is kept (the agent's run
            directory, a simulation's run directory), so its ε survives restarts;
            None: in memory.
        public_records: site policy: the record count local DP is planned and
            accounted with (``--dp-public-records``), in place of the true n. DP-SGD
            then samples at q = batch/that and takes epochs·that/batch steps, so the
            steps, σ=auto, ε and every accept or decline are functions of public
            values, and n shows only inside the noised gradient sums. None: n is
            public (it decides q and the steps).
        report_limits: site policy: the smallest bin count and the most bins a
            monitoring report may show (``--monitoring-min-count``/``-max-cells``).

    ``on_spend``, when set (the agent sets it to its audit log), is told what each
    DP round cost, after the ledger has it and before the update leaves.
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
        max_run_epsilon: float | None = None,
        max_delta: float = DEFAULT_DELTA,
        ledger_dir: Path | None = None,
        public_records: int | None = None,
        report_limits: ReportLimits | None = None,
        train_caps: TrainCaps | None = None,
    ) -> None:
        check_delta(max_delta)
        if public_records is not None and public_records < 1:
            raise ValueError(f"public_records must be at least 1, got {public_records}")
        self.task = task
        self.max_epsilon = max_epsilon
        self.max_run_epsilon = max_run_epsilon
        self.max_delta = max_delta
        self.public_records = public_records
        self.report_limits = report_limits if report_limits is not None else ReportLimits()
        self._outputs: int | None = None  # the model's output width, once asked
        self.ledger = SiteLedger(ledger_dir)
        self.on_spend: Callable[[Spent], None] | None = None
        self._model_refusal: str | None = None  # checked once: the model's layers are fixed
        self._dp_key: tuple[tuple[str, float], ...] | None = None
        self._dp: LocalDP | None = None
        self.site = site
        self.num_sites = num_sites
        self.train_config = train_config
        self.train_caps = train_caps if train_caps is not None else TrainCaps()
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

    @property
    def dp_records(self) -> int:
        """The record count local DP plans and accounts with: the public one if set."""
        return self.public_records or self.num_train_examples

    @property
    def hides_count(self) -> bool:
        """Whether this site keeps its record count to itself: it caps its ε, or it plans
        local DP with a public count (then n - 1 and n must look alike)."""
        capped = self.max_epsilon is not None or self.max_run_epsilon is not None
        return capped or self.public_records is not None

    def initial_params(self) -> Params:
        """A freshly built model: never the model this site trains in (its update would leak)."""
        return get_params(self.task.build_model())

    def fit(
        self,
        params: Params,
        server_round: int,
        config: Mapping[str, float],
        *,
        run_id: str = "",
        train: TrainSettings | None = None,
    ) -> tuple[Params, int, dict[str, float]]:
        """Train from ``params`` with the run's settings ``train`` (checked by
        :meth:`training`); return (new params, examples used, metrics).

        Under local DP the round is in the site's ledger, committed, before this
        returns (``run_id`` labels it there); a ledger that cannot record it raises
        :class:`PolicyRefusal` and nothing is returned. The answer then carries
        nothing data-dependent beside the noised model: no metrics (the train loss is
        exact; ε depends on n through the sample rate) and :data:`DP_NUM_EXAMPLES`
        examples, so FedAvg weights every DP site equally. What the round cost stays
        at the site: its ledger, and its audit log through ``on_spend``.
        """
        mu, seed = checked_round_config(config)
        self.at_round(server_round)
        cfg = replace(
            self.training(train),
            proximal_mu=mu,
            seed=shuffle_seed(seed, server_round, self.site),
        )
        dp = self._local_dp(config, cfg)
        if dp is not None:
            with self.ledger.exclusive():  # the check and the charge, with nothing between
                self._check_policy(dp, cfg, run_id)
                set_params(self.model, params)
                self._fit_private(dp, cfg, run_id, server_round)
            return get_params(self.model), DP_NUM_EXAMPLES, {}
        self._check_policy(dp, cfg)
        set_params(self.model, params)
        run = self.task.train or training.train
        metrics = run(self.model, self.train_data, cfg)
        return (
            get_params(self.model),
            self.num_train_examples,
            {k: float(v) for k, v in metrics.items()},
        )

    def training(self, train: TrainSettings | None) -> TrainConfig:
        """The local training of a fit task: the run's ``train`` once it passes this
        site's bounds and caps (else :class:`PolicyRefusal`, naming the setting), or the
        site's own ``train_config`` for a caller that sends none."""
        return capped_training(self.train_config, train, self.train_caps)

    def _fit_private(self, dp: LocalDP, cfg: TrainConfig, run_id: str, server_round: int) -> None:
        """DP-SGD, then the round charged to the ledger before anything leaves."""
        untrained = untrained_state(self.model)
        # its exact loss stays here
        train_private(self.model, self.train_data, cfg, dp, records=self.dp_records)
        event, steps = round_event(dp, self.dp_records, cfg)
        changed = changed_state(self.model, untrained)
        if changed:  # un-noised state that moved: nothing is sent, so nothing is charged
            self._discard()
            raise PolicyRefusal(
                f"local DP: training changed {changed}, which DP-SGD does not noise; "
                "the update is not sent"
            )
        try:
            spent = self.ledger.record(Charge(run_id, server_round, event, steps), dp.delta)
        except LedgerError as exc:
            self._discard()
            raise PolicyRefusal(str(exc)) from exc
        if self.on_spend is not None:
            self.on_spend(spent)

    def _discard(self) -> None:
        """A trained model that will not be sent must not stay in the site's model either."""
        set_params(self.model, self.initial_params())

    def _local_dp(self, config: Mapping[str, float], cfg: TrainConfig) -> LocalDP | None:
        key = tuple(sorted((k, v) for k, v in config.items() if k.startswith("dp_")))
        # auto σ spreads the target over this round's steps: epochs and data size count too
        key += (("epochs", float(cfg.epochs)), ("n", float(self.dp_records)))
        if key != self._dp_key:  # derive σ once per setting, not every round
            self._dp = local_dp(config, self.dp_records, cfg, max_delta=self.max_delta)
            self._dp_key = key
        return self._dp

    def _check_policy(self, dp: LocalDP | None, cfg: TrainConfig, run_id: str = "") -> None:
        """Before any training: the site's cap against its ledger plus this round."""
        if dp is None:
            if self.max_epsilon is not None:
                raise PolicyRefusal(
                    f"this site trains only with local DP at ε <= {self.max_epsilon:g} "
                    "(--max-epsilon); the task asks for none"
                )
            if self.max_run_epsilon is not None:
                raise PolicyRefusal(
                    f"this site trains only with local DP at ε <= {self.max_run_epsilon:g} "
                    "per run (--max-run-epsilon); the task asks for none"
                )
            if self.public_records is not None:
                raise PolicyRefusal(
                    "this site trains only with local DP (--dp-public-records: its answer "
                    "to a plain fit would carry its record count); the task asks for none"
                )
            return
        if self.task.train is not None:
            raise PolicyRefusal("local DP trains with fedops' DP-SGD loop, not the task's train()")
        if self._model_refusal is None:
            self._model_refusal = model_refusal(self.model)
        if self._model_refusal:
            raise PolicyRefusal(self._model_refusal)
        check_dp_round(
            self.ledger,
            dp,
            self.dp_records,
            cfg,
            max_epsilon=self.max_epsilon,
            max_run_epsilon=self.max_run_epsilon,
            run_id=run_id,
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
        return self.monitor.report(self.model, spec, self.train_data, test, self.report_limits)

    def check_report(self, spec: MonitorSpec) -> None:
        """Refuse (:class:`PolicyRefusal`) a monitoring request past this site's cap,
        before the model is evaluated or a row counted."""
        try:
            self.report_limits.check(spec, self._num_outputs())
        except ValueError as exc:
            raise PolicyRefusal(str(exc)) from exc

    def _num_outputs(self) -> int:
        """The model's output width (output monitoring bins each output), from one row of
        a fresh model (the site's own may be in training mode), worked out once."""
        if self._outputs is None:
            x = self.monitor.reference.x
            self._outputs = 1
            if len(x):
                with torch.no_grad():
                    out = self.task.build_model()(torch.from_numpy(x[:1]))
                self._outputs = int(out.shape[-1]) if out.ndim >= 2 else 1
        return self._outputs


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
