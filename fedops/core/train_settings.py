"""The run's local-training settings, as one round's fit tasks carry them.

The run owns how sites train (epochs, batch size, learning rate, optimizer,
momentum), not each site: the coordinator's config sets them once, every fit task
carries this round's values, and a simulated site gets the very same values from
the same driver. Kept free of torch and of any check: what arrives over the wire
is hostile until :func:`fedops.tasks.fit_settings.checked_train` has passed it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

#: every site's bounds on what a run may ask, caps or not (the run's config is refused
#: above them first): more epochs train for ever (1e18 did), a larger batch is no batch a
#: site holds, a larger rate no sane step (a crafted 1e300 trains to inf)
MAX_EPOCHS = 100
MAX_BATCH_SIZE = 1_000_000
MAX_LR = 100.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainSettings:
    """One round's local training, the same for every site of the round."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.0


class HasTrainSettings(Protocol):
    """Any settings object that holds the five training settings (the run's config section,
    a site's TrainConfig)."""

    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def optimizer(self) -> str: ...
    @property
    def momentum(self) -> float: ...


def settings_of(c: HasTrainSettings) -> TrainSettings:
    """The five settings a fit task carries, read off ``c``."""
    return TrainSettings(
        epochs=c.epochs,
        batch_size=c.batch_size,
        lr=c.lr,
        optimizer=c.optimizer,
        momentum=c.momentum,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainPlan:
    """The run's training settings and their per-round schedule.

    ``lr_decay``: round t trains at ``lr * lr_decay ** (t - 1)`` (1: a constant rate),
    the step decay of a schedule written once in the run's config, so that every site
    and every simulated client follow the same rates without any site's say.
    """

    base: TrainSettings
    lr_decay: float = 1.0

    def at(self, server_round: int) -> TrainSettings:
        """The settings of round ``server_round`` (rounds count from 1)."""
        if self.lr_decay == 1.0:
            return self.base
        return replace(self.base, lr=self.base.lr * self.lr_decay ** (server_round - 1))
