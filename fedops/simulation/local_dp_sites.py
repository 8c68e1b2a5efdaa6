"""Simulated sites under local DP, trained together: each keeps its own policy and ledger.

The batched backend hands a fit round whose config asks for local DP
(``dp_noise_multiplier`` or ``dp_target_epsilon``) to :class:`LocalDPSites`, which
does for every site what :meth:`fedops.tasks.site.Site.fit` does for one, only with
the training of all accepted sites in one call
(:func:`fedops.core.privacy.stacked_dpsgd.train_private_many`):

- σ from the fit config (:func:`fedops.tasks.fit_settings.local_dp`: σ = auto derived
  from the site's own record count, cached per setting), the model checked once
  (:func:`fedops.core.privacy.local.model_refusal`), the site's bounds and its cap
  against its ledger (:func:`fedops.tasks.dp_policy.check_dp_round`); a site that
  declines answers ``declined: <reason>``, as a sequential site does;
- the round's mechanism is the one a site alone runs and accounts (the same q, steps,
  σ, C and expected batch size; Poisson sampling), with a fresh secret seed per site
  and round from the OS (never the run's seed);
- every site's ledger is a page of one :class:`~fedops.tasks.ledger_book.LedgerBook`
  (``RUN_DIR/site_ledgers/ledger_book.sqlite`` in a run), held from the checks to the
  charges; the round's charges are committed together, in one transaction, before any
  of its updates is an event (a book that cannot record them: every accepted site
  declines); the answer is the noised model, no metrics and an example count of 1.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fedops.core.params import Params, specs_of
from fedops.core.privacy.dp_batches import PrivateJob, private_job
from fedops.core.privacy.local import LocalDP, model_refusal
from fedops.core.privacy.stacked_dpsgd import train_private_many
from fedops.core.rounds import Event, ResultRejected
from fedops.core.schedule import VectorConfig
from fedops.core.training import TrainConfig
from fedops.simulation.sim_transport import fit_event
from fedops.simulation.spread import Spread
from fedops.tasks.dp_policy import check_dp_round
from fedops.tasks.fit_settings import DP_NUM_EXAMPLES, PolicyRefusal, local_dp
from fedops.tasks.ledger import Charge, LedgerError
from fedops.tasks.ledger_book import BookPage, LedgerBook


def asks_local_dp(config: Mapping[str, float]) -> bool:
    """Whether a fit config asks the sites for local DP-SGD (as a site reads it)."""
    return "dp_noise_multiplier" in config or "dp_target_epsilon" in config


@dataclass(frozen=True, slots=True)
class SiteFit:
    """One working site of a round: its node, index, rows and (straggler's) epochs."""

    node: str
    task_id: str
    client: int
    start: int
    stop: int
    epochs: int


class LocalDPSites:
    """Every simulated site's local-DP policy and ledger, for the batched backend.

    Args:
        model: the simulation's model (checked once for what local DP refuses).
        max_epsilon: each site's cap (``privacy.site_max_epsilon``); None: uncapped.
        max_delta: the δ a site accounts at, or the coordinator's if smaller.
        book: every site's ledger (default: in memory).
        seeds: each site's secret seed for a round (default: 63 bits of OS entropy).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        max_epsilon: float | None = None,
        max_delta: float = 1e-5,
        book: LedgerBook | None = None,
        seeds: Callable[[], int] | None = None,
    ) -> None:
        self.model = model
        self.max_epsilon = max_epsilon
        self.max_delta = max_delta
        self.book = book if book is not None else LedgerBook()
        self.seeds = seeds or (lambda: secrets.randbits(63))
        self._dp: dict[int, tuple[tuple[tuple[str, float], ...], LocalDP | None]] = {}
        self._refusal: str | None = None
        self.spread = Spread(1)
        self.models = [model]

    def train_in(self, spread: Spread, models: Sequence[nn.Module]) -> None:
        """Train a round's sites in ``spread``'s threads, thread ``w`` with ``models[w]``
        (the backend's own threads and per-thread model copies)."""
        self.spread, self.models = spread, list(models)

    def ledger(self, client: int) -> BookPage:
        return self.book.page(client)

    def fit(
        self,
        server_round: int,
        sites: Sequence[SiteFit],
        params: Params,
        config: Mapping[str, float],
        train: TrainConfig,
        data: tuple[torch.Tensor, torch.Tensor],
        max_chunk: int = 1024,
    ) -> list[Event]:
        """Every site's answer to this round's DP fit task (declines included)."""
        events: list[Event] = []
        accepted: list[tuple[SiteFit, PrivateJob, Charge]] = []
        with self.book.exclusive():  # every ledger from its check to its charge
            for site in sites:
                try:
                    accepted.append((site, *self._plan(server_round, site, config, train)))
                except PolicyRefusal as exc:
                    events.append(_declined(site, str(exc)))
            x, y = data
            cfg = VectorConfig(
                batch_size=train.batch_size,
                lr=train.lr,
                momentum=train.momentum,
                max_chunk=max_chunk,
            )
            jobs = [job for _, job, _ in accepted]
            trained = self.spread.map(  # each job has its own noise seed: split-independent
                lambda w, part: train_private_many(
                    self.models[w], params, x, y, [jobs[i] for i in part], cfg
                ),
                [job.steps * job.divisor for job in jobs],
            )
            try:  # committed before any update is an event; unrecorded, none is sent
                self.book.append_all([(site.client, charge) for site, _, charge in accepted])
            except LedgerError as exc:
                return events + [_declined(site, str(exc)) for site, _, _ in accepted]
            expected = specs_of(params)
            for (site, _, _), new in zip(accepted, trained, strict=True):
                node, task_id = site.node, site.task_id
                events.append(fit_event(node, task_id, expected, new, DP_NUM_EXAMPLES, {}))
        return events

    def _plan(
        self,
        server_round: int,
        site: SiteFit,
        config: Mapping[str, float],
        train: TrainConfig,
    ) -> tuple[PrivateJob, Charge]:
        """The site's job and the charge it will record, or :class:`PolicyRefusal`."""
        n = site.stop - site.start
        cfg = TrainConfig(
            epochs=site.epochs, batch_size=train.batch_size, lr=train.lr, momentum=train.momentum
        )
        dp = self._local_dp(site.client, config, n, cfg)
        if dp is None:
            raise PolicyRefusal("the task asks for no local DP")
        if self._refusal is None:
            self._refusal = model_refusal(self.model)
        if self._refusal:
            raise PolicyRefusal(self._refusal)
        ledger = self.ledger(site.client)  # the caller holds the book
        event, steps = check_dp_round(ledger, dp, n, cfg, max_epsilon=self.max_epsilon)
        job = private_job(site.start, site.stop, dp, cfg, seed=self.seeds())
        return job, Charge("", server_round, event, steps)

    def _local_dp(
        self, client: int, config: Mapping[str, float], n: int, cfg: TrainConfig
    ) -> LocalDP | None:
        """The site's σ (derived once per setting, as :meth:`Site._local_dp` does)."""
        key = tuple(sorted((k, v) for k, v in config.items() if k.startswith("dp_")))
        key += (("epochs", float(cfg.epochs)), ("n", float(n)))
        cached = self._dp.get(client)
        if cached is None or cached[0] != key:
            cached = (key, local_dp(config, n, cfg, max_delta=self.max_delta))
            self._dp[client] = cached
        return cached[1]


def _declined(site: SiteFit, reason: str) -> Event:
    return ResultRejected(node_id=site.node, task_id=site.task_id, reason=f"declined: {reason}")
