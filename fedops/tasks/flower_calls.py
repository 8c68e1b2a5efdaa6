"""How fedops talks to a Flower ``ClientApp``: through the app itself, in its own protocol.

Flower has two ways into a ClientApp, and a site uses the one the app was written for,
so the app's mods and lifespan run as they would under a SuperNode:

- the Message API (``@app.train()`` / ``@app.evaluate()``): a ``train`` or ``evaluate``
  message whose ``RecordDict`` holds the model as the ``ArrayRecord`` ``"arrays"`` and
  the round's settings as the ``ConfigRecord`` ``"config"``, as Flower's own strategies
  send them; the reply's ``ArrayRecord`` is the trained model and its ``MetricRecord``
  carries ``num-examples``.
- a ``client_fn`` app (``NumPyClient``): Flower's legacy records (``fitins.*``,
  ``get_parameters``), built and read with flwr's own converters.

Parameters cross as fedops' named arrays. The names are fedops' (the app's
``ArrayRecord`` keys, or ``p0``, ``p1``, ... for a NumPyClient's list); an answer must
give back the arrays it was sent, same shapes, and is cast to their dtypes.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedops.core.params import Params
from fedops.tasks.flower_app import FlowerAppError

__all__ = ["LegacyCalls", "MessageCalls", "ask", "from_arrays", "metrics_of", "named"]

#: Flower's names for the metrics fedops reports as ``loss`` and ``accuracy``
_ALIASES = {
    "accuracy": ("eval_acc", "eval_accuracy", "acc", "test_accuracy", "val_accuracy"),
    "loss": ("eval_loss", "test_loss", "val_loss"),
}


def named(arrays: Sequence[np.ndarray]) -> Params:
    """A NumPyClient's ordered list as named arrays: ``p0``, ``p1``, ..."""
    return {f"p{i}": np.asarray(a) for i, a in enumerate(arrays)}


def from_arrays(sent: Params, got: Mapping[str, Any] | Sequence[Any], where: str) -> Params:
    """The app's answer as the arrays it was sent: by name when the names agree, else by
    position (an app that rebuilt its record from a list); shapes must match, dtypes are
    cast to the sent ones (a float64 scikit-learn model given float32 stays float32)."""
    if isinstance(got, Mapping) and set(got) == set(sent):
        values = [got[name] for name in sent]
    else:
        values = list(got.values()) if isinstance(got, Mapping) else list(got)
        if len(values) != len(sent):
            raise FlowerAppError(
                f"{where}: the Flower app answered with {len(values)} arrays, fedops sent "
                f"{len(sent)} ({', '.join(sent)}): it must return the model it was given"
            )
    out: Params = {}
    for (name, first), value in zip(sent.items(), values, strict=True):
        array = np.asarray(value)
        if array.shape != first.shape:
            raise FlowerAppError(
                f"{where}: array {name!r} came back with shape {array.shape}, sent as {first.shape}"
            )
        out[name] = array.astype(first.dtype, copy=False)
    return out


def metrics_of(values: Mapping[str, Any], *, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """The app's numeric metrics as fedops' floats (lists and strings dropped), with
    ``loss`` and ``accuracy`` added under fedops' names when the app used Flower's."""
    out = {
        str(k): float(v)
        for k, v in values.items()
        if k not in skip and isinstance(v, int | float) and math.isfinite(float(v))
    }
    for name, aliases in _ALIASES.items():
        found = next((out[a] for a in aliases if a in out), None)
        if name not in out and found is not None:
            out[name] = found
    return out


class MessageCalls:
    """A Message API ClientApp, driven by ``train`` and ``evaluate`` messages."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def initial(self, context: Any) -> Params:
        raise FlowerAppError(
            "a Message API ClientApp has no initial model of its own (in Flower its ServerApp "
            "supplies initial_arrays): name a callable that builds it with flower_initial="
            "module:attr (fedops simulate) / --flower-initial module:attr (fedops client), "
            "or start the coordinator with a --task whose model is the app's"
        )

    def _send(self, kind: str, context: Any, params: Params, config: Mapping[str, Any]) -> Any:
        from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

        arrays = ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in params.items()})
        content = RecordDict({"arrays": arrays, "config": ConfigRecord(dict(config))})
        return ask(self.app, kind, context, content, config)

    def train(
        self, context: Any, params: Params, config: Mapping[str, Any]
    ) -> tuple[Params, int, dict[str, float]]:
        content = self._send("train", context, params, config)
        records = content.array_records
        if not records:
            raise FlowerAppError("the Flower app's train reply holds no ArrayRecord")
        arrays = records.get("arrays") or next(iter(records.values()))
        new = from_arrays(params, {k: v.numpy() for k, v in arrays.items()}, "train")
        metrics = _metric_record(content)
        return new, _count(metrics, "train"), metrics_of(metrics, skip=("num-examples",))

    def evaluate(
        self, context: Any, params: Params, config: Mapping[str, Any]
    ) -> tuple[int, dict[str, float]]:
        metrics = _metric_record(self._send("evaluate", context, params, config))
        return _count(metrics, "evaluate"), metrics_of(metrics, skip=("num-examples",))


def ask(app: Any, kind: str, context: Any, content: Any, config: Mapping[str, Any]) -> Any:
    """The content of the app's reply to a ``kind`` message holding ``content``.

    The message is addressed as a SuperLink would address it, its metadata written out:
    Flower's instruction constructor reads the identity of a Flower runtime process
    (``TaskIdentity``), which a fedops site is not."""
    from flwr.app import DEFAULT_TTL, Message, Metadata

    metadata = Metadata(
        run_id=context.run_id,
        message_id=uuid.uuid4().hex,
        src_node_id=0,  # the coordinator
        dst_node_id=context.node_id,
        reply_to_message_id="",
        group_id=str(config.get("server-round", "")),
        created_at=time.time(),
        ttl=DEFAULT_TTL,
        message_type=kind,
    )
    message = Message(content=content, metadata=metadata)  # type: ignore[call-overload]
    reply = app(message, context)
    if reply.has_error():
        raise FlowerAppError(f"the Flower app's {kind} failed: {reply.error.reason}")
    return reply.content


def _metric_record(content: Any) -> dict[str, Any]:
    records = content.metric_records
    if not records:
        return {}
    return dict(records.get("metrics") or next(iter(records.values())))


def _count(metrics: Mapping[str, Any], kind: str) -> int:
    """``num-examples`` of a reply: what FedAvg weights the answer by (Flower's key)."""
    return checked_count(metrics.get("num-examples"), kind)


def checked_count(raw: Any, kind: str) -> int:
    """An app's example count if it is a whole number >= 0, else :class:`FlowerAppError`
    (``inf``, ``nan`` or ``-5`` would weigh the site's answer by nonsense)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        ok = False
    else:
        ok = math.isfinite(raw) and raw >= 0 and float(raw).is_integer()
    if not ok:
        raise FlowerAppError(
            f"the Flower app's {kind} reply has no whole 'num-examples' >= 0 (got {raw!r}): "
            "fedops weighs each site's answer by it, as Flower's FedAvg does"
        )
    return int(raw)


class LegacyCalls:
    """A ``client_fn`` ClientApp (``NumPyClient``), driven by Flower's legacy records."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def initial(self, context: Any) -> Params:
        from flwr.common import GetParametersIns, parameters_to_ndarrays
        from flwr.compat.common.recorddict_compat import (
            getparametersins_to_recorddict,
            recorddict_to_getparametersres,
        )

        content = getparametersins_to_recorddict(GetParametersIns(config={}))
        got = recorddict_to_getparametersres(
            ask(self.app, "get_parameters", context, content, {}), keep_input=False
        )
        return named(parameters_to_ndarrays(got.parameters))

    def train(
        self, context: Any, params: Params, config: Mapping[str, Any]
    ) -> tuple[Params, int, dict[str, float]]:
        from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.compat.common.recorddict_compat import fitins_to_recorddict, recorddict_to_fitres

        ins = FitIns(ndarrays_to_parameters(list(params.values())), dict(config))
        content = fitins_to_recorddict(ins, keep_input=False)
        res = recorddict_to_fitres(
            ask(self.app, "train", context, content, config),
            keep_input=False,
        )
        new = from_arrays(params, parameters_to_ndarrays(res.parameters), "fit")
        return new, checked_count(res.num_examples, "fit"), metrics_of(res.metrics)

    def evaluate(
        self, context: Any, params: Params, config: Mapping[str, Any]
    ) -> tuple[int, dict[str, float]]:
        from flwr.common import EvaluateIns, ndarrays_to_parameters
        from flwr.compat.common.recorddict_compat import (
            evaluateins_to_recorddict,
            recorddict_to_evaluateres,
        )

        ins = EvaluateIns(ndarrays_to_parameters(list(params.values())), dict(config))
        content = evaluateins_to_recorddict(ins, keep_input=False)
        res = recorddict_to_evaluateres(ask(self.app, "evaluate", context, content, config))
        n = checked_count(res.num_examples, "evaluate")
        return n, {**metrics_of(res.metrics), "loss": float(res.loss)}
