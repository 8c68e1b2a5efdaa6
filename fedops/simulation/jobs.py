"""What the parent sends the out-of-process backends' workers, and how parameters travel.

Parameters travel as the wire codec's raw bytes plus a JSON spec list (no pickle of
arrays' objects); a plain job is a tuple (:data:`Job`), a secure-aggregation stage a
:class:`~fedops.simulation.secure_worker.StageJob`.
"""

from __future__ import annotations

import json
from typing import Any

from fedops.core.monitoring.profile import MonitorSpec
from fedops.core.params import Params, TensorSpec, specs_of
from fedops.wire import codec

Blob = tuple[str, bytes]
#: phase, client, round, params, config, the run's training settings (fits; or None), the
#: monitoring request (evaluations; or None)
Job = tuple[str, int, int, Blob, dict[str, float], dict[str, Any] | None, MonitorSpec | None]


def encode(params: Params) -> Blob:
    specs = [[s.name, s.dtype, list(s.shape)] for s in specs_of(params)]
    return json.dumps(specs), b"".join(codec.iter_chunks(params))


def decode(blob: Blob) -> Params:
    specs = [TensorSpec(name=n, dtype=d, shape=tuple(s)) for n, d, s in json.loads(blob[0])]
    return {k: v.copy() for k, v in codec.decode(specs, blob[1]).items()}
