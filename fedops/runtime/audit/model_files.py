"""Do a run directory's model files hold the models its signed audit log committed?

``fedops audit export`` verifies the logs and cross-checks their digests, but the files
an operator hands on, ``model.safetensors`` and the round checkpoints, are in no log: a
swapped file would pass every check of the logs. Here each file's model digest is
recomputed and compared with what the coordinator's log recorded:

* ``checkpoints/round-N.safetensors``: round N's ``round_committed`` ``model_digest``;
* ``model.safetensors``: the final model, the one the newest ``run_finished`` names (a run
  that stopped without one: the newest committed round's). A file holding an earlier
  round's model fails too, named as that round's: whoever deploys it gets a stale model.

A digest is recomputed in the algorithm it names (:func:`fedops.core.params.digest_matches`),
so a run resumed across ``fedops.v1.4`` (bare SHA-256 before, BLAKE3 after) checks. A
checkpoint of a round the log never committed is listed, not failed: a crash between a
checkpoint and its log entry leaves one, and no log vouches for it. A file holding tensors
beside its model and strategy state fails: the digest would say nothing of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedops.core.model_hash import UnknownDigest, hash_named, shortened
from fedops.core.params import Params, digest, digest_matches
from fedops.runtime.checkpoint_file import STATE_PREFIX, decode_checkpoint, safetensors_header
from fedops.wire.codec import shown

MODEL_FILE = "model.safetensors"
CHECKPOINT_NAME = re.compile(r"round-(\d{1,9})\.safetensors")


class ModelFileError(Exception):
    """A file that is not a model fedops can vouch for; the message says which and why."""


def read_model(path: Path) -> Params:
    """The model a run's model file or checkpoint holds (strategy state aside).

    Raises:
        ModelFileError: unreadable, not a safetensors model, or holding other tensors.
    """
    try:
        data = Path(path).read_bytes()
        checkpoint = decode_checkpoint(data)
        names = {n for n in safetensors_header(data) if n != "__metadata__"}
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror}") from exc
    except Exception as exc:  # struct, JSON, safetensors' own errors: not a model file
        raise ModelFileError(
            f"{path} is not a model file fedops reads ({type(exc).__name__}: {exc})"
        ) from exc
    state = {STATE_PREFIX + name for name in checkpoint.strategy_state}
    extra = sorted(names - set(checkpoint.params) - state)
    if extra:
        raise ModelFileError(
            f"{path} holds tensors outside its model and strategy state: {shown(', '.join(extra))}"
        )
    return checkpoint.params


@dataclass(slots=True)
class ModelFileCheck:
    """One row per file checked, and the failures as compliance mismatches."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    def add(self, file: str, status: str, message: str, **row: Any) -> None:
        self.rows.append({"file": file, "status": status, "message": message, **row})
        if status != "ok" and status != "unlogged":
            self.mismatches.append({"kind": "model_file", "file": file, "message": message})


def check_model_files(run_dir: Path, entries: Sequence[Mapping[str, Any]]) -> ModelFileCheck:
    """Each model file of ``run_dir`` against the coordinator's log ``entries`` (its verified
    prefix, as ``{"event", "payload"}`` dicts)."""
    committed, final = _recorded(entries)
    check = ModelFileCheck()
    folder = Path(run_dir) / "checkpoints"
    paths = sorted(folder.glob("round-*.safetensors")) if folder.is_dir() else []
    for path in paths:
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match is None:
            continue  # not a name the run store writes
        server_round = int(match.group(1))
        name = f"checkpoints/{path.name}"
        if server_round not in committed:
            message = f"{name}: no round_committed entry for round {server_round}"
            check.add(name, "unlogged", message)
            continue
        _check_one(check, path, name, committed[server_round], server_round, committed)
    model = Path(run_dir) / MODEL_FILE
    if model.exists():
        if final is None and committed:
            final = committed[max(committed)]
        if final is None:
            check.add(MODEL_FILE, "unlogged", f"{MODEL_FILE}: the log commits no round")
        else:
            _check_one(check, model, MODEL_FILE, final, None, committed)
    return check


def _recorded(entries: Sequence[Mapping[str, Any]]) -> tuple[dict[int, str], str | None]:
    """Each committed round's model digest (the newest entry of a round redone after a
    resume), and the digest the newest ``run_finished`` names."""
    committed: dict[int, str] = {}
    final: str | None = None
    for entry in entries:
        payload = entry.get("payload")
        if not isinstance(payload, Mapping):
            continue
        recorded = payload.get("model_digest")
        if not isinstance(recorded, str) or not recorded:
            continue
        server_round = payload.get("round")
        if entry.get("event") == "round_committed" and type(server_round) is int:
            committed[server_round] = recorded
        elif entry.get("event") == "run_finished":
            final = recorded
    return committed, final


def _check_one(
    check: ModelFileCheck,
    path: Path,
    name: str,
    expected: str,
    server_round: int | None,
    committed: Mapping[int, str],
) -> None:
    """``path`` against ``expected``; a file that is not the expected model is named as the
    committed round whose model it is, if any."""
    row = {"round": server_round, "expected": expected}
    try:
        params = read_model(path)
        same = digest_matches(params, expected)
    except ModelFileError as exc:  # its message names the file
        check.add(name, "unreadable", str(exc), **row)
        return
    except UnknownDigest as exc:
        check.add(name, "unreadable", f"{name}: the log's digest: {exc}", **row)
        return
    got = digest(params)
    if same:
        check.add(name, "ok", f"{name}: the model {shortened(expected)} names", digest=got, **row)
        return
    other = _round_holding(params, committed)
    held = f"round {other}'s model" if other is not None else "a model no round committed"
    want = f"round {server_round}'s" if server_round is not None else "the final"
    message = f"{name} holds {held} ({shortened(got)}), not {want} ({shortened(expected)})"
    check.add(name, "mismatch", message, digest=got, holds_round=other, **row)


def _round_holding(params: Params, committed: Mapping[int, str]) -> int | None:
    """The first committed round whose model ``params`` are: hashed once per algorithm the
    log's digests name, whatever the number of rounds."""
    mine: dict[str, str] = {}  # algorithm -> params' digest in it
    for server_round, recorded in sorted(committed.items()):
        try:
            algorithm = hash_named(recorded)
        except UnknownDigest:
            continue
        if algorithm not in mine:
            mine[algorithm] = digest(params, algorithm)
        if mine[algorithm] == recorded:
            return server_round
    return None
