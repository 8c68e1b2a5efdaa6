"""Which tasks a site answers at all, by its policy and its history in the run.

Checked before any work, so a refusal costs the site nothing: the initial
model only before the first round (it is then freshly built, never the model
the site trains in); under ``--require-secagg`` (or a distributed-DP noise
floor) no plain training; a site that hides its record count does not evaluate
unless it opts in (``--share-evaluation``); under ``--require-secagg``, or with
that opt-in, at most one evaluation per round with
rounds only forward (each one runs a model the coordinator chose over this
site's test rows, and its loss shows whether a row is there: a site that
protects its data answers that question once per round, not at will); and
every task only for the run the site registered for (its privacy charges, its
monitoring bins and its anchors of the coordinator's log are kept per run: a
task labelled with another run would start each afresh).
"""

from __future__ import annotations

from fedops.core.train_settings import TrainSettings
from fedops.tasks.fit_settings import PolicyRefusal, checked_round_config
from fedops.v1 import fedops_pb2 as pb
from fedops.wire.training import train_of


class TaskGuard:
    """``require_secagg``: ``--require-secagg`` (or a distributed-DP noise floor);
    ``private``: the site hides its record count (``--max-epsilon``,
    ``--dp-public-records``), and so evaluates only with ``share_evaluation``."""

    def __init__(
        self, *, require_secagg: bool, private: bool = False, share_evaluation: bool = False
    ) -> None:
        self.require_secagg = require_secagg
        self.private = private
        self.share_evaluation = share_evaluation
        self._working = False  # set by the first round's task: no initial model after it
        self._evaluated = 0  # the last round evaluated (one per round when protecting data)

    def refusal(self, task: pb.Task, run_id: str) -> str:
        """Why ``task`` is declined ("" when it may run); ``run_id``: the run registered for."""
        if task.run_id != run_id:  # every charge, binning and anchor is keyed by the run
            return (
                f"the task names run {task.run_id[:80]!r}, but this site registered for run "
                f"{run_id!r}"
            )
        if task.kind == pb.TASK_KIND_SEND_INITIAL:
            if self._working:
                return (
                    "the initial model is sent only before the first round (it would be "
                    "this site's trained model: refused)"
                )
            return ""
        self._working = True
        if self.require_secagg and task.kind == pb.TASK_KIND_FIT:
            return "this site only trains under secure aggregation (--require-secagg)"
        if task.kind == pb.TASK_KIND_EVALUATE and self.private and not self.share_evaluation:
            return (
                "this site hides its record count (--max-epsilon / --dp-public-records): its "
                "evaluation's example count and accuracy would show its test split's size "
                "(--share-evaluation to allow)"
            )
        if task.kind == pb.TASK_KIND_EVALUATE and (self.require_secagg or self.private):
            if task.round <= self._evaluated:
                flag = "--require-secagg" if self.require_secagg else "--max-epsilon"
                return (
                    f"round {task.round}: this site evaluates once per round, rounds only "
                    f"forward ({flag}: each evaluation runs a coordinator-chosen model "
                    "over its data)"
                )
            self._evaluated = task.round
        return ""


def run_training(task: pb.Task) -> TrainSettings:
    """The run's training settings a training task must carry (``Task.train``), else a
    refusal: a site has no training settings of its own to fall back on, and guessing
    would train differently from what the run's config records."""
    checked_round_config(task.config)  # before the download: μ, seed, no training keys
    train = train_of(task)
    if train is None:
        raise PolicyRefusal(
            "the task carries no training settings (Task.train, protocol fedops.v1.3): this "
            "site trains only with the run's, which the coordinator sends with every task"
        )
    return train
