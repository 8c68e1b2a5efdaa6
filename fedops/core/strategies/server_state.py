"""What the server-optimizer strategies share: the pseudo-gradient and their checkpointable state.

A server optimizer (FedAvgM, FedAdagrad, FedAdam, FedYogi) treats the round's
example-weighted mean update as a gradient, ``Δ = mean(client models) - model``,
and keeps buffers across rounds. Those buffers are its *state*: a flat mapping
of names to numpy arrays, so the run store can write it as tensors (safetensors,
no pickle) beside the model:

- ``m.<param>``, ``v.<param>``: one float64 buffer per floating-point tensor of
  the model (which prefixes a strategy keeps is its own: FedAvgM only ``m``);
- ``step``: a 0-d integer array, how many updates the optimizer has applied
  (rounds without results, or aborted ones, apply none).

Integer and boolean tensors (counters such as ``num_batches_tracked``) are not
optimized: they take the example-weighted mean, rounded, as under FedAvg, and
have no buffers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from fedops.core.params import Params
from fedops.core.results import EvaluateResult, FitResult, weighted_metrics

#: the state entry holding the number of updates applied
STEP = "step"

#: buffers by kind (``"m"``, ``"v"``), each by parameter name, float64
Buffers = dict[str, dict[str, np.ndarray]]


def pseudo_gradient(
    current: Mapping[str, np.ndarray], results: Sequence[FitResult]
) -> tuple[dict[str, np.ndarray], Params]:
    """``(Δ, counters)``: the example-weighted mean of the results minus ``current``, in
    float64, for every floating-point tensor of ``current``; and the mean itself (rounded,
    in the tensor's dtype) for every other tensor. ``results`` must not be empty."""
    total = float(sum(r.num_examples for r in results))
    if not total > 0:
        raise ValueError(f"the results' num_examples must sum to a positive number, got {total}")
    deltas: dict[str, np.ndarray] = {}
    counters: Params = {}
    for name, ref in current.items():
        acc = np.zeros(ref.shape, dtype=np.float64)
        for r in results:
            tensor = r.params.get(name)
            if tensor is None:
                raise ValueError(f"result of {r.node_id!r} has no tensor {name!r}")
            if tensor.shape != ref.shape:
                raise ValueError(
                    f"result of {r.node_id!r}: tensor {name!r} has shape {tensor.shape}, "
                    f"the model has {ref.shape}"
                )
            acc += np.asarray(tensor, dtype=np.float64) * (r.num_examples / total)
        if ref.dtype.kind == "f":
            deltas[name] = acc - np.asarray(ref, dtype=np.float64)
        else:
            counters[name] = np.rint(acc).astype(ref.dtype)
    return deltas, counters


def apply_step(
    current: Mapping[str, np.ndarray], steps: Mapping[str, np.ndarray], counters: Params
) -> Params:
    """The next model, in ``current``'s order and dtypes: ``current + step`` for the float
    tensors, the counters' mean for the others."""
    out: Params = {}
    # summed in float64; a value past the dtype's range becomes Inf in the cast, which
    # the round driver refuses to commit (RoundDriver._aggregate), so numpy need not warn
    with np.errstate(over="ignore"):
        for name, ref in current.items():
            if name in steps:
                out[name] = (np.asarray(ref, dtype=np.float64) + steps[name]).astype(ref.dtype)
            else:
                out[name] = counters[name]
    return out


def check_buffers_fit(buffers: Buffers, deltas: Mapping[str, np.ndarray], who: str) -> None:
    """Refuse buffers (e.g. a loaded state) that do not describe the model's float tensors."""
    for kind, named in buffers.items():
        if set(named) != set(deltas):
            extra, missing = sorted(set(named) - set(deltas)), sorted(set(deltas) - set(named))
            raise ValueError(
                f"{who} state does not fit the model: buffers {kind}.* "
                f"for tensors the model lacks {extra}, missing for {missing}"
            )
        for name, buf in named.items():
            if buf.shape != deltas[name].shape:
                raise ValueError(
                    f"{who} state does not fit the model: {kind}.{name} has shape "
                    f"{buf.shape}, the tensor has {deltas[name].shape}"
                )


def pack_state(buffers: Buffers, step: int) -> dict[str, np.ndarray]:
    """The flat state: ``<kind>.<param>`` copies of every buffer, and ``step``."""
    state = {
        f"{kind}.{name}": np.array(buf, dtype=np.float64, copy=True)
        for kind, named in buffers.items()
        for name, buf in named.items()
    }
    state[STEP] = np.array(step, dtype=np.int64)
    return state


def unpack_state(
    state: Mapping[str, np.ndarray], kinds: Sequence[str], who: str
) -> tuple[Buffers, int]:
    """Buffers and step count of a flat ``state``, checked whole before anything is used.

    Raises :class:`ValueError`, naming the entry, for a missing or malformed ``step``,
    a name that is not ``step`` or ``<kind>.<param>`` with one of ``kinds``, a buffer
    that is not a finite floating-point array, a negative second moment, or buffers
    whose kinds disagree on the parameter names or shapes. An empty ``state`` is a
    fresh optimizer.
    """
    if not state:
        return {kind: {} for kind in kinds}, 0
    expected = " or ".join(f"{kind}.<param>" for kind in kinds)
    if STEP not in state:
        raise ValueError(f"{who} state has no {STEP!r} entry")
    raw_step = np.asarray(state[STEP])
    if raw_step.shape != () or raw_step.dtype.kind not in "iu" or int(raw_step) < 0:
        raise ValueError(
            f"{who} state: {STEP!r} must be a 0-d integer array >= 0, got "
            f"{raw_step.dtype} of shape {raw_step.shape}"
        )
    buffers: Buffers = {kind: {} for kind in kinds}
    for key, value in state.items():
        if key == STEP:
            continue
        kind, dot, name = key.partition(".")
        if not dot or not name or kind not in buffers:
            raise ValueError(f"{who} state has an unknown entry {key!r}: expected {expected}")
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            raise ValueError(f"{who} state: {key!r} must be floating point, got {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{who} state: {key!r} has non-finite values")
        if kind == "v" and np.any(arr < 0):
            raise ValueError(f"{who} state: {key!r} is a second moment and must be >= 0")
        buffers[kind][name] = np.array(arr, dtype=np.float64, copy=True)
    first, *others = kinds
    for kind in others:
        if set(buffers[kind]) != set(buffers[first]):
            odd = sorted(set(buffers[kind]) ^ set(buffers[first]))
            raise ValueError(f"{who} state: {first}.* and {kind}.* differ on tensors {odd}")
        for name, buf in buffers[kind].items():
            if buf.shape != buffers[first][name].shape:
                raise ValueError(
                    f"{who} state: {kind}.{name} has shape {buf.shape}, "
                    f"{first}.{name} has {buffers[first][name].shape}"
                )
    return buffers, int(raw_step)


@dataclass(slots=True, kw_only=True)
class ServerOptimizer:
    """The part every server optimizer shares: a server learning rate, the buffers it keeps
    between rounds (its checkpointable state) and the number of updates applied.

    Subclasses name their buffer kinds (``KINDS``) and compute one update in
    ``aggregate_fit``, with :meth:`_previous` for the buffers to update and
    :meth:`_advance` to keep the new ones. Not frozen: the buffers change every
    round; two instances compare equal when their hyperparameters are equal.
    """

    KINDS: ClassVar[tuple[str, ...]] = ()
    name: str = "server_optimizer"
    server_lr: float = 1.0
    _buffers: Buffers = field(default_factory=dict, init=False, repr=False, compare=False)
    _step: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.server_lr) and self.server_lr > 0):
            raise ValueError(f"server_lr must be a number > 0, got {self.server_lr}")

    def fit_config(self, server_round: int) -> dict[str, float]:
        return {}

    def aggregate_evaluate(
        self, server_round: int, results: Sequence[EvaluateResult]
    ) -> dict[str, float]:
        return weighted_metrics(results)

    def aggregate_fit(
        self, server_round: int, current: Params, results: Sequence[FitResult]
    ) -> Params:
        """Step the model along the round's pseudo-gradient (see :meth:`_update`); a round
        without results changes neither the model nor the buffers."""
        if not results:
            return current
        deltas, counters = pseudo_gradient(current, results)
        steps, buffers = self._update(deltas, self._previous(deltas))
        out = apply_step(current, steps, counters)
        self._advance(buffers)
        return out

    def _update(
        self, deltas: Mapping[str, np.ndarray], previous: Buffers | None
    ) -> tuple[dict[str, np.ndarray], Buffers]:
        """The step to add to each float tensor, and the new buffers, from the round's
        ``deltas`` and the ``previous`` buffers (None before the first update)."""
        raise NotImplementedError(f"{type(self).__name__} does not define its update")

    def _previous(self, deltas: Mapping[str, np.ndarray]) -> Buffers | None:
        """The buffers this round updates; None before the first update. Buffers that do not
        fit the model (e.g. a loaded state for another model) raise before any change."""
        if self._step == 0 and not any(self._buffers.values()):
            return None
        check_buffers_fit(self._buffers, deltas, self.name)
        return self._buffers

    def _advance(self, buffers: Buffers) -> None:
        self._buffers, self._step = buffers, self._step + 1

    def state(self) -> dict[str, np.ndarray]:
        """The buffers as ``<kind>.<param>`` (float64) and ``step`` (0-d int64): copies,
        safe to keep or write out."""
        return pack_state(self._buffers, self._step)

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from ``state`` (what :meth:`state` returned; ``{}``: start afresh).

        Raises :class:`ValueError`, changing nothing, for an unknown or missing entry
        (another optimizer's kinds included), mismatched shapes between kinds, a
        non-finite value or a negative second moment. The buffers are checked against
        the model's tensors at the next ``aggregate_fit``, before anything changes.
        """
        self._buffers, self._step = unpack_state(state, self.KINDS, self.name)
