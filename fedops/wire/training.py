"""The run's training settings on the wire (``Task.train``), both ways.

Decoding only copies values: a site checks them as hostile input afterwards
(:func:`fedops.tasks.fit_settings.checked_train`), where its bounds and caps live.
"""

from __future__ import annotations

from fedops.core.train_settings import TrainSettings
from fedops.v1 import fedops_pb2 as pb


def train_to_proto(train: TrainSettings) -> pb.TrainSettings:
    return pb.TrainSettings(
        epochs=train.epochs,
        batch_size=train.batch_size,
        lr=train.lr,
        optimizer=train.optimizer,
        momentum=train.momentum,
    )


def train_of(task: pb.Task) -> TrainSettings | None:
    """The settings a task carries, or None when it carries none (an older coordinator,
    or a task that does not train)."""
    if not task.HasField("train"):
        return None
    return train_from_proto(task.train)


def train_from_proto(t: pb.TrainSettings) -> TrainSettings:
    """The values as sent (a run offer's, a task's), unchecked."""
    return TrainSettings(
        epochs=int(t.epochs),
        batch_size=int(t.batch_size),
        lr=float(t.lr),
        optimizer=str(t.optimizer),
        momentum=float(t.momentum),
    )


def train_record(task: pb.Task) -> dict[str, object] | None:
    """A task's training settings as the site's journal and audit log record them."""
    train = train_of(task)
    if train is None:
        return None
    return {
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "lr": train.lr,
        "optimizer": train.optimizer,
        "momentum": train.momentum,
    }
